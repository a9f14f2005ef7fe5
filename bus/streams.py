"""Reading streams as a client, not as a consumer of work: the last few messages on a
subject, where a stream ends, and live feeds from a position.

The gateway (dashboard lists, server-sent events) and `omoi submit --follow` read here.
Every feed and tail is an ordered consumer: ephemeral, in memory, flow-controlled and
recreated by nats-py on a gap, so readers leave nothing behind on the server and need
no acks. Errors come out as `bus.BusError`s: `NotProvisioned` for a missing stream,
`Unavailable` when NATS does not answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus import constants as c
from bus.errors import as_bus_errors, bus_error
from bus.topology import is_provisioned

if TYPE_CHECKING:
    from bus.bus import Bus

log = logging.getLogger(__name__)

# How long a tail waits for the next message it was told is there.
_TAIL_WAIT_S = 5.0


@dataclass(frozen=True)
class StreamEntry:
    """One stored message, as a reader sees it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    at: datetime | None


class From(StrEnum):
    """Where a feed starts. The values are JetStream's deliver policies."""

    NEW = "new"  # with the first message stored after the feed opens
    FIRST = "all"  # with the first message the stream still holds
    SEQ = "by_start_sequence"  # with stream sequence `Start.seq`


@dataclass(frozen=True)
class Start:
    """Where a `Feed` begins; `seq` (1 or more) only with `From.SEQ`."""

    at: From = From.NEW
    seq: int | None = None

    def __post_init__(self) -> None:
        if (self.at is From.SEQ) != (self.seq is not None and self.seq >= 1):
            raise ValueError(f"a feed starts at a sequence >= 1 only From.SEQ: {self}")

    @classmethod
    def after(cls, seq: int) -> Start:
        """Resume after stream sequence `seq` (what a reconnecting reader last saw)."""
        return cls(From.SEQ, seq + 1)


def _entry(msg: Msg) -> StreamEntry:
    meta = msg.metadata
    return StreamEntry(
        seq=meta.sequence.stream,
        subject=msg.subject,
        data=bytes(msg.data),
        headers=dict(msg.headers or {}),
        at=meta.timestamp,
    )


async def _ordered(
    js: JetStreamContext, stream: str, subject: str, start: Start
) -> JetStreamContext.PushSubscription:
    # A fresh config each time: nats-py fills in the one it is given.
    config = ConsumerConfig(opt_start_seq=start.seq) if start.at is From.SEQ else None
    return await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy(start.at.value),
        config=config,
        # A feed whose server died is noticed after two missed heartbeats and resumed
        # from the last sequence seen (the default of 5 s took 10-20 s to resume).
        idle_heartbeat=1.0,
    )


async def tail(
    bus: Bus, stream: str, subject: str, *, limit: int, window: int
) -> list[StreamEntry]:
    """The last `limit` messages on `subject` among the stream's last `window`, newest first.

    Looking only at a window keeps this cheap on a long stream; the server does the
    filtering, so only matching messages cross the wire.
    """
    with as_bus_errors(f"reading {stream}"):
        return await bus.patience.run(
            lambda: _tail(bus.js, stream, subject, limit, window), f"reading {stream}"
        )


async def _tail(
    js: JetStreamContext, stream: str, subject: str, limit: int, window: int
) -> list[StreamEntry]:
    state = (await js.stream_info(stream)).state
    if state.messages == 0:
        return []
    start = max(state.first_seq, state.last_seq - window + 1, 1)
    sub = await _ordered(js, stream, subject, Start(From.SEQ, start))
    kept: deque[StreamEntry] = deque(maxlen=limit)
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
            return []
        for _ in range(window):
            msg = await sub.next_msg(timeout=_TAIL_WAIT_S)
            kept.append(_entry(msg))
            if msg.metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return list(reversed(kept))


async def last_seq(bus: Bus, stream: str) -> int:
    """The sequence of the last message `stream` stored (0 if none): a reader that
    renders state now and follows from here misses nothing in between."""
    with as_bus_errors(f"reading {stream}"):
        info = await bus.patience.run(lambda: bus.js.stream_info(stream), f"reading {stream}")
    return int(info.state.last_seq)


@dataclass(frozen=True)
class ConsumerBacklog:
    """A durable consumer's backlog: stored but not yet delivered (`pending`), delivered
    but not yet acked (`ack_pending`), and deliveries that were repeats (`redelivered`)."""

    stream: str
    consumer: str
    pending: int
    ack_pending: int
    redelivered: int
    # The stream sequence it last delivered, and the subjects it reads.
    delivered_seq: int = 0
    filters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Waiting:
    """A stored message a consumer has not delivered yet, and when it was stored."""

    subject: str
    seq: int
    at: datetime


async def oldest_waiting(bus: Bus, backlog: ConsumerBacklog) -> Waiting | None:
    """The oldest message `backlog`'s consumer has never delivered: the first after its
    last delivery on any subject it reads (one direct read per subject)."""
    if not backlog.pending:
        return None
    found: list[Waiting] = []
    with as_bus_errors(f"reading what waits for {backlog.consumer}"):
        for subject in backlog.filters or (">",):
            try:
                msg = await bus.js.get_msg(
                    backlog.stream, seq=backlog.delivered_seq + 1, subject=subject, next=True
                )
            except nats.js.errors.NotFoundError:
                continue
            if msg.subject and msg.seq and msg.time:
                found.append(Waiting(msg.subject, msg.seq, msg.time))
    return min(found, key=lambda w: w.seq) if found else None


async def consumer_backlogs(bus: Bus, names: Iterable[str]) -> list[ConsumerBacklog]:
    """Every durable consumer of the streams `names` that exist, and its backlog now.
    Ephemeral ones (feeds, watches) are readers' own and left out."""
    found: list[ConsumerBacklog] = []
    with as_bus_errors("reading consumers"):
        for stream in names:
            try:
                infos = await bus.patience.run(
                    partial(bus.js.consumers_info, stream), f"reading {stream}'s consumers"
                )
            except nats.js.errors.NotFoundError:
                continue
            found += [
                ConsumerBacklog(
                    stream,
                    info.name,
                    info.num_pending or 0,
                    info.num_ack_pending or 0,
                    info.num_redelivered or 0,
                    (info.delivered.stream_seq or 0) if info.delivered else 0,
                    tuple(info.config.filter_subjects or [info.config.filter_subject or ">"]),
                )
                for info in infos
                if info.config.durable_name
            ]
    return found


async def provisioned(bus: Bus) -> bool:
    """Whether the Omoi topology exists on the server (its task stream does)."""
    with as_bus_errors("looking for the topology"):
        return await bus.patience.run(lambda: is_provisioned(bus.js), "looking for the topology")


class Feed:
    """Every message on `subject` in `stream` from `start` on, live, in stream order.

    `open` (or `async with`) subscribes, so a failure shows before anything is read;
    `close` is idempotent. Iterating waits as long as it takes; `next` can time out.
    """

    def __init__(self, bus: Bus, subject: str, start: Start, stream: str = c.EVENTS_STREAM):
        self.bus = bus
        self.subject = subject
        self.start = start
        self.stream = stream
        self._sub: JetStreamContext.PushSubscription | None = None

    async def open(self) -> Feed:
        what = f"following {self.subject}"
        with as_bus_errors(what):
            self._sub = await self.bus.patience.run(
                lambda: _ordered(self.bus.js, self.stream, self.subject, self.start), what
            )
        log.debug("feed on %s from %s", self.subject, self.start)
        return self

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def next(self, timeout: float | None = None) -> StreamEntry | None:
        """The next message; None if none came within `timeout`. `Unavailable` once the
        connection is closing or gone: the feed is over."""
        sub = self._sub
        assert sub is not None, "open() the feed first"
        try:
            msg = await sub.next_msg(timeout=timeout)
        except nats.errors.TimeoutError:
            return None
        except nats.errors.Error as exc:
            raise bus_error(exc, f"feed on {self.subject}") from exc
        return _entry(msg)

    async def __aenter__(self) -> Feed:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[StreamEntry]:
        while True:
            found = await self.next()
            if found is not None:
                yield found

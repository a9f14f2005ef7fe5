"""The consumer runtime: the one place that fetches from durable consumers, keeps
messages alive, settles them and hands them back.

Agents hand it handlers. It owns what every agent used to write for itself:
- fetching: from one or several consumers, a delivery at a time or in batches, never
  waiting out a poll timer while any of its consumers has messages;
- keep-alive: a delivery being handled is kept from redelivery (`in_progress`);
- settling through `bus.settle`, the only place messages are acked, nak'd or termed;
- passing JetStream trouble (leader changes, no responders, timeouts, reconnects):
  retried with backoff and logged once per outage; no background task is left with
  an exception nobody retrieves;
- stopping: no new fetches, messages not started handed back, `grace_s` for those in
  hand, then handlers are interrupted (`Delivery.interrupted`) and, if they still run,
  cancelled; their messages are handed back either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol

from nats.aio.msg import Msg

from bus.delivery import Delivery
from bus.errors import is_transient
from bus.puller import Puller
from bus.retry import Outage, backoff
from bus.settle import DeadLetter, Handler, hand_back, keep_alive, settle

if TYPE_CHECKING:
    from bus.bus import Bus

log = logging.getLogger(__name__)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

# After the grace, interrupted handlers get this long to hand their work back.
INTERRUPT_GRACE_S = 5.0


@dataclass(frozen=True)
class Source:
    """A durable pull consumer on a stream. A consumer with several sources takes from
    those of a higher `rank` first (a worker's urgent lanes)."""

    stream: str
    durable: str
    rank: int = 0


class Consuming(Protocol):
    """What an agent runs as a consumer: a `Runtime`, or several (`PartitionedConsumer`)."""

    started: asyncio.Event  # bound to its consumers: fetching begins

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Runtime:
    """What every consumer shares: pullers, the outage log, in-flight deliveries, stop."""

    def __init__(
        self,
        bus: Bus,
        sources: Sequence[Source],
        *,
        name: str,
        poll_s: float,
        grace_s: float,
        keep_alive_s: float | None,
        logger: Logger | None = None,
    ) -> None:
        self.name = name
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.keep_alive_s = keep_alive_s
        self.log = logger or log
        self.outage = Outage(f"consuming {name}", self.log)
        self._bus = bus
        self._sources = list(sources)
        self._wake = asyncio.Event()  # a delivery arrived, a slot was freed, or stop
        self._interrupt = asyncio.Event()
        self._stopping = asyncio.Event()
        self.pullers: list[Puller] = []  # highest rank first
        self._ranks: list[list[Puller]] = []  # the pullers of each rank, highest first
        # What each running handler holds (a group holds several deliveries).
        self.in_flight: dict[asyncio.Task[None], list[Delivery]] = {}
        self._keep_alive_task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()  # its consumers are bound; fetching begins

    def stop(self) -> None:
        """Ask the consumer to stop; `run` returns once it has. Safe to call any time."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        ranked = sorted(self._sources, key=lambda s: -s.rank)  # stable: ties keep order
        self.pullers = [
            await Puller(self._bus.nc, s.stream, s.durable, self._wake, rank=s.rank).start()
            for s in ranked
        ]
        ranks = sorted({p.rank for p in self.pullers}, reverse=True)
        self._ranks = [[p for p in self.pullers if p.rank == r] for r in ranks]
        if self.keep_alive_s:
            self._keep_alive_task = spawn(self._keep_alive_loop(self.keep_alive_s), self.log)
        self.started.set()
        try:
            await self._loop()
        finally:
            await self._finish()

    async def _loop(self) -> None:
        raise NotImplementedError

    # Fetching, with passing trouble retried

    async def fetched[T](self, fetch: Callable[[], Awaitable[list[T]]]) -> list[T]:
        """`fetch()`, or nothing after a failure (logged once per outage, then backed off)."""
        try:
            got = await fetch()
        except Exception as exc:
            if not is_transient(exc) and not self.outage.ongoing:
                self.log.exception("fetching from %s failed", self.name)  # a bug: show it once
            failures = self.outage.failed(exc)
            await self.wait(backoff(failures, first=0.1, cap=2.0))
            return []
        self.outage.ok()
        return got

    async def wait(self, timeout: float) -> None:
        """Sleep up to `timeout`, waking early on stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout)

    # Handling

    def delivery(self, msg: Msg) -> Delivery:
        return Delivery(msg, self._interrupt)

    def start_handling(
        self, deliveries: list[Delivery], work: Awaitable[None]
    ) -> asyncio.Task[None]:
        now = asyncio.get_running_loop().time()
        for delivery in deliveries:
            delivery.started = now
        task = spawn(work, self.log)
        self.in_flight[task] = deliveries
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.pop(task, None)
        self._wake.set()

    async def hand_back_buffered(self) -> None:
        for puller in self.pullers:
            for msg in puller.take(puller.buffered):
                await hand_back(self.delivery(msg))

    async def _keep_alive_loop(self, every: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for deliveries in list(self.in_flight.values()):
                for delivery in deliveries:
                    if now - delivery.started >= every:
                        await keep_alive(delivery)

    async def _finish(self) -> None:
        await self.hand_back_buffered()
        if self.in_flight:
            await asyncio.wait(list(self.in_flight), timeout=self.grace_s)
        if self.in_flight:
            self.log.info("%d handler(s) busy after the grace; interrupting", len(self.in_flight))
            self._interrupt.set()
            await asyncio.wait(list(self.in_flight), timeout=INTERRUPT_GRACE_S)
        for task in list(self.in_flight):
            task.cancel()  # settle hands the message back
        if self.in_flight:
            await asyncio.wait(list(self.in_flight))
        if self._keep_alive_task is not None:
            self._keep_alive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keep_alive_task
        await self.hand_back_buffered()  # what open requests brought meanwhile
        for puller in self.pullers:
            await puller.stop()


class Consumer(Runtime):
    """Each delivery to `handler` through `settle`, up to `slots` at once, taken from any
    of `sources` (a worker serving several phases and capabilities has one per pair).

    With `group`, deliveries are taken in batches of up to `batch` instead: a batch is
    split by `group(delivery)`, groups are handled concurrently and each group's
    deliveries in order (`Delivery.more_in_group` tells a handler a later one follows).
    """

    def __init__(
        self,
        bus: Bus,
        sources: Sequence[Source],
        handler: Handler,
        *,
        dead_letter: DeadLetter,
        name: str,
        slots: int = 1,
        max_in_flight: int | None = None,
        batch: int = 1,
        group: Callable[[Delivery], str] | None = None,
        poll_s: float = 1.0,
        grace_s: float = 10.0,
        keep_alive_s: float | None = 10.0,
        logger: Logger | None = None,
    ) -> None:
        super().__init__(
            bus,
            sources,
            name=name,
            poll_s=poll_s,
            grace_s=grace_s,
            keep_alive_s=keep_alive_s,
            logger=logger,
        )
        if group is not None and len(sources) != 1:
            raise ValueError("grouped batches come from one consumer")
        self.handler = handler
        self.dead_letter = dead_letter
        self.slots = slots
        # Handlers that released their slot still count here until they finish.
        self.max_in_flight = max(max_in_flight or slots, slots)
        self.batch = batch
        self.group = group
        self._busy = 0  # slots in use: handlers that have not released theirs
        self._paused = False  # takes no new delivery (those running go on)
        self._turn = 0  # which consumer of a rank is asked first
        # When each free slot became free, oldest first (for `Delivery.idle_s`).
        self._free_since: list[float] = []

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Take no new delivery until `resume()`: what arrives goes back for others."""
        self._paused = True
        self._wake.set()

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    async def _loop(self) -> None:
        if self.group is not None:
            await self._grouped(self.group)
        else:
            await self._slotted()

    # One delivery per slot

    async def _slotted(self) -> None:
        self._free_since = [asyncio.get_running_loop().time()] * self.slots
        while not self.stopping:
            free = min(self.slots - self._busy, self.max_in_flight - len(self.in_flight))
            if free <= 0 or self._paused:
                # Whatever open requests bring while every slot is busy (or the consumer
                # is paused) goes back at once, for another worker to run.
                await self.hand_back_buffered()
                self._wake.clear()
                await self._wake.wait()
                continue
            msgs = await self.fetched(partial(self._fetch, free))
            for msg in msgs[:free]:
                if self._stopping.is_set() or self._paused:  # while fetching
                    await hand_back(self.delivery(msg))
                    continue
                self._start_one(self.delivery(msg))
            for msg in msgs[free:]:
                await hand_back(self.delivery(msg))

    def _start_one(self, delivery: Delivery) -> None:
        self._busy += 1
        released = False
        loop = asyncio.get_running_loop()

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._busy -= 1
                self._free_since.append(loop.time())
                self._wake.set()

        delivery._release = release

        async def work() -> None:
            try:
                await settle(delivery, self.handler, self.dead_letter)
            finally:
                release()

        self.start_handling([delivery], work())
        if self._free_since:
            delivery.idle_s = delivery.started - self._free_since.pop(0)

    async def _fetch(self, free: int) -> list[Msg]:
        """Up to `free` messages: what open requests brought; else what is waiting now;
        else the first to arrive on any consumer within the poll. The caller hands back
        whatever is beyond `free` (several consumers may answer at once)."""
        got = self._buffered(free) or await self._waiting(free)
        if got:
            return got
        self._wake.clear()
        for puller in self.pullers:
            if not puller.open:
                await puller.request(free, no_wait=False, lifetime_s=self.poll_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_s)
        got = self._buffered(free)
        if not got:
            for puller in self.pullers:
                puller.check()
        return got

    def _in_turn(self) -> list[Puller]:
        """The pullers by rank, highest first, and in turns within a rank (so one backlog
        does not starve the others of its rank)."""
        turn = self._turn
        self._turn += 1
        order: list[Puller] = []
        for same in self._ranks:
            k = turn % len(same)
            order += same[k:] + same[:k]
        return order

    async def _waiting(self, free: int) -> list[Msg]:
        """What is waiting now: first from consumers that said they had more, then from
        all the others at once. Before a lower rank's backlog, higher ranks are asked."""
        order = self._in_turn()
        idle = [p for p in order if not p.open]
        got: list[Msg] = []
        if len(self._ranks) > 1:
            got = await self._above_backlog(idle, free)
            if got:
                return got
            idle = [p for p in idle if not p.open]
        for puller in (p for p in idle if p.pending):
            got += await puller.drain(free - len(got), self.poll_s)
            if len(got) >= free:
                return got
        if got:
            return got
        answers = await asyncio.gather(
            *(p.drain(free, self.poll_s) for p in idle if not p.pending), return_exceptions=True
        )
        failures = [a for a in answers if isinstance(a, BaseException)]
        got = [m for a in answers if not isinstance(a, BaseException) for m in a]
        if not got and failures:
            raise failures[0]
        return got

    async def _above_backlog(self, idle: list[Puller], free: int) -> list[Msg]:
        """While a rank has a backlog, what waits in the ranks above it, which said they
        had nothing: asked now (after a long task that may have changed), then listened
        to with a long poll, so that until it expires each further fetch costs nothing."""
        backlog = next((p.rank for p in idle if p.pending), None)
        got: list[Msg] = []
        for puller in idle:
            if backlog is None or puller.rank <= backlog or len(got) >= free:
                break
            if puller.pending or puller.buffered:
                continue
            got += await puller.drain(free - len(got), self.poll_s)
            if not puller.buffered and not puller.open:
                await puller.request(free, no_wait=False, lifetime_s=self.poll_s)
        return got

    def _buffered(self, free: int) -> list[Msg]:
        got: list[Msg] = []
        for puller in self.pullers:
            if len(got) >= free:
                break
            got += puller.take(free - len(got))
        return got

    # Batches split into groups

    async def _grouped(self, key: Callable[[Delivery], str]) -> None:
        puller = self.pullers[0]
        while not self.stopping:
            msgs = await self.fetched(partial(puller.take_or_wait, self.batch, self.poll_s))
            if not msgs:
                continue
            groups: dict[str, list[Delivery]] = {}
            for msg in msgs:
                delivery = self.delivery(msg)
                groups.setdefault(key(delivery), []).append(delivery)
            tasks = [self.start_handling(g, self._handle_group(g)) for g in groups.values()]
            await asyncio.wait(tasks)

    async def _handle_group(self, group: list[Delivery]) -> None:
        for i, delivery in enumerate(group):
            delivery.more_in_group = i < len(group) - 1
            try:
                await settle(delivery, self.handler, self.dead_letter)
            except asyncio.CancelledError:
                for rest in group[i + 1 :]:
                    await asyncio.shield(hand_back(rest))
                raise


def spawn(work: Awaitable[None], logger: Logger) -> asyncio.Task[None]:
    """A background task whose failure is logged, never left unretrieved."""
    task = asyncio.ensure_future(work)

    def retrieve(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and (exc := t.exception()) is not None:
            logger.error("background task failed", exc_info=exc)

    task.add_done_callback(retrieve)
    return task

"""One delivery of a JetStream message, as a handler sees it.

Handlers get a `Delivery`, never nats-py's `Msg`: they read what arrived and how often it
was delivered; acking, nak'ing and terminating belong to `bus.settle`, and keeping the
message alive to the consumer runtime (`bus.consumer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.msg import Msg

_NO_HEADERS: dict[str, str] = {}


class Delivery:
    __slots__ = (
        "_interrupted",
        "_release",
        "idle_s",
        "more_in_group",
        "msg",
        "number",
        "seq",
        "started",
        "subject",
    )

    def __init__(self, msg: Msg, interrupted: asyncio.Event | None = None) -> None:
        self.msg = msg
        self.subject: str = msg.subject
        self.seq, self.number = ack_fields(msg.reply)
        # Set by the runtime when another delivery with the same group key follows this one
        # in the same batch (the planner reconciles a ticket once per batch).
        self.more_in_group = False
        self.started = 0.0
        # How long the execution slot this delivery took had stood free (set by the
        # runtime): with work waiting, the time fetching took.
        self.idle_s = 0.0
        self._interrupted = interrupted
        self._release: Callable[[], None] | None = None

    @property
    def data(self) -> bytes:
        return bytes(self.msg.data)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers) if self.msg.headers else _NO_HEADERS

    @property
    def timestamp(self) -> datetime | None:
        """When the stream stored the message."""
        tokens = self.msg.reply.split(".") if self.msg.reply else []
        if len(tokens) < 9:
            return None
        nanos = int(tokens[7] if len(tokens) == 9 else tokens[9])
        return datetime.fromtimestamp(nanos / 1e9, tz=UTC)

    @property
    def interrupted(self) -> bool:
        """The consumer is shutting down and its grace is over: wind down now, the message
        will be handed back."""
        return self._interrupted is not None and self._interrupted.is_set()

    async def wait_interrupted(self) -> None:
        if self._interrupted is None:
            await asyncio.Event().wait()
        else:
            await self._interrupted.wait()

    def release(self) -> None:
        """The handler no longer needs its execution slot (what is left is bookkeeping:
        recording an outcome). The runtime may start the next delivery meanwhile."""
        if self._release is not None:
            release, self._release = self._release, None
            release()


def pending_after(reply: str | None) -> int:
    """How many messages the consumer still had for us after this delivery (from its
    reply subject): a hint where the next one is."""
    tokens = reply.split(".") if reply else []
    if len(tokens) == 9:
        return int(tokens[8])
    if len(tokens) >= 12:
        return int(tokens[10])
    return 0


def ack_fields(reply: str | None) -> tuple[int, int]:
    """(stream sequence, delivery count) from a JetStream reply subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...` (9 tokens), or with the
    domain and account hash in front (12 tokens); parsing this beats `msg.metadata`.
    """
    if not reply:
        return 0, 1
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[4])
    if len(tokens) >= 12:
        return int(tokens[7]), int(tokens[6])
    return 0, 1

"""Live events as server-sent events, in stream order, resumable by sequence number.

Each client gets its own JetStream ordered push consumer (ephemeral, flow-controlled,
self-healing on gaps), so the gateway stays stateless: a reconnect to any instance with
`Last-Event-ID` continues exactly where the stream left off.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Annotated, Any

import nats.errors
from litestar import Controller, get
from litestar.background_tasks import BackgroundTask
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus import constants as c
from gateway.api_tickets import TicketId, problems
from gateway.context import Ctx, GatewayContext

log = logging.getLogger(__name__)

# The one event that is not an Omoi event: sent once the subscription is live, so a client
# knows that anything published from now on will reach it.
READY_EVENT = "ready"
SEQ_PATTERN = r"^[0-9]{1,18}$"
MAX_SEQ = 10**18

LastEventId = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        pattern=SEQ_PATTERN,
        description="Resume after this stream sequence (browsers send it on reconnect).",
    ),
]
Since = Annotated[
    int | None,
    QueryParameter(ge=0, le=MAX_SEQ, description="Resume after this stream sequence."),
]
Replay = Annotated[bool, QueryParameter(description="Start from the first retained event.")]


@dataclass(frozen=True)
class Start:
    policy: DeliverPolicy
    seq: int | None = None

    @classmethod
    def choose(cls, last_event_id: str | None, since: int | None, replay: bool) -> Start:
        # A reconnecting browser repeats the original URL (with its `since`) and adds the
        # header, which is the more recent position, so the header wins.
        after = int(last_event_id) if last_event_id is not None else since
        if after is not None:
            return cls(DeliverPolicy.BY_START_SEQUENCE, after + 1)
        return cls(DeliverPolicy.ALL if replay else DeliverPolicy.NEW)


class EventFeed:
    """One client's subscription. `open` before responding, `close` is idempotent."""

    def __init__(
        self, js: JetStreamContext, subject: str, start: Start, *, keepalive_s: float, retry_ms: int
    ) -> None:
        self.js = js
        self.subject = subject
        self.start = start
        self.keepalive_s = keepalive_s
        self.retry_ms = retry_ms
        self._sub: JetStreamContext.PushSubscription | None = None

    async def open(self) -> None:
        config = ConsumerConfig(opt_start_seq=self.start.seq) if self.start.seq else None
        self._sub = await self.js.subscribe(
            self.subject,
            stream=c.EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=self.start.policy,
            config=config,
        )
        log.debug("event feed on %s from %s", self.subject, self.start)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def messages(self) -> AsyncGenerator[ServerSentEventMessage, None]:
        sub = self._sub
        assert sub is not None, "open() the feed first"
        ready = {"subject": self.subject, "from": self.start.policy.value, "seq": self.start.seq}
        try:
            yield ServerSentEventMessage(
                event=READY_EVENT, data=json.dumps(ready), retry=self.retry_ms
            )
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.keepalive_s)
                except nats.errors.TimeoutError:
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                    continue
                except nats.errors.Error as exc:
                    # Closing down (or the connection is gone): end the stream cleanly; the
                    # client reconnects, to this gateway or another, with Last-Event-ID.
                    log.info("event feed on %s ends: %r", self.subject, exc)
                    return
                event = _to_sse(msg)
                if event is not None:
                    yield event
        finally:
            await self.close()


def _to_sse(msg: Msg) -> ServerSentEventMessage | None:
    seq = msg.metadata.sequence.stream
    try:
        text = msg.data.decode()
        body: Any = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        log.warning("skipping event %d on %s: not JSON", seq, msg.subject)
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    if not isinstance(kind, str):
        # Subjects are omoi.events.<ticket>.<type>, and types contain a dot themselves.
        kind = msg.subject.split(".", 3)[-1]
    return ServerSentEventMessage(id=seq, event=kind, data=text)


class EventStreamController(Controller):
    path = "/"
    tags = ("events",)

    async def _stream(self, ctx: GatewayContext, subject: str, start: Start) -> ServerSentEvent:
        feed = EventFeed(
            ctx.bus.js,
            subject,
            start,
            keepalive_s=ctx.options.keepalive_s,
            retry_ms=ctx.options.sse_retry_ms,
        )
        # Subscribing before answering makes a NATS failure a 503 rather than a broken stream.
        await feed.open()
        # The generator closes the feed when it is cancelled; the background task covers a
        # client that went away before the first byte.
        return ServerSentEvent(feed.messages(), background=BackgroundTask(feed.close))

    @get(
        "/events/stream",
        summary="Every event, live (server-sent events)",
        description="`id` is the stream sequence and `event` the event type. New events only, "
        "unless `replay`, `since` or `Last-Event-ID` say otherwise. The first message is a "
        "`ready` event once the subscription is live.",
        media_type="text/event-stream",
        responses=problems(),
    )
    async def all_events(
        self,
        ctx: Ctx,
        last_event_id: LastEventId = None,
        since: Since = None,
        replay: Replay = False,
    ) -> ServerSentEvent:
        return await self._stream(
            ctx, c.EVENTS_SUBJECTS, Start.choose(last_event_id, since, replay)
        )

    @get(
        "/tickets/{ticket_id:str}/events/stream",
        summary="One ticket's events, live (server-sent events)",
        description="Like `/events/stream`, for one ticket; it need not exist yet.",
        media_type="text/event-stream",
        responses=problems(),
    )
    async def ticket_events(
        self,
        ctx: Ctx,
        ticket_id: TicketId,
        last_event_id: LastEventId = None,
        since: Since = None,
        replay: Replay = False,
    ) -> ServerSentEvent:
        return await self._stream(
            ctx, c.ticket_events_filter(ticket_id), Start.choose(last_event_id, since, replay)
        )

"""Live events as server-sent events, in stream order, resumable by sequence number.

Each client gets its own JetStream ordered push consumer (ephemeral, flow-controlled,
self-healing on gaps), so the gateway stays stateless: a reconnect to any instance with
`Last-Event-ID` continues exactly where the stream left off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from litestar import Controller, get
from litestar.background_tasks import BackgroundTask
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bus import Bus, BusError
from bus import constants as c
from bus.streams import Feed, From, Start, StreamEntry
from gateway.api_tickets import BEARER, TicketId, problems
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


def choose_start(last_event_id: str | None, since: int | None, replay: bool) -> Start:
    # A reconnecting browser repeats the original URL (with its `since`) and adds the
    # header, which is the more recent position, so the header wins.
    after = int(last_event_id) if last_event_id is not None else since
    if after is not None:
        return Start.after(after)
    return Start(From.FIRST if replay else From.NEW)


class EventFeed:
    """One client's feed as server-sent events. `open` before responding; `close` is
    idempotent."""

    def __init__(
        self, bus: Bus, subject: str, start: Start, *, keepalive_s: float, retry_ms: int
    ) -> None:
        self.feed = Feed(bus, subject, start, stream=c.EVENTS_STREAM)
        self.keepalive_s = keepalive_s
        self.retry_ms = retry_ms

    async def open(self) -> None:
        await self.feed.open()

    async def close(self) -> None:
        await self.feed.close()

    async def messages(self) -> AsyncGenerator[ServerSentEventMessage, None]:
        feed = self.feed
        ready = {"subject": feed.subject, "from": feed.start.at.value, "seq": feed.start.seq}
        try:
            yield ServerSentEventMessage(
                event=READY_EVENT, data=json.dumps(ready), retry=self.retry_ms
            )
            while True:
                try:
                    entry = await feed.next(timeout=self.keepalive_s)
                except BusError as exc:
                    # Closing down (or the connection is gone): end the stream cleanly; the
                    # client reconnects, to this gateway or another, with Last-Event-ID.
                    log.info("event feed on %s ends: %r", feed.subject, exc)
                    return
                if entry is None:
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                    continue
                event = _to_sse(entry)
                if event is not None:
                    yield event
        finally:
            await self.close()


def _to_sse(entry: StreamEntry) -> ServerSentEventMessage | None:
    seq = entry.seq
    try:
        text = entry.data.decode()
        body: Any = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        log.warning("skipping event %d on %s: not JSON", seq, entry.subject)
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    if not isinstance(kind, str):
        # Subjects are omoi.events.<ticket>.<type>, and types contain a dot themselves.
        kind = entry.subject.split(".", 3)[-1]
    return ServerSentEventMessage(id=seq, event=kind, data=text)


class EventStreamController(Controller):
    path = "/"
    tags = ("events",)
    # The dashboard's EventSource sends its session cookie instead (it cannot set headers).
    security = (*BEARER, {"session": []})

    async def _stream(self, ctx: GatewayContext, subject: str, start: Start) -> ServerSentEvent:
        feed = EventFeed(
            ctx.bus,
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
            ctx, c.EVENTS_SUBJECTS, choose_start(last_event_id, since, replay)
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
            ctx, c.ticket_events_filter(ticket_id), choose_start(last_event_id, since, replay)
        )

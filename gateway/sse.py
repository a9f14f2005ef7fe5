"""Live events as server-sent events, in stream order, resumable by sequence number.

Each client gets its own JetStream ordered push consumer (ephemeral, flow-controlled,
self-healing on gaps), so the gateway stays stateless: a reconnect to any instance with
`Last-Event-ID` continues exactly where the stream left off. A stream ends within about a
second of its token being revoked (the reconnect then gets a 401).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.background_tasks import BackgroundTask
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bus import Bus, BusError
from bus import constants as c
from bus.streams import Feed, From, Start, StreamEntry
from gateway.api_tickets import BEARER, TicketId, problems
from gateway.audit import principal_of
from gateway.auth import Principal
from gateway.context import Ctx, GatewayContext

log = logging.getLogger(__name__)

# The one event that is not an Omoi event: sent once the subscription is live, so a client
# knows that anything published from now on will reach it.
READY_EVENT = "ready"
SEQ_PATTERN = r"^[0-9]{1,18}$"
ALLOWED_CHECK_S = 1.0
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
        self,
        bus: Bus,
        subject: str,
        start: Start,
        *,
        keepalive_s: float,
        retry_ms: int,
        allowed: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.feed = Feed(bus, subject, start, stream=c.EVENTS_STREAM)
        self.keepalive_s = keepalive_s
        self.retry_ms = retry_ms
        # Asked at least once a second: a stream ends soon after its token is revoked.
        self.allowed = allowed

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
            quiet_s = 0.0
            while True:
                wait = min(self.keepalive_s, ALLOWED_CHECK_S)
                try:
                    entry = await feed.next(timeout=wait)
                except BusError as exc:
                    # Closing down (or the connection is gone): end the stream cleanly; the
                    # client reconnects, to this gateway or another, with Last-Event-ID.
                    log.info("event feed on %s ends: %r", feed.subject, exc)
                    return
                if self.allowed is not None and not await self.allowed():
                    log.info("event feed on %s ends: its token was revoked", feed.subject)
                    return
                if entry is None:
                    quiet_s += wait
                    if quiet_s >= self.keepalive_s:
                        quiet_s = 0.0
                        yield ServerSentEventMessage(comment="keep-alive", data=None)
                    continue
                quiet_s = 0.0
                event = _to_sse(entry)
                if event is not None:
                    yield event
        finally:
            await self.close()


def still_allowed(
    ctx: GatewayContext, who: Principal | None
) -> Callable[[], Awaitable[bool]] | None:
    """Whether `who`'s token still exists and is not expired: from memory, no round trip."""
    if who is None:
        return None

    async def allowed() -> bool:
        tokens = ctx.tokens
        record = await tokens.get_cached(who.token_id) if tokens is not None else None
        return record is not None and not record.expired()

    return allowed


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

    async def _stream(
        self, ctx: GatewayContext, request: Request[Any, Any, Any], subject: str, start: Start
    ) -> ServerSentEvent:
        feed = EventFeed(
            ctx.bus,
            subject,
            start,
            keepalive_s=ctx.options.keepalive_s,
            retry_ms=ctx.options.sse_retry_ms,
            allowed=still_allowed(ctx, principal_of(request)),
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
        request: Request[Any, Any, Any],
        last_event_id: LastEventId = None,
        since: Since = None,
        replay: Replay = False,
    ) -> ServerSentEvent:
        return await self._stream(
            ctx, request, c.EVENTS_SUBJECTS, choose_start(last_event_id, since, replay)
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
        request: Request[Any, Any, Any],
        ticket_id: TicketId,
        last_event_id: LastEventId = None,
        since: Since = None,
        replay: Replay = False,
    ) -> ServerSentEvent:
        start = choose_start(last_event_id, since, replay)
        return await self._stream(ctx, request, c.ticket_events_filter(ticket_id), start)

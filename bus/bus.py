"""The agents' handle on NATS: state buckets, publishing and subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from bus import constants as c
from bus.mirror import MirroredBucket
from bus.state import Bucket
from bus.topology import TopologyConfig, ensure_consumer, provision, task_consumer_config
from schemas import Event, Heartbeat, TaskDispatch, TaskState, TicketState

log = logging.getLogger(__name__)

# An async publish whose ack has not come back by then is treated as failed.
PUBLISH_ACK_TIMEOUT_S = 10.0


class Bus:
    """A connected NATS client with Omoi's buckets bound.

    Create with `await Bus.connect(url, name)`; close with `await bus.close()`, which
    drains so in-flight publishes and acks reach the server.
    """

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self.tickets: Bucket[TicketState]
        self.tasks: Bucket[TaskState]
        self.heartbeats: Bucket[Heartbeat]
        self._mirrors: list[MirroredBucket[Any]] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        topology: TopologyConfig | None = None,
        connect_timeout: float = 5.0,
        max_reconnect_attempts: int = -1,
    ) -> Bus:
        """Connect, optionally provision the topology, and bind the buckets.

        Agents keep retrying forever (a cluster may still be starting); one-shot
        clients pass a small `max_reconnect_attempts` to fail fast.
        """
        nc = await nats.connect(
            servers=[u.strip() for u in url.split(",")],
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=max_reconnect_attempts,
            reconnect_time_wait=0.5,
            drain_timeout=5,
            error_cb=_log_error,
        )
        bus = cls(nc, nc.jetstream(timeout=10.0))
        if topology is not None:
            await provision(bus.js, topology)
        await bus._bind()
        return bus

    async def _bind(self) -> None:
        self.tickets = Bucket(await self.js.key_value(c.TICKETS_BUCKET), TicketState)
        self.tasks = Bucket(await self.js.key_value(c.TASKS_BUCKET), TaskState)
        self.heartbeats = Bucket(await self.js.key_value(c.HEARTBEATS_BUCKET), Heartbeat)

    async def mirror_state(self) -> None:
        """Read tickets and tasks from in-memory mirrors that KV watches keep current.

        For an agent that reads much more state than it writes (the planner). Finished
        tickets' keys leave the mirror (`forget`) but stay readable from the server.
        """
        tickets = MirroredBucket(self.tickets.kv, TicketState, stream=c.kv_stream(c.TICKETS_BUCKET))
        tasks = MirroredBucket(self.tasks.kv, TaskState, stream=c.kv_stream(c.TASKS_BUCKET))
        await tickets.start(self.js)
        await tasks.start(self.js)
        for ticket in await tickets.values():
            if ticket.status.terminal:
                tickets.forget(ticket.id)
                tasks.forget(ticket.id)
        self._mirrors = [tickets, tasks]
        self.tickets, self.tasks = tickets, tasks

    async def close(self) -> None:
        for mirror in self._mirrors:
            await mirror.stop()
        self._mirrors = []
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except Exception:
            # Closing is best effort once draining failed (e.g. the server is gone).
            log.debug("drain failed, closing", exc_info=True)
            with contextlib.suppress(Exception):
                await self.nc.close()

    # Publishing

    async def publish_event(self, event: Event) -> None:
        """Publish `event` and wait until the stream has stored it."""
        await self.confirm(await self.publish_event_async(event))

    async def publish_events(self, events: list[Event]) -> None:
        """Publish `events` in order, all sent before any ack is awaited."""
        acks = [await self.publish_event_async(event) for event in events]
        for ack in acks:
            await self.confirm(ack)

    async def publish_event_async(self, event: Event) -> asyncio.Future[Any]:
        """Send `event` without waiting for the stream's ack; `confirm` the result.

        The number of unacknowledged publishes is bounded by the JetStream context
        (publishing waits when it is reached). Confirm before acking the message that
        caused the event, so the event is stored before its cause is gone.
        """
        return await self.js.publish_async(
            c.event_subject(event.ticket_id, event.type),
            event.to_json(),
            headers={c.HDR_MSG_ID: event.id},
        )

    @staticmethod
    async def confirm(ack: asyncio.Future[Any]) -> None:
        """Wait for the stream's ack of an async publish; raise if it failed or never came."""
        await asyncio.wait_for(ack, PUBLISH_ACK_TIMEOUT_S)

    async def dispatch(self, task: TaskState, revision: int | None = None) -> None:
        """Put a task on its work subject and wait until it is stored.

        The msg id makes a re-dispatch a no-op. With the task's KV `revision`, the dispatch
        carries the state it was queued with, so a worker can claim it with one
        compare-and-set instead of a read first.
        """
        await self.confirm(await self.dispatch_async(task, revision))

    async def dispatch_async(
        self, task: TaskState, revision: int | None = None
    ) -> asyncio.Future[Any]:
        """`dispatch` without waiting for the stream's ack; `confirm` the result."""
        dispatch = TaskDispatch(
            ticket_id=task.ticket_id,
            task=task.name,
            generation=task.generation,
            revision=revision,
            state=task if revision is not None else None,
        )
        return await self.js.publish_async(
            c.task_subject(task.phase, task.capability),
            dispatch.to_json(),
            headers={c.HDR_MSG_ID: f"{task.id}.g{task.generation}"},
        )

    async def dead_letter(
        self,
        origin: str,
        data: bytes,
        reason: str,
        category: str,
        *,
        subject: str = "",
        seq: int | None = None,
    ) -> None:
        headers = {
            c.HDR_REASON: _header_safe(reason),
            c.HDR_ERROR_CATEGORY: category,
            c.HDR_ORIGIN_SUBJECT: subject,
        }
        if seq is not None:
            headers[c.HDR_ORIGIN_SEQ] = str(seq)
            headers[c.HDR_MSG_ID] = f"dlq.{origin}.{seq}"
        await self.js.publish(c.dlq_subject(origin), data, headers=headers)

    def dead_letterer(self, origin: str) -> Callable[[Msg, str, str], Awaitable[None]]:
        """A `settle` dead-letter callback that files messages under `origin`."""

        async def dead_letter(msg: Msg, reason: str, category: str) -> None:
            seq = msg.metadata.sequence.stream if msg.reply else None
            await self.dead_letter(origin, msg.data, reason, category, subject=msg.subject, seq=seq)

        return dead_letter

    # Subscriptions

    async def pull(self, stream: str, durable: str) -> JetStreamContext.PullSubscription:
        return await self.js.pull_subscribe_bind(durable=durable, stream=stream)

    async def pull_tasks(
        self, phase: str, capability: str, topology: TopologyConfig
    ) -> JetStreamContext.PullSubscription:
        """Bind to the (phase, capability) consumer, creating it if this pair is new."""
        config = task_consumer_config(phase, capability, topology)
        durable = c.task_consumer(phase, capability)
        try:
            await self.js.consumer_info(c.TASKS_STREAM, durable)
        except nats.js.errors.NotFoundError:
            await ensure_consumer(self.js, c.TASKS_STREAM, config)
        return await self.pull(c.TASKS_STREAM, durable)

    async def serve(
        self, subject: str, handler: Callable[[Msg], Awaitable[None]], queue: str = ""
    ) -> Subscription:
        return await self.nc.subscribe(subject, queue=queue, cb=handler)


def _header_safe(text: str) -> str:
    # Header values are a single line.
    return " ".join(text.split())[:1000]


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)

"""The agents' handle on NATS: state buckets, publishing, requests and subscriptions.

Nothing outside `bus/` touches the NATS connection or a raw message: agents, the gateway
and the CLI go through a `Bus`, consume streams through `bus.consumer` and read them
through `bus.streams` (`tests/unit/test_boundaries.py` holds them to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig

from bus import constants as c
from bus.auth import Credentials
from bus.delivery import Delivery
from bus.errors import AuthError, NoAnswer, as_bus_errors, bus_error, is_transient
from bus.mirror import MirroredBucket
from bus.objects import ObjectBucket
from bus.retry import Outage, Patience
from bus.settle import DeadLetter
from bus.state import Bucket, stream_subjects
from bus.ticket_index import TicketIndex
from bus.topology import TopologyConfig, ensure_consumer, provision, task_consumer_config
from bus.trace_context import headers_for
from schemas import Event, Heartbeat, TaskDispatch, TaskState, TicketState
from schemas.audit import AuditEntry

log = logging.getLogger(__name__)

# One JetStream call (a publish's ack, a KV write) that has not been answered by then is
# retried. Short, because a leader that died never answers, and every call is safe to
# repeat; administration (creating R3 streams) gets longer.
OP_TIMEOUT_S = 2.0
ADMIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Request:
    """A core message to a served subject (a request when it has a reply subject)."""

    subject: str
    data: bytes
    # Whether the sender waits for a reply; a responder may skip the work of one if not.
    wants_reply: bool = False


Responder = Callable[[Request], Awaitable[bytes | None]]


@dataclass
class Pending:
    """A JetStream publish whose ack has not been confirmed yet (see `Bus.confirm`)."""

    subject: str
    data: bytes
    headers: dict[str, str]
    ack: asyncio.Future[Any] | None


class Bus:
    """A connected NATS client with Omoi's buckets bound.

    Create with `await Bus.connect(url, name)`; close with `await bus.close()`, which
    drains so in-flight publishes and acks reach the server. Operations ride out
    passing trouble for `patience_s` (None: for as long as it lasts).
    """

    def __init__(
        self, nc: Client, *, patience_s: float | None = None, op_timeout_s: float = OP_TIMEOUT_S
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=op_timeout_s)
        self.admin = nc.jetstream(timeout=max(op_timeout_s, ADMIN_TIMEOUT_S))
        self.patience = Patience(patience_s, Outage(f"NATS for {nc.options['name']}", log))
        self.op_timeout_s = op_timeout_s
        self.tickets: Bucket[TicketState]
        self.tasks: Bucket[TaskState]
        self.heartbeats: Bucket[Heartbeat]
        # Tickets' git workspaces, as bundles (`agents.workspace_sync`).
        self.workspaces = ObjectBucket(self.js, c.WORKSPACES_BUCKET, self.patience)
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
        patience_s: float | None = None,
        op_timeout_s: float = OP_TIMEOUT_S,
        credentials: Credentials | None = None,
    ) -> Bus:
        """Connect, optionally provision the topology, and bind the buckets.

        Agents keep retrying forever (a cluster may still be starting); one-shot
        clients pass a small `max_reconnect_attempts` and `patience_s` to fail fast.
        Failing raises `Unavailable`, `NotProvisioned` without the topology, or
        `AuthError` when the server refuses the credentials.
        """
        nc = await connect_client(
            url,
            credentials,
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=max_reconnect_attempts,
        )
        bus = cls(nc, patience_s=patience_s, op_timeout_s=op_timeout_s)
        try:
            with as_bus_errors(f"NATS at {url}"):
                if topology is not None:
                    await bus.patience.run(lambda: provision(bus.admin, topology), "provisioning")
                await bus.patience.run(bus._bind, "binding buckets")
        except BaseException:
            # A caller that retries must not pile up connections that reconnect forever.
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        return bus

    async def _bind(self) -> None:
        self.tickets = await self._bucket(c.TICKETS_BUCKET, TicketState)
        self.tasks = await self._bucket(c.TASKS_BUCKET, TaskState)
        self.heartbeats = await self._bucket(c.HEARTBEATS_BUCKET, Heartbeat)

    async def _bucket[M: Any](self, name: str, model: type[M]) -> Bucket[M]:
        # Bound through the short-timeout context: the KV calls are the hot path.
        return Bucket(await self.js.key_value(name), model, self.patience)

    async def bucket[M: Any](self, name: str, model: type[M]) -> Bucket[M]:
        """Another bucket of the topology (`omoi_tokens`), bound on demand."""
        with as_bus_errors(f"binding {name}"):
            return await self.patience.run(lambda: self._bucket(name, model), f"binding {name}")

    async def watch_bucket[M: Any](self, name: str, model: type[M]) -> MirroredBucket[M]:
        """Bucket `name` read from memory, kept current by a watch; `stop()` it when done."""
        with as_bus_errors(f"watching {name}"):
            kv = await self.patience.run(lambda: self.js.key_value(name), f"binding {name}")
            mirror = MirroredBucket(kv, model, self.patience, stream=c.kv_stream(name))
            await mirror.start(self.admin)
        return mirror

    async def index_tickets(self) -> TicketIndex:
        """Every ticket's order and status, kept current by a watch (bus/ticket_index.py):
        what pages of tickets are read from; `stop()` it when done."""
        index = TicketIndex(self.patience)
        with as_bus_errors("indexing tickets"):
            await index.start(self.admin, self.js)
        return index

    async def mirror_state(self) -> None:
        """Read tickets and tasks from in-memory mirrors that KV watches keep current.

        For an agent that reads much more state than it writes (the planner). Finished
        tickets' keys leave the mirror (`forget`) but stay readable from the server.
        """
        tickets = MirroredBucket(
            self.tickets.kv, TicketState, self.patience, stream=c.kv_stream(c.TICKETS_BUCKET)
        )
        tasks = MirroredBucket(
            self.tasks.kv, TaskState, self.patience, stream=c.kv_stream(c.TASKS_BUCKET)
        )
        await tickets.start(self.admin)
        await tasks.start(self.admin)
        for ticket in await tickets.values():
            if ticket.status.terminal:
                tickets.forget(ticket.id)
                tasks.forget(ticket.id)
        self._mirrors = [tickets, tasks]
        self.tickets, self.tasks = tickets, tasks

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

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

    # Publishing to streams. Every publish carries a msg id, so a retry is stored once.

    async def publish_event(self, event: Event) -> None:
        """Publish `event` and wait until the stream has stored it."""
        await self.confirm(await self.publish_event_async(event))

    async def publish_events(self, events: list[Event]) -> None:
        """Publish `events` in order, all sent before any ack is awaited."""
        pending = [await self.publish_event_async(event) for event in events]
        for one in pending:
            await self.confirm(one)

    async def publish_event_async(self, event: Event) -> Pending:
        """Send `event` without waiting for the stream's ack; `confirm` the result.

        Confirm before acking the message that caused the event, so the event is stored
        before its cause is gone.
        """
        subject = c.event_subject(event.ticket_id, event.type)
        headers = {c.HDR_MSG_ID: event.id, **headers_for(event.ticket_id)}
        return await self._send(subject, event.to_json(), headers)

    async def publish_audit(self, entry: AuditEntry) -> None:
        """Publish an audit entry and wait until the stream has stored it."""
        await self.confirm(await self.publish_audit_async(entry))

    async def publish_audit_async(self, entry: AuditEntry) -> Pending:
        """Send an audit entry without waiting for the stream's ack; `confirm` the result
        (or hand it to a `bus.audit.AuditTrail`, which does so off the caller's path)."""
        subject = c.audit_subject(entry.action)
        return await self._send(subject, entry.to_json(), {c.HDR_MSG_ID: f"audit.{entry.id}"})

    async def dispatch(self, task: TaskState, revision: int) -> None:
        """Put a task on its work subject and wait until it is stored."""
        await self.confirm(await self.dispatch_async(task, revision))

    async def dispatch_async(self, task: TaskState, revision: int) -> Pending:
        """`dispatch` without waiting for the stream's ack; `confirm` the result.

        `revision` is the KV revision of the write that queued the task. It names the
        dispatch (`<task>.r<revision>`): sending it again is a no-op, while a task queued
        again (a new write) gets a new message. The dispatch carries the queued state, so
        a worker can claim it with one compare-and-set instead of a read first.
        """
        dispatch = TaskDispatch(
            ticket_id=task.ticket_id,
            task=task.name,
            generation=task.generation,
            revision=revision,
            state=task,
        )
        subject = c.task_subject(
            task.phase, task.capability, task.ticket_id, task.name, task.priority
        )
        headers = {c.HDR_MSG_ID: f"{task.id}.r{revision}", **headers_for(task.ticket_id)}
        return await self._send(subject, dispatch.to_json(), headers)

    async def enqueue(self, subject: str, data: bytes, msg_id: str, ticket_id: str) -> None:
        """Put a request (a gate's, a delivery's) on its work-queue stream and wait until
        it is stored."""
        headers = {c.HDR_MSG_ID: msg_id, **headers_for(ticket_id)}
        await self.confirm(await self._send(subject, data, headers))

    async def _send(self, subject: str, data: bytes, headers: dict[str, str]) -> Pending:
        try:
            ack = await self.js.publish_async(subject, data, headers=headers)
        except Exception as exc:
            if not is_transient(exc):
                raise
            ack = None  # `confirm` publishes it again
        return Pending(subject, data, headers, ack)

    async def confirm(self, pending: Pending) -> None:
        """Wait for the stream's ack of an async publish. If it failed or never came,
        publish again (deduplicated by its msg id) until it is stored."""
        if pending.ack is not None:
            try:
                await asyncio.wait_for(pending.ack, self.op_timeout_s)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
            finally:
                # An unanswered future would hold a slot of nats-py's pending limit forever.
                pending.ack.cancel()
        await self.patience.run(
            lambda: self.js.publish(pending.subject, pending.data, headers=pending.headers),
            f"publishing to {pending.subject}",
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
        part: int | None = None,
    ) -> None:
        """A copy of `data` on `omoi.dlq.<origin>`, with why. `part` tells apart the
        items of one message (the lines of a span message) that each failed."""
        headers = {
            c.HDR_REASON: _header_safe(reason),
            c.HDR_ERROR_CATEGORY: category,
            c.HDR_ORIGIN_SUBJECT: subject,
        }
        if seq is not None:
            headers[c.HDR_ORIGIN_SEQ] = str(seq)
            headers[c.HDR_MSG_ID] = f"dlq.{origin}.{seq}" + (f".{part}" if part else "")
        await self.patience.run(
            lambda: self.js.publish(c.dlq_subject(origin), data, headers=headers),
            f"dead-lettering to {origin}",
        )

    def dead_letterer(self, origin: str) -> DeadLetter:
        """A `settle` dead-letter callback that files messages under `origin`."""

        async def dead_letter(delivery: Delivery, reason: str, category: str) -> None:
            await self.dead_letter(
                origin,
                delivery.data,
                reason,
                category,
                subject=delivery.subject,
                seq=delivery.seq or None,
            )

        return dead_letter

    # Stream state

    async def live_subjects(self, stream: str, subjects: str) -> dict[str, int]:
        """How many messages `stream` holds on each subject matching `subjects`, now:
        what the planner's sweep uses to find queued work whose message is missing."""
        return await self.patience.run(
            partial(stream_subjects, self.admin, stream, subjects), f"reading {stream}"
        )

    # Core messaging: requests, replies and broadcasts.

    async def request(
        self, subject: str, data: bytes, timeout: float, *, ticket_id: str | None = None
    ) -> bytes:
        """Send a request and return the reply's data; `NoAnswer` if none comes,
        `Unavailable` if it cannot be sent (the connection is closed). A request about
        `ticket_id` carries its trace header."""
        headers = headers_for(ticket_id) if ticket_id else None
        try:
            reply = await self.nc.request(subject, data, timeout=timeout, headers=headers)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise NoAnswer(f"no answer on {subject}: {exc!r}") from exc
        except nats.errors.Error as exc:
            raise bus_error(exc, f"requesting on {subject}") from exc
        return bytes(reply.data)

    async def notify(self, subject: str, data: bytes = b"") -> None:
        """A core publish: best effort, for signals that state also carries."""
        await self.nc.publish(subject, data)

    async def serve(
        self, subject: str, responder: Responder, queue: str = "", concurrency: int = 1
    ) -> Subscription:
        """Call `responder` for each message on `subject`; what it returns is the reply.
        One at a time unless `concurrency` says more: a responder that waits on something
        slow (a provider's API) would otherwise hold up every request behind it."""

        async def answer(msg: Msg) -> None:
            reply = await responder(Request(msg.subject, msg.data, bool(msg.reply)))
            if reply is not None and msg.reply:
                await msg.respond(reply)

        if concurrency <= 1:
            return await self.nc.subscribe(subject, queue=queue, cb=answer)
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()

        async def in_slot(msg: Msg) -> None:
            try:
                await answer(msg)
            except Exception:  # one request's failure is logged, never the subscription's
                log.exception("answering a request on %s failed", msg.subject)
            finally:
                slots.release()

        async def on_msg(msg: Msg) -> None:
            await slots.acquire()  # full: the next message waits, as with one at a time
            task = asyncio.create_task(in_slot(msg))
            running.add(task)
            task.add_done_callback(running.discard)

        return await self.nc.subscribe(subject, queue=queue, cb=on_msg)

    async def ensure_own_consumer(self, stream: str, config: ConsumerConfig) -> None:
        """Create (or converge) a durable consumer a role makes for itself when it needs
        it, rather than the topology for everyone (the delivery agent's tracker)."""
        with as_bus_errors(f"making consumer {config.durable_name}"):
            await ensure_consumer(self.admin, stream, config)

    async def ensure_task_consumer(
        self, phase: str, capability: str, topology: TopologyConfig, lane: str = c.NORMAL_LANE
    ) -> str:
        """The durable for (phase, capability) and `lane`, created if this pair is new and
        converged if it reads other subjects (one made before lanes read them all)."""
        config = task_consumer_config(phase, capability, topology, lane)
        assert config.durable_name is not None
        try:
            info = await self.admin.consumer_info(c.TASKS_STREAM, config.durable_name)
        except nats.js.errors.NotFoundError:
            info = None
        if info is None or info.config.filter_subjects != config.filter_subjects:
            await ensure_consumer(self.admin, c.TASKS_STREAM, config)
        return config.durable_name


async def connect_client(url: str, credentials: Credentials | None, **options: Any) -> Client:
    """`nats.connect` to `url` (comma-separated servers) as `credentials`, except that a
    server refusing them ends the attempt at once: nats-py would otherwise retry them
    forever, as if the server were down. Every connection in `bus/` is made here."""
    if credentials is not None:
        options.update(credentials.connect_options())
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        if _is_refusal(exc) and not refused.done():
            refused.set_result(exc)
        await _log_error(exc)

    connecting = asyncio.ensure_future(
        nats.connect(
            servers=[u.strip() for u in url.split(",")],
            reconnect_time_wait=0.5,
            drain_timeout=5,
            error_cb=on_error,
            **options,
        )
    )
    with as_bus_errors(f"connecting to {url}"):
        waits: set[asyncio.Future[Any]] = {connecting, refused}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if connecting.done():
            return connecting.result()
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    raise AuthError(
        f"NATS at {url} refused the credentials ({refused.result()}): "
        "none were given, or the server does not know them (see docs/security.md)"
    )


def _is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def _header_safe(text: str) -> str:
    # Header values are a single line.
    return " ".join(text.split())[:1000]


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)

"""The trust boundary on the bus: nats-server itself refuses what a role may not do.

Each role connects with its own identity; every allowed and denied publish and
subscription in the table is tried against a real server with `omoi up`'s authorization
block. A refusal is the server's `-ERR Permissions Violation`, which reaches the client
before the answer to the ping that follows it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from bus import AuthError, Bus, EmbeddedNatsServer
from bus import constants as c
from bus.auth import AuthDir, CredentialsError, load_credentials
from bus.permissions import ROLES, inbox_prefix
from schemas import Event, EventType

pytestmark = pytest.mark.integration

T = "T-0123456789ab"
DISPATCH = c.task_subject("implementation", "shell", T, "a")
VERDICT = c.event_subject(T, "gate.passed")
OUTCOME = c.event_subject(T, "task.succeeded")
AUDIT = c.audit_subject("ticket.submit")

# The service API (bus/registry.py): agents answer it, operator, viewer and gateway ask.
PING = c.service_subject("PING")
WORKERS_INFO = c.service_subject("INFO", c.service_name("worker"))
ONE_STATS = c.service_subject("STATS", c.service_name("planner"), "abc")
WORKER_STATUS = c.agent_status_subject("worker", "worker-1")

# (role, subject, allowed): publishes.
PUBLISH = [
    ("planner", f"$KV.{c.TICKETS_BUCKET}.{T}", True),
    ("planner", DISPATCH, True),
    ("planner", c.gate_subject("testing", T), True),
    ("planner", c.event_subject(T, "ticket.created"), True),
    ("planner", AUDIT, True),
    ("planner", f"$KV.{c.TOKENS_BUCKET}.abcdefabcdef", False),
    ("planner", VERDICT, False),
    ("planner", f"{inbox_prefix('gateway')}.abc", True),  # its answers
    ("planner", f"{inbox_prefix('worker')}.abc", False),
    ("planner", OUTCOME, False),
    ("planner", c.event_subject(T, "task.failed"), True),
    ("planner", c.event_subject(T, "task.assigned"), True),
    ("worker", c.event_subject(T, "task.assigned"), False),
    ("planner", f"$JS.API.STREAM.DELETE.{c.EVENTS_STREAM}", False),
    ("planner", f"$JS.API.STREAM.PURGE.{c.EVENTS_STREAM}", False),
    ("worker", OUTCOME, True),
    ("worker", c.event_subject(T, "task.started"), True),
    ("worker", c.event_subject(T, "merge.conflicted"), True),
    ("worker", c.event_subject(T, "task.handed_off"), True),
    ("worker", c.agent_inbox("worker-2"), True),
    ("worker", c.ticket_channel(T), True),
    ("worker", c.capability_questions("review"), True),
    ("worker", f"{inbox_prefix('worker')}.abc", False),  # only as an answer it was asked
    ("planner", c.agent_inbox("worker-2"), False),
    ("viewer", c.ticket_channel(T), False),
    ("validator", c.capability_questions("review"), False),
    ("worker", f"$KV.{c.LOCKS_BUCKET}.named.db.migrations", True),
    ("planner", f"$KV.{c.LOCKS_BUCKET}.named.db.migrations", False),
    ("viewer", f"$KV.{c.LOCKS_BUCKET}.named.db.migrations", False),
    ("viewer", f"$JS.API.DIRECT.GET.{c.kv_stream(c.LOCKS_BUCKET)}", True),
    ("validator", f"$KV.{c.LOCKS_BUCKET}.named.db.migrations", False),
    ("planner", c.event_subject(T, "merge.conflicted"), False),
    ("worker", f"$KV.{c.TASKS_BUCKET}.{T}.a", True),
    ("worker", f"$KV.{c.HEARTBEATS_BUCKET}.worker-1", True),
    ("worker", f"$KV.{c.TICKETS_BUCKET}.{T}", False),
    ("worker", VERDICT, False),
    ("worker", DISPATCH, False),
    ("worker", "_INBOX.abc", False),  # no forged answers to anyone's request
    ("worker", c.event_subject(T, "ticket.done"), False),
    ("worker", c.SUBMIT_SUBJECT, False),
    ("worker", c.CMD_TICKET_CANCEL, False),
    ("worker", AUDIT, False),
    ("worker", f"$KV.{c.TOKENS_BUCKET}.abcdefabcdef", False),
    ("worker", f"$JS.API.STREAM.PURGE.{c.TASKS_STREAM}", False),
    ("worker", f"$JS.API.CONSUMER.DELETE.{c.TASKS_STREAM}.tasks-testing-shell", False),
    ("validator", VERDICT, True),
    ("validator", c.event_subject(T, "gate.failed"), True),
    ("validator", OUTCOME, False),
    ("validator", f"$KV.{c.TASKS_BUCKET}.{T}.a", False),
    ("validator", f"$KV.{c.TICKETS_BUCKET}.{T}", False),
    ("validator", DISPATCH, False),
    ("validator", f"$O.{c.WORKSPACES_BUCKET}.M.x", False),
    ("recorder", f"$JS.ACK.{c.EVENTS_STREAM}.{c.RECORDER_EVENTS_CONSUMER}.1.1.1.1.1", True),
    ("recorder", f"$JS.ACK.{c.AUDIT_STREAM}.{c.RECORDER_AUDIT_CONSUMER}.1.1.1.1.1", True),
    ("recorder", f"$JS.API.CONSUMER.MSG.NEXT.{c.AUDIT_STREAM}.{c.RECORDER_AUDIT_CONSUMER}", True),
    ("recorder", c.dlq_subject("audit"), True),
    ("recorder", AUDIT, False),
    ("recorder", OUTCOME, False),
    ("recorder", f"$KV.{c.TICKETS_BUCKET}.{T}", False),
    ("recorder", f"$JS.API.CONSUMER.DELETE.{c.EVENTS_STREAM}.{c.PLANNER_EVENTS_CONSUMER}", False),
    ("monitor", c.event_subject("_agents", "agent.stale"), True),
    ("monitor", c.audit_subject("auth.failure"), True),  # refused connections
    ("monitor", AUDIT, False),
    ("monitor", c.event_subject(T, "ticket.done"), False),
    ("monitor", f"$KV.{c.TASKS_BUCKET}.{T}.a", False),
    # Its findings, and the backlogs it samples for them (reading, never changing one).
    ("monitor", c.event_subject("_agents", "anomaly.detected"), True),
    ("monitor", c.event_subject("_agents", "anomaly.resolved"), True),
    ("monitor", c.event_subject("_agents", "alert.firing"), True),
    ("monitor", c.event_subject("_agents", "alert.delivery"), True),
    ("planner", c.event_subject("_agents", "alert.firing"), False),
    ("monitor", c.supervisor_subject("host-1", "status"), True),
    ("monitor", c.supervisor_subject("host-1", "restart"), True),
    ("monitor", c.supervisor_subject("host-1", "hold"), False),
    ("worker", c.supervisor_subject("host-1", "restart"), False),
    ("gateway", c.supervisor_subject("host-1", "restart"), False),
    ("monitor", c.event_subject(T, "anomaly.detected"), False),
    ("monitor", f"$JS.API.CONSUMER.LIST.{c.TASKS_STREAM}", True),
    ("monitor", f"$JS.API.CONSUMER.LIST.{c.EVENTS_STREAM}", True),
    ("monitor", f"$JS.API.CONSUMER.DELETE.{c.TASKS_STREAM}.x", False),
    # What waits longest in a task lane; not the messages of any other stream.
    ("monitor", f"$JS.API.STREAM.MSG.GET.{c.TASKS_STREAM}", True),
    ("monitor", f"$JS.API.STREAM.MSG.GET.{c.EVENTS_STREAM}", False),
    ("monitor", f"$JS.API.STREAM.MSG.DELETE.{c.TASKS_STREAM}", False),
    ("monitor", f"$JS.API.CONSUMER.LIST.{c.kv_stream(c.TASKS_BUCKET)}", False),
    ("worker", c.event_subject("_agents", "anomaly.detected"), False),
    # The guardian: its book, quarantines and interventions (through the planner's
    # commands), its events and audit entries; nothing of a ticket's own state.
    ("guardian", f"$KV.{c.QUARANTINE_BUCKET}.worker-1", True),
    ("guardian", f"$KV.{c.INTERVENTIONS_BUCKET}.quarantine_worker.w.abc", True),
    ("guardian", c.CMD_TICKET_PAUSE, True),
    ("guardian", c.CMD_TICKET_RESUME, True),
    ("guardian", c.CMD_TASK_CANCEL, True),
    ("guardian", c.CMD_TICKET_PRIORITY, True),  # aging a starved ticket
    ("guardian", c.CMD_TICKET_CANCEL, False),
    ("guardian", c.CMD_TICKET_MOVE, False),
    ("guardian", c.event_subject("_agents", "guardian.applied"), True),
    ("guardian", c.event_subject(T, "guardian.applied"), False),
    ("guardian", c.audit_subject("guardian.intervene"), True),
    ("guardian", AUDIT, False),
    ("guardian", f"$KV.{c.TASKS_BUCKET}.{T}.a", False),
    ("guardian", f"$KV.{c.TICKETS_BUCKET}.{T}", False),
    ("guardian", f"$JS.API.CONSUMER.MSG.NEXT.{c.EVENTS_STREAM}.{c.GUARDIAN_CONSUMER}", True),
    ("guardian", f"$JS.API.CONSUMER.MSG.NEXT.{c.EVENTS_STREAM}.{c.PLANNER_EVENTS_CONSUMER}", False),
    ("guardian", c.supervisor_subject("host-1", "restart"), False),
    ("guardian", c.supervisor_subject("host-1", "hold"), True),
    ("guardian", c.supervisor_subject("host-1", "release"), True),
    ("monitor", c.supervisor_subject("host-1", "release"), False),
    ("operator", c.supervisor_subject("host-1", "profile"), True),
    ("operator", c.supervisor_subject("host-1", "hold"), False),
    ("viewer", c.supervisor_subject("host-1", "profile"), False),
    ("guardian", c.agent_inbox("worker-1"), True),  # steering a stuck agent
    ("guardian", c.ticket_channel(T), False),
    ("worker", f"$KV.{c.QUARANTINE_BUCKET}.worker-1", False),
    ("worker", f"$JS.API.DIRECT.GET.{c.kv_stream(c.QUARANTINE_BUCKET)}", True),
    ("worker", c.event_subject("_agents", "guardian.undone"), False),
    ("monitor", f"$KV.{c.QUARANTINE_BUCKET}.worker-1", False),
    ("operator", c.GUARDIAN_APPROVE, True),
    ("operator", c.GUARDIAN_UNDO, True),
    ("operator", c.CMD_TICKET_PAUSE, True),
    ("operator", f"$KV.{c.INTERVENTIONS_BUCKET}.quarantine_worker.w.abc", False),
    ("viewer", c.GUARDIAN_APPROVE, False),
    ("viewer", f"$JS.API.DIRECT.GET.{c.kv_stream(c.INTERVENTIONS_BUCKET)}", True),
    ("gateway", c.GUARDIAN_UNDO, False),
    ("submitter", c.CMD_TICKET_PAUSE, False),
    ("submitter", c.CMD_TICKET_PRIORITY, False),
    ("operator", c.CMD_TICKET_PRIORITY, True),
    ("gateway", c.TRUSTED_SUBMIT_SUBJECT, True),
    ("gateway", c.CMD_TICKET_MOVE, True),
    ("gateway", f"$JS.API.STREAM.MSG.GET.{c.kv_stream(c.TICKETS_BUCKET)}", True),
    ("gateway", AUDIT, True),
    ("gateway", f"$KV.{c.TOKENS_BUCKET}.abcdefabcdef", True),
    ("gateway", f"$JS.API.CONSUMER.CREATE.{c.kv_stream(c.TOKENS_BUCKET)}", True),
    ("gateway", f"$JS.API.STREAM.PURGE.{c.AUDIT_STREAM}", False),
    ("gateway", f"$JS.API.STREAM.MSG.DELETE.{c.AUDIT_STREAM}", False),
    ("gateway", f"$KV.{c.TICKETS_BUCKET}.{T}", False),
    ("gateway", VERDICT, False),
    ("gateway", DISPATCH, False),
    ("operator", c.SUBMIT_SUBJECT, True),
    ("operator", c.TRUSTED_SUBMIT_SUBJECT, True),
    ("operator", c.CMD_TASK_CANCEL, True),
    ("operator", f"$JS.API.STREAM.INFO.{c.EVENTS_STREAM}", True),
    ("operator", AUDIT, True),
    ("operator", f"$KV.{c.TOKENS_BUCKET}.abcdefabcdef", True),
    ("operator", f"$JS.API.STREAM.MSG.GET.{c.kv_stream(c.TOKENS_BUCKET)}", True),
    ("operator", f"$JS.API.STREAM.DELETE.{c.AUDIT_STREAM}", False),
    ("operator", VERDICT, False),
    ("operator", f"$KV.{c.TASKS_BUCKET}.{T}.a", False),
    ("operator", f"$JS.API.STREAM.DELETE.{c.EVENTS_STREAM}", False),
    ("submitter", c.SUBMIT_SUBJECT, True),
    ("submitter", c.TRUSTED_SUBMIT_SUBJECT, False),
    ("submitter", c.CMD_TICKET_CANCEL, False),
    ("submitter", f"$JS.API.STREAM.MSG.GET.{c.kv_stream(c.TICKETS_BUCKET)}", False),
    ("submitter", c.event_subject(T, "ticket.created"), False),
    ("submitter", AUDIT, False),
    ("submitter", f"$KV.{c.TOKENS_BUCKET}.abcdefabcdef", False),
    ("viewer", f"$JS.API.STREAM.MSG.GET.{c.kv_stream(c.TASKS_BUCKET)}", True),
    ("viewer", f"$JS.API.CONSUMER.CREATE.{c.EVENTS_STREAM}", True),
    ("viewer", c.SUBMIT_SUBJECT, False),
    ("viewer", c.TRUSTED_SUBMIT_SUBJECT, False),
    ("viewer", c.CMD_TICKET_CANCEL, False),
    ("viewer", f"$KV.{c.TICKETS_BUCKET}.{T}", False),
    ("viewer", f"$JS.API.CONSUMER.DURABLE.CREATE.{c.EVENTS_STREAM}.planner-events", False),
    ("viewer", AUDIT, False),
    ("viewer", f"$KV.{c.TOKENS_BUCKET}.abcdefabcdef", False),
    ("viewer", f"$JS.API.STREAM.MSG.GET.{c.kv_stream(c.TOKENS_BUCKET)}", False),
    # Asking the service API.
    ("viewer", PING, True),
    ("viewer", WORKERS_INFO, True),
    ("viewer", ONE_STATS, True),
    ("viewer", WORKER_STATUS, True),
    ("operator", c.service_subject("STATS"), True),
    ("operator", WORKER_STATUS, True),
    ("gateway", c.service_subject("INFO"), True),
    ("gateway", ONE_STATS, True),
    ("submitter", PING, False),
    ("submitter", WORKER_STATUS, False),
    ("worker", PING, False),
    ("worker", c.agent_status_subject("planner", "planner-1"), False),
    ("planner", WORKERS_INFO, False),
    ("viewer", "$SRV.REGISTER", False),
    # Answering it: the planner and the recorder into the askers' inboxes, the others
    # only to a request they received (see the round trip below).
    ("planner", f"{inbox_prefix('viewer')}.abc", True),
    ("recorder", f"{inbox_prefix('viewer')}.abc", True),
    ("recorder", f"{inbox_prefix('gateway')}.abc", True),
    ("recorder", "_INBOX.abc", True),
    ("recorder", f"{inbox_prefix('planner')}.abc", False),
    ("recorder", f"{inbox_prefix('submitter')}.abc", False),
    ("validator", "_INBOX.abc", False),
    ("validator", f"{inbox_prefix('viewer')}.abc", False),
    ("monitor", f"{inbox_prefix('operator')}.abc", False),
    ("admin", f"$KV.{c.TICKETS_BUCKET}.{T}", True),
    ("admin", f"$JS.API.STREAM.INFO.{c.EVENTS_STREAM}", True),
    # In the servers' system account: it only listens.
    ("system", "$SYS.REQ.SERVER.PING", False),
    ("system", "$SYS.REQ.ACCOUNT.PING.CONNZ", False),
    ("system", VERDICT, False),
    ("system", c.audit_subject("auth.failure"), False),
    # Log lines: each role ships under its own role only, so a line's role is its writer.
    ("worker", c.log_subject("worker", "worker-1"), True),
    ("worker", c.log_subject("planner", "planner-1"), False),
    ("planner", c.log_subject("planner", "planner-1"), True),
    ("validator", c.log_subject("validator", "v-1"), True),
    ("recorder", c.log_subject("recorder", "r-1"), True),
    ("monitor", c.log_subject("monitor", "m-1"), True),
    # The gateway ships no lines (only agent processes do), so it may not.
    ("gateway", c.log_subject("gateway", "g-1"), False),
    ("gateway", c.log_subject("worker", "g-1"), False),
    ("submitter", c.log_subject("planner", "p-1"), False),
    ("viewer", c.log_subject("viewer", "v-1"), False),
    ("operator", c.log_subject("planner", "p-1"), False),
    ("recorder", c.dlq_subject("logs"), True),
    ("worker", c.dlq_subject("logs"), False),
    ("recorder", f"$JS.API.CONSUMER.MSG.NEXT.{c.LOGS_STREAM}.{c.RECORDER_LOGS_CONSUMER}", True),
    ("operator", f"$JS.API.CONSUMER.CREATE.{c.LOGS_STREAM}", True),  # omoi logs --follow
    ("viewer", f"$JS.API.CONSUMER.CREATE.{c.LOGS_STREAM}", True),
    ("worker", f"$JS.API.CONSUMER.CREATE.{c.LOGS_STREAM}", False),
    ("operator", f"$JS.API.STREAM.PURGE.{c.LOGS_STREAM}", False),
    # Spans likewise, and the gateway ships its own (HTTP requests, submissions).
    ("worker", c.span_subject("worker", "worker-1"), True),
    ("worker", c.span_subject("validator", "worker-1"), False),
    ("planner", c.span_subject("planner", "planner-1"), True),
    ("validator", c.span_subject("validator", "v-1"), True),
    ("gateway", c.span_subject("gateway", "g-1"), True),
    ("gateway", c.span_subject("planner", "g-1"), False),
    ("submitter", c.span_subject("submitter", "s-1"), False),
    ("viewer", c.span_subject("viewer", "v-1"), False),
    ("operator", c.span_subject("operator", "o-1"), False),
    ("recorder", c.dlq_subject("spans"), True),
    ("worker", c.dlq_subject("spans"), False),
    ("recorder", f"$JS.API.CONSUMER.MSG.NEXT.{c.SPANS_STREAM}.{c.RECORDER_SPANS_CONSUMER}", True),
    ("worker", f"$JS.API.CONSUMER.MSG.NEXT.{c.SPANS_STREAM}.{c.RECORDER_SPANS_CONSUMER}", False),
]

# (role, subject, allowed): subscriptions.
SUBSCRIBE = [
    ("planner", c.SUBMIT_SUBJECT, True),
    ("planner", c.TRUSTED_SUBMIT_SUBJECT, True),
    ("planner", c.CMD_TICKET_CANCEL, True),
    ("worker", f"{c.CONTROL_CANCEL_PREFIX}.>", True),
    ("worker", c.agent_inbox("worker-1"), True),
    ("worker", c.TICKET_CHANNELS, True),
    ("worker", c.capability_questions("review"), True),
    ("validator", c.TICKET_CHANNELS, False),
    ("worker", c.SUBMIT_SUBJECT, False),
    ("worker", f"{inbox_prefix('planner')}.>", False),
    ("validator", c.EVENTS_SUBJECTS, False),
    ("gateway", f"{inbox_prefix('operator')}.>", False),
    ("gateway", c.CMD_TICKET_CANCEL, False),
    ("submitter", "_INBOX.abc", True),
    ("submitter", c.EVENTS_SUBJECTS, False),
    ("viewer", c.EVENTS_SUBJECTS, True),
    ("viewer", "_INBOX.abc", True),
    ("viewer", c.SUBMIT_SUBJECT, False),
    ("viewer", "omoi.commands.>", False),
    ("viewer", f"{inbox_prefix('gateway')}.>", False),
    # Serving the service API: its own service name's control subjects, in all three
    # forms, and its own role's status endpoints; never another role's.
    ("worker", PING, True),
    ("worker", WORKERS_INFO, True),
    ("worker", c.service_subject("STATS", c.service_name("worker"), "abc"), True),
    ("worker", WORKER_STATUS, True),
    ("worker", c.service_subject("PING", c.service_name("planner")), False),
    ("worker", ONE_STATS, False),
    ("worker", c.agent_status_subject("planner", "planner-1"), False),
    ("worker", "$SRV.>", False),
    ("planner", c.service_subject("INFO"), True),
    ("planner", ONE_STATS, True),
    ("planner", WORKERS_INFO, False),
    ("validator", c.service_subject("STATS", c.service_name("validator")), True),
    ("validator", c.agent_status_subject("validator", "v-1"), True),
    ("recorder", c.service_subject("PING", c.service_name("recorder"), "abc"), True),
    ("recorder", c.agent_status_subject("monitor", "m-1"), False),
    ("monitor", c.service_subject("INFO", c.service_name("monitor")), True),
    ("monitor", c.service_subject("INFO", c.service_name("worker")), False),
    ("viewer", PING, False),
    ("gateway", c.service_subject("INFO"), False),
    ("operator", WORKER_STATUS, False),
    ("system", c.SERVER_AUTH_ERRORS, True),
    ("system", "$SYS.>", False),
    ("system", "$SYS.ACCOUNT.*.CONNECT", False),
    ("system", c.EVENTS_SUBJECTS, False),
    ("viewer", c.LOGS_SUBJECTS, True),
    ("guardian", c.GUARDIAN_APPROVE, True),
    ("guardian", c.GUARDIAN_UNDO, True),
    ("guardian", c.CMD_TICKET_PAUSE, False),
    ("guardian", c.EVENTS_SUBJECTS, False),
    ("operator", c.GUARDIAN_APPROVE, False),
    ("worker", c.GUARDIAN_UNDO, False),
    ("submitter", c.LOGS_SUBJECTS, False),
    ("worker", c.LOGS_SUBJECTS, False),
]


@pytest.fixture
async def server(tmp_path: Path, auth_dir: AuthDir) -> AsyncIterator[EmbeddedNatsServer]:
    # Its own server: a probe must not touch a topology another fixture uses.
    server = EmbeddedNatsServer(
        tmp_path / "probe-nats", port=0, authorization=auth_dir.server_block.read_text()
    )
    await server.start()
    yield server
    await server.stop()


class Probe:
    """A raw client as one role, collecting what the server refuses."""

    def __init__(self) -> None:
        self.refusals: list[str] = []
        self.nc: Client | None = None
        self._refused = asyncio.Event()

    async def connect(self, url: str, auth: AuthDir, role: str) -> Probe:
        creds = auth.credentials(role)

        async def on_error(exc: Exception) -> None:
            if "permissions violation" in str(exc).lower():
                self.refusals.append(str(exc))
                self._refused.set()

        self.nc = await nats.connect(
            url,
            nkeys_seed_str=creds.seed,
            inbox_prefix=creds.inbox_prefix,
            error_cb=on_error,
            max_reconnect_attempts=0,
        )
        return self

    async def refused(self, expected: bool) -> list[str]:
        """What the server refused. The server answers in order, but nats-py hands an
        -ERR to the error callback as a task of its own: a refusal is awaited, and an
        acceptance is a second round trip with none."""
        assert self.nc is not None
        if expected:
            await asyncio.wait_for(self._refused.wait(), 5)
        else:
            await self.nc.flush(timeout=5)
            await self.nc.flush(timeout=5)
        return self.refusals

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


@pytest.mark.parametrize(("role", "subject", "allowed"), PUBLISH)
async def test_the_server_enforces_publish_permissions(
    server: EmbeddedNatsServer, auth_dir: AuthDir, role: str, subject: str, allowed: bool
) -> None:
    probe = await Probe().connect(server.url, auth_dir, role)
    try:
        assert probe.nc is not None
        await probe.nc.publish(subject, b"{}")
        refused = await probe.refused(expected=not allowed)
        if allowed:
            assert refused == [], f"{role} may publish {subject}"
        else:
            assert refused and subject.lower() in refused[0].lower(), f"{role}: {subject}"
    finally:
        await probe.close()


@pytest.mark.parametrize(("role", "subject", "allowed"), SUBSCRIBE)
async def test_the_server_enforces_subscribe_permissions(
    server: EmbeddedNatsServer, auth_dir: AuthDir, role: str, subject: str, allowed: bool
) -> None:
    probe = await Probe().connect(server.url, auth_dir, role)
    try:
        assert probe.nc is not None
        await probe.nc.subscribe(subject)
        refused = await probe.refused(expected=not allowed)
        if allowed:
            assert refused == [], f"{role} may subscribe to {subject}"
        else:
            assert refused and "subscription" in refused[0].lower(), f"{role}: {subject}"
    finally:
        await probe.close()


async def test_an_agent_answers_a_request_once_and_only_the_one_it_received(
    server: EmbeddedNatsServer, auth_dir: AuthDir
) -> None:
    """`allow_responses`: a worker may publish into whichever inbox asked it (here a
    viewer's nats.js-style `_INBOX.`), once; never into an inbox that did not ask."""
    worker = await Probe().connect(server.url, auth_dir, "worker")
    viewer = await Probe().connect(server.url, auth_dir, "viewer")
    try:
        assert worker.nc is not None and viewer.nc is not None
        asked: asyncio.Queue[Any] = asyncio.Queue()

        async def on_request(msg: Any) -> None:
            asked.put_nowait(msg)

        await worker.nc.subscribe(WORKERS_INFO, cb=on_request)
        await worker.nc.flush()
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        answers = await viewer.nc.subscribe(inbox)
        await viewer.nc.publish(WORKERS_INFO, b"", reply=inbox)
        request = await asyncio.wait_for(asked.get(), 5)
        assert request.reply == inbox
        await worker.nc.publish(request.reply, b"first")
        assert (await answers.next_msg(timeout=5)).data == b"first"
        assert await worker.refused(expected=False) == []
        await worker.nc.publish(request.reply, b"second")
        refused = await worker.refused(expected=True)
        assert inbox.lower() in refused[0].lower()
    finally:
        await worker.close()
        await viewer.close()


def test_every_role_is_in_the_tables() -> None:
    assert {r for r, _, _ in PUBLISH} == set(ROLES)


async def test_connecting_without_credentials_or_with_unknown_ones_is_refused(
    server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    with pytest.raises(AuthError, match="refused the credentials"):
        await Bus.connect(server.url, name="anonymous", max_reconnect_attempts=-1)
    stranger = AuthDir(tmp_path / "stranger").ensure().credentials("admin")
    with pytest.raises(AuthError, match="refused the credentials"):
        await Bus.connect(server.url, name="stranger", credentials=stranger)


async def test_a_forged_verdict_is_refused_and_never_stored(
    settings_bus: Bus, auth_dir: AuthDir, server: EmbeddedNatsServer
) -> None:
    """A worker (or anyone but a validator) claiming a gate passed: the server drops it,
    so the event stream, which the planner applies, never holds it."""
    forged = Event(
        id=f"{T}.gate.testing.1", type=EventType.GATE_PASSED, ticket_id=T, data={"phase": "testing"}
    )
    worker = await Bus.connect(
        server.url, name="forger", credentials=auth_dir.credentials("worker"), patience_s=1.0
    )
    try:
        with pytest.raises(Exception):  # noqa: B017,PT011 (refused: no ack ever comes)
            await worker.publish_event(forged)
    finally:
        await worker.close()
    held = await settings_bus.live_subjects(c.EVENTS_STREAM, c.ticket_events_filter(T))
    assert held == {}
    # The validator's verdict is stored.
    validator = await Bus.connect(
        server.url, name="validator", credentials=auth_dir.credentials("validator")
    )
    try:
        await validator.publish_event(forged)
    finally:
        await validator.close()
    held = await settings_bus.live_subjects(c.EVENTS_STREAM, c.ticket_events_filter(T))
    assert held == {VERDICT: 1}


async def test_a_watcher_cannot_take_over_a_durable_consumer(
    settings_bus: Bus, auth_dir: AuthDir, server: EmbeddedNatsServer
) -> None:
    """The bare (ephemeral) create subject a viewer may use admits no durable name, so it
    cannot reconfigure the planner's consumer through it."""
    before = await settings_bus.admin.consumer_info(c.EVENTS_STREAM, c.PLANNER_EVENTS_CONSUMER)
    probe = await Probe().connect(server.url, auth_dir, "viewer")
    try:
        assert probe.nc is not None
        for key in ("durable_name", "name"):
            request = {
                "stream_name": c.EVENTS_STREAM,
                "config": {key: c.PLANNER_EVENTS_CONSUMER, "filter_subject": "omoi.events.x.>"},
            }
            reply = await probe.nc.request(
                f"$JS.API.CONSUMER.CREATE.{c.EVENTS_STREAM}", json.dumps(request).encode(), 5
            )
            assert "error" in json.loads(reply.data), key
    finally:
        await probe.close()
    after = await settings_bus.admin.consumer_info(c.EVENTS_STREAM, c.PLANNER_EVENTS_CONSUMER)
    assert after.config.filter_subjects == before.config.filter_subjects


def test_credentials_files_must_be_private_and_well_formed(tmp_path: Path) -> None:
    auth = AuthDir(tmp_path / "auth").ensure()
    seed = auth.seed_file("worker")
    assert seed.stat().st_mode & 0o777 == 0o600
    assert auth.path.stat().st_mode & 0o777 == 0o700
    assert load_credentials(seed).role == "worker"
    assert "SU" not in repr(load_credentials(seed))  # the seed never shows in a log line
    seed.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_credentials(seed)
    seed.chmod(0o600)
    (tmp_path / "copied").mkdir()
    bad = tmp_path / "copied" / "viewer.nk"
    bad.write_text("not a seed\n")
    bad.chmod(0o600)
    with pytest.raises(CredentialsError, match="not an nkey user seed"):
        load_credentials(bad)
    with pytest.raises(CredentialsError, match="cannot read"):
        load_credentials(tmp_path / "auth" / "gateway-missing.nk", "gateway")
    with pytest.raises(CredentialsError, match="unknown role"):
        load_credentials(tmp_path / "auth" / "root.nk")
    # Existing identities survive a restart: ensure keeps them.
    before = auth.public_keys()["planner"]
    assert AuthDir(auth.path).ensure().public_keys()["planner"] == before


@pytest.fixture
async def settings_bus(
    server: EmbeddedNatsServer, auth_dir: AuthDir, tmp_path: Path
) -> AsyncIterator[Bus]:
    """The admin's bus on the probe server, with the topology."""
    from bus.topology import TopologyConfig

    bus = await Bus.connect(
        server.url,
        name="test-admin",
        topology=TopologyConfig(),
        credentials=auth_dir.credentials("admin"),
    )
    yield bus
    await bus.close()


async def test_what_the_server_denies_is_audited(tmp_path: Path, auth_dir: AuthDir) -> None:
    """`omoi up` reads its server's log: a denied publish by a known role becomes an
    audit entry. (Refused connections: tests/integration/test_refused_connections.py.)"""
    from bus.audit import AuditTrail
    from bus.server_audit import ServerRefusals
    from bus.topology import TopologyConfig
    from tests.helpers import audit_entries, wait_until

    refusals = ServerRefusals(auth_dir.public_keys())
    server = EmbeddedNatsServer(
        tmp_path / "audited-nats",
        port=0,
        authorization=auth_dir.server_block.read_text(),
        on_log=refusals,
    )
    await server.start()
    admin = await Bus.connect(
        server.url,
        name="admin",
        topology=TopologyConfig(),
        credentials=auth_dir.credentials("admin"),
    )
    refusals.trail = AuditTrail(admin)
    try:
        probe = await Probe().connect(server.url, auth_dir, "worker")
        assert probe.nc is not None
        await probe.nc.publish(VERDICT, b"{}")
        await probe.refused(expected=True)
        await probe.close()

        got = await wait_until(lambda: audit_entries(admin, "auth.denied"), timeout=10)
        denied = got[0]
        assert (denied.actor, denied.target, denied.via) == ("nats:worker", VERDICT, "nats")
        assert denied.source.startswith("127.0.0.1:")
    finally:
        await refusals.trail.flush()
        await admin.close()
        await server.stop()

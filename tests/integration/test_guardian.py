"""The guardian on real parts: a nats-server, the planner and workers, and the guardian
under its own identity. It quarantines a failing worker (whose work then goes to the
others), only proposes what exceeds its authority, pauses the ticket of a poison task
and cancels that task, and operators approve and undo through it; every step is an
event, a record in its bucket and an audit entry."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agents.errors import TransientFailure
from agents.executors.base import ExecutionContext
from agents.executors.shell import ShellExecutor
from agents.guardian.agent import Guardian
from agents.settings import Settings
from agents.worker.agent import Worker
from bus import Bus
from bus import constants as c
from schemas import AGENTS_TOKEN, Event, EventType, TaskResult, TaskState, TicketStatus
from schemas.anomaly import Anomaly, AnomalyKind
from schemas.guardian import (
    Intervention,
    InterventionReply,
    InterventionRequest,
    InterventionStatus,
    Quarantine,
)
from tests.conftest import ALL_PHASES
from tests.helpers import EventLog, Running, audit_entries, gated, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Worker]]


class FailingExecutor:
    """A broken machine: every task fails, as if its tools were missing."""

    capability = "shell"
    reads_ticket_state = False

    async def run(self, task: TaskState, ctx: ExecutionContext) -> TaskResult:
        raise TransientFailure("make: not found")


@pytest.fixture
async def operator_bus(settings: Settings) -> AsyncIterator[Bus]:
    assert settings.nats_url
    b = await Bus.connect(
        settings.nats_url, name="operator", credentials=settings.credentials("operator")
    )
    yield b
    await b.close()


@pytest.fixture
def start_guardian(settings: Settings, running: Running) -> Callable[..., Awaitable[Guardian]]:
    buses: list[Bus] = []

    async def start(s: Settings = settings) -> Guardian:
        assert s.nats_url
        own = await Bus.connect(s.nats_url, name="guardian", credentials=s.credentials("guardian"))
        buses.append(own)
        guardian = Guardian(own, s)
        await running.start(guardian)
        return guardian

    return start


@pytest.fixture
def start_named_worker(bus: Bus, settings: Settings, running: Running) -> Start:
    async def start(agent_id: str, *, failing: bool = False) -> Worker:
        shell = FailingExecutor() if failing else ShellExecutor(dict(os.environ), settings)
        worker = Worker(
            bus, settings, phases=ALL_PHASES, capabilities=("shell",),
            executors={"shell": shell}, agent_id=agent_id,
        )  # fmt: skip
        await running.start(worker)
        return worker

    return start


async def report_failing(bus: Bus, agent: str, kind: AnomalyKind = AnomalyKind.FAILURE_RATE) -> str:
    """What the monitor publishes when a worker's attempts fail far beyond its baseline."""
    found = Anomaly(
        kind=kind, key=f"{kind.value}.{agent}", summary=f"{agent}: 6 of 6 attempts failed",
        agent=agent, phase="implementation", capability="shell", observed=1.0, baseline=0.05,
        score=7.8, threshold=6.0, samples=6, baseline_samples=600, window_s=300,
        evidence=["B1.a#1", "B2.a#1"],
    )  # fmt: skip
    event_id = f"{found.key}.anomaly.detected.1"
    await bus.publish_event(
        Event(
            id=event_id, type=EventType.ANOMALY_DETECTED, ticket_id=AGENTS_TOKEN,
            agent=agent, data=found.model_dump(mode="json"),
        )
    )  # fmt: skip
    return event_id


async def ask(bus: Bus, subject: str, intervention_id: str) -> InterventionReply:
    request = InterventionRequest(id=intervention_id, by="tester@host")
    raw = await bus.request(subject, request.to_json(), 10.0)
    return InterventionReply.model_validate_json(raw)


def intervention(event: Event) -> Intervention:
    return Intervention.model_validate(event.data)


async def test_a_failing_worker_is_quarantined_its_work_goes_elsewhere_and_undo_lifts_it(
    bus: Bus,
    operator_bus: Bus,
    events: EventLog,
    start_planner: Callable[[], Awaitable[object]],
    start_named_worker: Start,
    start_guardian: Callable[..., Awaitable[Guardian]],
) -> None:
    await start_planner()
    bad = await start_named_worker("w-bad", failing=True)
    await start_named_worker("w-good")
    await start_guardian()
    await wait_until(lambda: _beat_is_ready(bus, "w-good"))

    await report_failing(bus, "w-bad")
    applied = intervention(await events.wait_type(AGENTS_TOKEN, "guardian.applied", agent="w-bad"))
    assert applied.kind == "quarantine_worker" and applied.autonomous
    assert "6 of 6 attempts failed" in applied.reason and "B1.a#1" in applied.evidence
    quarantine = await bus.bucket(c.QUARANTINE_BUCKET, Quarantine)
    held = await quarantine.value("w-bad")
    assert held is not None and held.intervention == applied.id
    await wait_until(lambda: _quarantined(bus, "w-bad"))
    # The same finding redelivered, or told twice, is the same intervention.
    await report_failing(bus, "w-bad")

    tasks = [{"name": f"t{i}", "phase": "implementation", "command": "true"} for i in range(4)]
    assert (await submit(bus, {"id": "after-q", "title": "after", "tasks": tasks}))["ok"]
    await events.wait_type("after-q", "ticket.done", timeout=30)
    started = [e.agent for e in events.of("after-q", "task.started")]
    assert started and set(started) == {"w-good"}
    assert bad.quarantined == applied.id

    entries = await audit_entries(bus, "guardian.intervene")
    assert [e.target for e in entries] == ["w-bad"]
    assert entries[0].actor == "nats:guardian" and "quarantine_worker applied" in entries[0].detail

    # An operator lifts it: the worker takes tasks again.
    reply = await ask(operator_bus, c.GUARDIAN_UNDO, applied.id)
    assert reply.ok and reply.intervention is not None
    assert reply.intervention.status is InterventionStatus.UNDONE
    assert reply.intervention.undone_by == "nats:operator (tester@host)"
    assert await quarantine.value("w-bad") is None
    await events.wait_type(AGENTS_TOKEN, "guardian.undone", agent="w-bad")
    await wait_until(lambda: _quarantined(bus, "w-bad", expected=None))
    undo = await audit_entries(bus, "guardian.undo")
    assert [e.actor for e in undo] == ["nats:operator (tester@host)"]
    # Undoing twice is refused with the reason, and changes nothing.
    again = await ask(operator_bus, c.GUARDIAN_UNDO, applied.id)
    assert not again.ok and "undone, not applied" in (again.error or "")
    assert len(events.of(AGENTS_TOKEN, "guardian.applied")) == 1


async def test_what_would_leave_nobody_for_the_work_is_proposed_until_approved(
    bus: Bus,
    operator_bus: Bus,
    events: EventLog,
    start_named_worker: Start,
    start_guardian: Callable[..., Awaitable[Guardian]],
) -> None:
    await start_named_worker("w-only", failing=True)
    await start_guardian()
    await report_failing(bus, "w-only")
    proposed = intervention(
        await events.wait_type(AGENTS_TOKEN, "guardian.proposed", agent="w-only")
    )
    assert not proposed.autonomous and "no other worker" in proposed.reason
    quarantine = await bus.bucket(c.QUARANTINE_BUCKET, Quarantine)
    assert await quarantine.value("w-only") is None

    reply = await ask(operator_bus, c.GUARDIAN_APPROVE, proposed.id)
    assert reply.ok and reply.intervention is not None
    assert reply.intervention.status is InterventionStatus.APPLIED
    assert reply.intervention.approved_by == "nats:operator (tester@host)"
    assert await quarantine.value("w-only") is not None
    approvals = await audit_entries(bus, "guardian.approve")
    assert [e.target for e in approvals] == ["w-only"]
    # Nothing to approve twice; an unknown id is named.
    assert not (await ask(operator_bus, c.GUARDIAN_APPROVE, proposed.id)).ok
    missing = await ask(operator_bus, c.GUARDIAN_APPROVE, "no-such")
    assert not missing.ok and "no intervention 'no-such'" in (missing.error or "")


async def test_a_poison_task_pauses_its_ticket_is_cancelled_and_resuming_lets_it_end(
    bus: Bus,
    operator_bus: Bus,
    events: EventLog,
    settings: Settings,
    start_planner: Callable[[], Awaitable[object]],
    start_named_worker: Start,
    start_guardian: Callable[..., Awaitable[Guardian]],
) -> None:
    await start_planner()
    for name in ("w-1", "w-2", "w-3"):
        await start_named_worker(name)
    await start_guardian(settings.model_copy(update={"guardian_poison_workers": 2}))
    tasks = [
        # Fails wherever it runs; with 20 retries it reaches a second worker.
        {"name": "poison", "phase": "implementation", "command": "exit 3", "max_retries": 20},
        {"name": "next", "phase": "testing", "command": "true"},
    ]
    assert (await submit(bus, {"id": "poisoned", "title": "poison", "tasks": tasks}))["ok"]

    await events.wait_type("poisoned", "ticket.paused")
    cancelled = await events.wait_type("poisoned", "task.cancelled", task="poison")
    assert "poison task: failed on 2 workers" in cancelled.data["reason"]
    await events.wait(lambda e: e.type == "guardian.applied" and e.data["kind"] == "cancel_task")
    applied = [intervention(e) for e in events.of(AGENTS_TOKEN, "guardian.applied")]
    kinds = {iv.kind.value: iv for iv in applied}
    assert set(kinds) == {"pause_ticket", "cancel_task"}
    assert kinds["cancel_task"].target == "poisoned.poison"
    assert not kinds["cancel_task"].reversible
    ticket = await bus.tickets.value("poisoned")
    assert ticket is not None and ticket.paused and ticket.status is TicketStatus.RUNNING
    state = await bus.tasks.value("poisoned.poison")
    assert state is not None and state.attempts < 21
    assert len({e.worker for e in state.errors}) >= 2

    # The cancel cannot be undone; the pause can, and the ticket then ends as it would have.
    refused = await ask(operator_bus, c.GUARDIAN_UNDO, kinds["cancel_task"].id)
    assert not refused.ok and "cannot be undone" in (refused.error or "")
    resumed = await ask(operator_bus, c.GUARDIAN_UNDO, kinds["pause_ticket"].id)
    assert resumed.ok
    await events.wait_type("poisoned", "ticket.resumed")
    await events.wait_type("poisoned", "ticket.failed", timeout=30)
    assert not events.of("poisoned", "task.started") or all(
        e.task == "poison" for e in events.of("poisoned", "task.started")
    )


async def test_a_paused_ticket_starts_nothing_until_it_is_resumed(
    bus: Bus,
    operator_bus: Bus,
    events: EventLog,
    settings: Settings,
    start_planner: Callable[[], Awaitable[object]],
    start_named_worker: Start,
) -> None:
    await start_planner()
    await start_named_worker("w-1")
    tasks = [
        {"name": "first", "phase": "implementation", "command": gated("first")},
        {"name": "second", "phase": "implementation", "command": "true",
         "depends_on": ["first"]},
    ]  # fmt: skip
    assert (await submit(bus, {"id": "held", "title": "held", "tasks": tasks}))["ok"]
    await events.wait_type("held", "task.started", task="first")
    pause = {"ticket_id": "held", "reason": "looking at it"}
    reply = await operator_bus.request(c.CMD_TICKET_PAUSE, _json(pause), 5.0)
    assert b'"ok":true' in reply
    paused = await events.wait_type("held", "ticket.paused")
    assert paused.data["reason"] == "looking at it"
    # Pausing again is no new pause.
    assert b'"ok":true' in await operator_bus.request(c.CMD_TICKET_PAUSE, _json(pause), 5.0)

    (settings.workspaces_dir / "held" / "release").touch()
    await events.wait_type("held", "task.succeeded", task="first")
    # The planner saw the outcome and decided nothing: `second` stays unqueued.
    await wait_until(lambda: _status(bus, "held.first", "succeeded"))
    second = await bus.tasks.value("held.second")
    assert second is not None and second.status == "blocked"
    assert not events.of("held", "task.queued") or all(
        e.task != "second" for e in events.of("held", "task.queued")
    )

    resume = {"ticket_id": "held", "reason": "fine"}
    assert b'"ok":true' in await operator_bus.request(c.CMD_TICKET_RESUME, _json(resume), 5.0)
    await events.wait_type("held", "ticket.done", timeout=30)
    assert len(events.of("held", "ticket.paused")) == 1
    assert len(events.of("held", "ticket.resumed")) == 1
    actions = [e.action for e in await audit_entries(bus) if e.target == "held"]
    assert actions.count("ticket.pause") == 2 and actions.count("ticket.resume") == 1


async def test_a_worker_restarted_while_quarantined_takes_nothing(
    bus: Bus, events: EventLog, start_planner: Callable[[], Awaitable[object]],
    start_named_worker: Start,
) -> None:  # fmt: skip
    await start_planner()
    quarantine = await bus.bucket(c.QUARANTINE_BUCKET, Quarantine)
    await quarantine.put(
        "w-held", Quarantine(agent_id="w-held", intervention="quarantine_worker.w-held.x",
                             reason="crash looping")
    )  # fmt: skip
    held = await start_named_worker("w-held")
    assert held.quarantined == "quarantine_worker.w-held.x"
    await wait_until(lambda: _quarantined(bus, "w-held", "quarantine_worker.w-held.x"))
    assert (await submit(bus, {"id": "waits", "title": "w", "tasks": [
        {"name": "a", "phase": "implementation", "command": "true"}]}))["ok"]  # fmt: skip
    await events.wait_type("waits", "task.queued", task="a")
    await start_named_worker("w-free")
    await events.wait_type("waits", "ticket.done", timeout=30)
    assert [e.agent for e in events.of("waits", "task.started")] == ["w-free"]


async def test_a_finding_it_cannot_read_is_dead_lettered_and_the_guardian_goes_on(
    bus: Bus, events: EventLog, start_named_worker: Start,
    start_guardian: Callable[..., Awaitable[Guardian]],
) -> None:  # fmt: skip
    await start_named_worker("w-a", failing=True)
    await start_named_worker("w-b")
    await start_guardian()
    await bus.publish_event(
        Event(id="garbage.1", type=EventType.ANOMALY_DETECTED, ticket_id=AGENTS_TOKEN,
              agent="w-a", data={"kind": "failure_rate", "observed": "lots"})
    )  # fmt: skip
    await wait_until(lambda: _dead_letters(bus))
    await report_failing(bus, "w-a")
    await events.wait_type(AGENTS_TOKEN, "guardian.applied", agent="w-a")


def _json(body: dict[str, object]) -> bytes:
    import json

    return json.dumps(body).encode()


async def _beat_is_ready(bus: Bus, agent: str) -> bool:
    beat = await bus.heartbeats.value(agent)
    return beat is not None and beat.ready


async def _quarantined(bus: Bus, agent: str, expected: str | None = "any") -> bool:
    beat = await bus.heartbeats.value(agent)
    if beat is None:
        return False
    return beat.quarantined is not None if expected == "any" else beat.quarantined == expected


async def _status(bus: Bus, key: str, status: str) -> bool:
    task = await bus.tasks.value(key)
    return task is not None and task.status == status


async def _dead_letters(bus: Bus) -> bool:
    return (await bus.js.stream_info(c.DLQ_STREAM)).state.messages >= 1

"""Priority lanes: a high or critical ticket's tasks are taken before the backlog, and a
raised priority moves a ticket's queued tasks ahead. One worker with one slot, held busy
by a gated task while the backlog forms, makes the order its choice alone."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from agents.executors import ShellExecutor
from agents.guardian.agent import Guardian
from agents.monitor.agent import Monitor
from agents.settings import Settings
from agents.worker.agent import Worker
from bus import Bus
from bus import constants as c
from schemas import AGENTS_TOKEN
from schemas.anomaly import Anomaly
from schemas.guardian import Intervention, InterventionReply, InterventionRequest
from tests.helpers import EventLog, Running, gated, submit
from tests.integration.test_control import command
from tests.integration.test_gateway import api, assert_problem, graph

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
__all__ = ["api"]  # the fixture, used by name


async def _blocked_worker(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker(phases=["design"])
    spec = {"name": "hold", "phase": "design", "command": gated("hold")}
    assert (await submit(bus, {"id": "busy", "title": "busy", "tasks": [spec]}))["ok"]
    await events.wait_type("busy", "task.started")


async def _queue(bus: Bus, events: EventLog, ticket_id: str, priority: str = "normal") -> None:
    spec = {"name": "work", "phase": "design", "command": "true"}
    body = {"id": ticket_id, "title": ticket_id, "priority": priority, "tasks": [spec]}
    assert (await submit(bus, body))["ok"]
    await events.wait_type(ticket_id, "task.queued")


def _started(events: EventLog) -> list[str]:
    return [e.ticket_id for e in events.events if e.type == "task.started"]


async def test_an_urgent_tickets_task_is_taken_before_the_backlog(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await _blocked_worker(bus, events, start_planner, start_worker)
    for ticket_id in ("n1", "n2"):
        await _queue(bus, events, ticket_id)
    await _queue(bus, events, "low", "low")
    await _queue(bus, events, "crit", "critical")
    state = await bus.tasks.value("crit.work")
    assert state is not None and state.priority == "critical"
    # The subject says it, for `nats stream subjects OMOI_TASKS` to show.
    queued = await bus.live_subjects(c.TASKS_STREAM, c.TASKS_SUBJECTS)
    assert "omoi.tasks.design.shell.critical.crit.work" in queued
    assert "omoi.tasks.design.shell.normal.n1.work" in queued

    (settings.workspaces_dir / "busy" / "release").touch()
    for ticket_id in ("n1", "n2", "low", "crit"):
        await events.wait_type(ticket_id, "ticket.done")
    # Within a lane, first come first served: low waits with normal (two lanes).
    assert _started(events) == ["busy", "crit", "n1", "n2", "low"]


async def test_an_urgent_task_goes_ahead_of_a_backlog_the_worker_is_draining(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    for ticket_id in ("b1", "b2", "b3"):
        spec = {"name": "work", "phase": "design", "command": gated("work")}
        assert (await submit(bus, {"id": ticket_id, "title": ticket_id, "tasks": [spec]}))["ok"]
        await events.wait_type(ticket_id, "task.queued")
    # Started after the backlog formed: its first fetch learns that two more wait.
    await start_worker(phases=["design"])
    await events.wait_type("b1", "task.started")
    await _queue(bus, events, "u", "high")
    for ticket_id in ("b1", "b2", "b3"):
        (settings.workspaces_dir / ticket_id).mkdir(parents=True, exist_ok=True)
        (settings.workspaces_dir / ticket_id / "release").touch()
    for ticket_id in ("b1", "b2", "b3", "u"):
        await events.wait_type(ticket_id, "ticket.done")
    assert _started(events) == ["b1", "u", "b2", "b3"]


async def test_raising_a_tickets_priority_moves_its_queued_task_ahead(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await _blocked_worker(bus, events, start_planner, start_worker)
    for ticket_id in ("a", "b", "late"):
        await _queue(bus, events, ticket_id)
    body = {"ticket_id": "late", "priority": "high", "reason": "customer waiting"}
    reply = await command(bus, c.CMD_TICKET_PRIORITY, body)
    assert reply["ok"], reply
    changed = await events.wait_type("late", "ticket.priority_changed")
    assert (changed.data["priority"], changed.data["was"]) == ("high", "normal")
    # Queued again in the urgent lane, as a new generation: its first dispatch is stale.
    requeued = await events.wait(
        lambda e: e.ticket_id == "late" and e.type == "task.queued" and e.data["generation"] == 1
    )
    assert requeued.data["priority"] == "high"
    assert requeued.task == "work"
    again = await command(bus, c.CMD_TICKET_PRIORITY, body)
    assert again["ok"], again  # the same answer, and nothing moves twice

    (settings.workspaces_dir / "busy" / "release").touch()
    for ticket_id in ("a", "b", "late"):
        await events.wait_type(ticket_id, "ticket.done")
    assert _started(events) == ["busy", "late", "a", "b"]
    late = await bus.tasks.value("late.work")
    assert late is not None
    assert (late.priority, late.generation, late.attempts) == ("high", 1, 1)
    ticket = await bus.tickets.value("late")
    assert ticket is not None and ticket.priority == "high"
    assert len(events.of("late", "ticket.priority_changed")) == 1


async def test_a_priority_that_is_not_one_is_refused(
    bus: Bus, events: EventLog, start_planner: Start
) -> None:
    await start_planner()
    reply = await command(bus, c.CMD_TICKET_PRIORITY, {"ticket_id": "x", "priority": "asap"})
    assert not reply["ok"] and reply["error"]["category"] == "invalid_command"
    missing = await command(bus, c.CMD_TICKET_PRIORITY, {"ticket_id": "x", "priority": "high"})
    assert not missing["ok"] and missing["error"]["category"] == "not_found"


async def test_a_starved_task_is_found_and_the_guardian_raises_its_ticket_until_undone(
    bus: Bus,
    monitor_bus: Bus,
    events: EventLog,
    settings: Settings,
    running: Running,
    start_planner: Start,
    start_worker: Start,
) -> None:
    fast = settings.model_copy(update={"anomaly_interval_s": 0.2, "anomaly_starved_s": 1.0})
    await _blocked_worker(bus, events, start_planner, start_worker)
    assert fast.nats_url
    own = await Bus.connect(fast.nats_url, name="g", credentials=fast.credentials("guardian"))
    operator = await Bus.connect(fast.nats_url, name="op", credentials=fast.credentials("operator"))
    try:
        await running.start(Guardian(own, fast))
        await _queue(bus, events, "slow")
        # Under its own identity: reading what waits in a lane is in the monitor's rights.
        await running.start(Monitor(monitor_bus, fast))

        detected = await events.wait(
            lambda e: e.type == "anomaly.detected" and e.data["kind"] == "starved"
        )
        found = Anomaly.model_validate(detected.data)
        assert (found.task, found.priority) == ("slow.work", "normal")
        assert found.consumer == c.task_consumer("design", "shell")
        assert found.observed >= 1000
        raised = await events.wait_type(AGENTS_TOKEN, "guardian.applied")
        iv = Intervention.model_validate(raised.data)
        assert (iv.kind, iv.target, iv.autonomous) == ("raise_priority", "slow", True)
        assert (iv.priority, iv.previous_priority) == ("high", "normal")
        await events.wait_type("slow", "ticket.priority_changed", priority="high")
        moved = await events.wait(
            lambda e: (
                e.ticket_id == "slow" and e.type == "task.queued" and e.data["generation"] == 1
            )
        )
        assert moved.data["priority"] == "high"

        request = InterventionRequest(id=iv.id, by="tester@host")
        raw = await operator.request(c.GUARDIAN_UNDO, request.to_json(), 10.0)
        reply = InterventionReply.model_validate_json(raw)
        assert reply.ok, reply.error
        back = await events.wait_type("slow", "ticket.priority_changed", priority="normal")
        assert back.data["was"] == "high"
        assert back.data["reason"] == f"guardian {iv.id} undone"
    finally:
        await running.stop_all()
        await own.close()
        await operator.close()
    ticket = await bus.tickets.value("slow")
    assert ticket is not None and ticket.priority == "normal"
    # One finding, one intervention: the task still waiting was not raised again.
    assert len(events.of(AGENTS_TOKEN, "guardian.applied")) == 1


async def test_a_task_consumer_from_before_lanes_is_narrowed_and_its_urgent_lane_made(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, running: Running
) -> None:
    # As an older Omoi made it: one consumer for every task of the pair.
    before = ConsumerConfig(
        durable_name=c.task_consumer("design", "legacy"),
        filter_subject="omoi.tasks.design.legacy.>",
        ack_policy=AckPolicy.EXPLICIT,
    )
    await bus.js.add_consumer(c.TASKS_STREAM, before)
    await start_planner()
    executors = {"legacy": ShellExecutor(dict(os.environ), settings)}
    await running.start(
        Worker(bus, settings, phases=["design"], capabilities=["legacy"], executors=executors)
    )
    for lane in c.LANES:
        info = await bus.js.consumer_info(c.TASKS_STREAM, c.task_consumer("design", "legacy", lane))
        assert info.config.filter_subjects == c.task_filters("design", "legacy", lane)
    spec = {"name": "work", "phase": "design", "capability": "legacy", "command": "true"}
    body = {"id": "up", "title": "upgraded", "priority": "high", "tasks": [spec]}
    assert (await submit(bus, body))["ok"]
    await events.wait_type("up", "ticket.done")


async def test_an_operator_sets_a_priority_over_http(
    api: httpx.AsyncClient, events: EventLog, start_planner: Start
) -> None:
    await start_planner()  # no worker: the ticket waits in its first phase
    for ticket_id in ("h1", "h2"):
        r = await api.post("/api/v1/tickets", json={"id": ticket_id, "title": ticket_id,
                                                      "tasks": graph("x")})  # fmt: skip
        assert r.status_code == 201
        await events.wait_type(ticket_id, "task.queued")
    raised = await api.post("/api/v1/tickets/h1/priority", json={"priority": "critical"})
    assert raised.status_code == 200 and raised.json()["ticket_id"] == "h1"
    changed = await events.wait_type("h1", "ticket.priority_changed")
    assert (changed.data["priority"], changed.data["was"]) == ("critical", "normal")
    assert changed.data["reason"] == "set via the HTTP API"
    assert_problem(await api.post("/api/v1/tickets/h1/priority", json={"priority": "asap"}), 422)
    assert (await api.post("/api/v1/tickets/h2/cancel")).status_code == 200
    await events.wait_type("h2", "ticket.cancelled")
    assert_problem(await api.post("/api/v1/tickets/h2/priority", json={"priority": "low"}), 409)
    assert_problem(await api.post("/api/v1/tickets/nope/priority", json={"priority": "low"}), 404)

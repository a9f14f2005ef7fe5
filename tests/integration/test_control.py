"""Timeouts, cancellation and manual phase moves."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agents.settings import Settings
from bus import Bus
from bus import constants as c
from tests.helpers import EventLog, gated, read_pid, stream_holds, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]

# A task that starts a grandchild and records both pids, then waits "forever".
TREE = "sleep 300 & echo $! > grandchild.pid; echo $$ > shell.pid; wait"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def command(bus: Bus, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    msg = await bus.nc.request(subject, json.dumps(body).encode(), timeout=10)
    return dict(json.loads(msg.data))


async def test_timeout_kills_the_process_tree_and_counts_as_retryable(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    spec = {"name": "hang", "phase": "design", "command": TREE, "timeout_s": 1, "max_retries": 1}
    assert (await submit(bus, {"id": "to", "title": "timeout", "tasks": [spec]}))["ok"]
    retrying = await events.wait_type("to", "task.retrying")
    assert retrying.data["error"]["category"] == "timeout"
    await events.wait_type("to", "ticket.failed")
    state = await bus.tasks.value("to.hang")
    assert state is not None
    assert [e.category for e in state.errors] == ["timeout", "timeout"]
    grandchild = await read_pid(settings.workspaces_dir / "to" / "grandchild.pid")
    assert not alive(grandchild)
    assert not (settings.workspaces_dir / "to" / ".omoi-tmp" / "hang-1").exists()


async def test_cancel_running_task_stops_it_within_two_seconds(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    tasks = [
        {"name": "long", "phase": "implementation", "command": TREE},
        {"name": "next", "phase": "implementation", "command": "true", "depends_on": ["long"]},
    ]
    assert (await submit(bus, {"id": "cx", "title": "cancel me", "tasks": tasks}))["ok"]
    await events.wait_type("cx", "task.started", task="long")
    ws = settings.workspaces_dir / "cx"
    shell, grandchild = await read_pid(ws / "shell.pid"), await read_pid(ws / "grandchild.pid")

    reply = await command(bus, c.CMD_TASK_CANCEL, {"task_id": "cx.long"})
    assert reply["ok"], reply
    await wait_until(lambda: _both_dead(shell, grandchild), timeout=2.0)

    await events.wait_type("cx", "task.cancelled", task="long")
    await events.wait_type("cx", "ticket.failed")
    nxt = await bus.tasks.value("cx.next")
    assert nxt is not None and nxt.status == "skipped"
    again = await command(bus, c.CMD_TASK_CANCEL, {"task_id": "cx.long"})
    assert not again["ok"]
    assert again["error"]["category"] == "already_finished"


async def _both_dead(*pids: int) -> bool:
    return not any(alive(p) for p in pids)


async def test_cancel_ticket_stops_running_and_drops_queued(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()  # one worker: whichever task it takes first, the other stays queued
    # Both would run "forever": the planner dispatches a phase's ready tasks concurrently,
    # so which one the worker gets first is not fixed, and neither may end on its own.
    tasks = [
        {"name": "a", "phase": "design", "command": TREE},
        {"name": "b", "phase": "design", "command": TREE},
        {"name": "c", "phase": "testing", "command": "true"},
    ]
    assert (await submit(bus, {"id": "tc", "title": "cancel ticket", "tasks": tasks}))["ok"]
    first = await events.wait_type("tc", "task.started")
    ws = settings.workspaces_dir / "tc"
    # Its shell has written its pid: cancelled before that, it would never write it.
    shell = await read_pid(ws / "shell.pid")
    reply = await command(bus, c.CMD_TICKET_CANCEL, {"ticket_id": "tc", "reason": "not needed"})
    assert reply["ok"], reply
    await events.wait_type("tc", "ticket.cancelled")
    for name in ("a", "b", "c"):
        state = await bus.tasks.value(f"tc.{name}")
        assert state is not None
        assert state.status == "cancelled", name
        assert state.reason == "not needed"
    await wait_until(lambda: _both_dead(shell), timeout=2.0)
    # The queued message is dropped, not run, once the freed worker gets to it.
    await wait_until(lambda: stream_holds(bus, c.TASKS_STREAM, 0))
    assert [e.task for e in events.of("tc", "task.started")] == [first.task]


async def test_manual_moves_follow_the_state_machine(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    tasks = [
        {"name": "req", "phase": "requirements", "command": "true"},
        {"name": "impl", "phase": "implementation", "command": "echo x >> impl.log"},
        {"name": "test", "phase": "testing", "command": "test -f impl.log"},
    ]
    assert (await submit(bus, {"id": "mv", "title": "moves", "tasks": tasks}))["ok"]
    await events.wait_type("mv", "task.queued", task="req")

    bad = await command(bus, c.CMD_TICKET_MOVE, {"ticket_id": "mv", "phase": "deployment"})
    assert not bad["ok"]
    assert bad["error"]["category"] == "invalid_transition"
    assert "requirements to deployment" in bad["error"]["message"]

    blocked = await command(bus, c.CMD_TICKET_MOVE, {"ticket_id": "mv", "phase": "blocked"})
    assert blocked["ok"], blocked
    await start_worker()
    await events.wait_type("mv", "task.succeeded", task="req")
    ticket = await bus.tickets.value("mv")
    assert ticket is not None and ticket.phase == "blocked"  # no progress while blocked
    # Blocked goes back where it was, or on past it; nowhere else.
    wrong = await command(bus, c.CMD_TICKET_MOVE, {"ticket_id": "mv", "phase": "testing"})
    assert not wrong["ok"]
    back = await command(bus, c.CMD_TICKET_MOVE, {"ticket_id": "mv", "phase": "requirements"})
    assert back["ok"], back
    await events.wait_type("mv", "task.succeeded", task="test")

    await events.wait_type("mv", "ticket.done")
    ticket = await bus.tickets.value("mv")
    assert ticket is not None
    hops = [(h.from_, h.to) for h in ticket.phase_history]
    assert hops[:2] == [("requirements", "blocked"), ("blocked", "requirements")]
    assert hops[-1] == ("deployment", "done")


async def test_testing_can_return_to_implementation(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    tasks = [
        {"name": "impl", "phase": "implementation", "command": "echo x >> impl.log"},
        {"name": "verify", "phase": "testing", "command": gated("verify")},
    ]
    assert (await submit(bus, {"id": "rw", "title": "rework", "tasks": tasks}))["ok"]
    await events.wait_type("rw", "task.started", task="verify")
    reply = await command(bus, c.CMD_TICKET_MOVE, {"ticket_id": "rw", "phase": "implementation"})
    assert reply["ok"], reply
    await events.wait(
        lambda e: e.ticket_id == "rw" and e.type == "task.started" and e.task == "verify"
        and e.id.endswith("g1.a1.task.started")
    )  # fmt: skip
    (settings.workspaces_dir / "rw" / "release").touch()
    await events.wait_type("rw", "ticket.done")
    assert (settings.workspaces_dir / "rw" / "impl.log").read_text().split() == ["x", "x"]
    ticket = await bus.tickets.value("rw")
    assert ticket is not None
    assert ("testing", "implementation") in [(h.from_, h.to) for h in ticket.phase_history]

"""Faults the engine must survive, with agents as real processes on a real server."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.settings import Settings
from bus import Bus
from schemas import TaskState
from tests.helpers import AgentProcess, EventLog, gated, read_pid, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


async def _pid_changed(path: Path, old: int) -> bool:
    return await read_pid(path) != old


def kill_group_of(pid_file: Path) -> None:
    """The host of a kill -9'd worker is gone too: so is the task's process group."""
    with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
        os.killpg(int(pid_file.read_text()), signal.SIGKILL)


async def test_worker_killed_mid_task_is_redelivered_and_reported_stale(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    procs: Callable[..., AgentProcess],
    start_planner: Start,
    start_monitor: Start,
) -> None:
    await start_planner()
    await start_monitor()
    doomed = await procs("worker", "worker-doomed").start(bus)
    tasks = [
        {"name": "work", "phase": "implementation", "command": gated("work")},
        {"name": "after", "phase": "testing", "command": "true"},
    ]
    assert (await submit(bus, {"id": "k9w", "title": "kill worker", "tasks": tasks}))["ok"]
    started = await events.wait_type("k9w", "task.started", task="work")
    assert started.agent == "worker-doomed"
    ws = settings.workspaces_dir / "k9w"
    first_pid = await read_pid(ws / "work.pid")
    await doomed.kill9()
    kill_group_of(ws / "work.pid")

    stale = await events.wait(lambda e: e.type == "agent.stale" and e.agent == "worker-doomed")
    assert stale.data["role"] == "worker"

    await procs("worker", "worker-rescue").start(bus)
    rerun = await events.wait(
        lambda e: e.type == "task.started" and e.task == "work" and e.agent == "worker-rescue"
    )
    assert rerun.data["attempt"] == 2
    await wait_until(lambda: _pid_changed(ws / "work.pid", first_pid))
    (ws / "release").touch()
    await events.wait_type("k9w", "ticket.done", timeout=30)
    work = await bus.tasks.value("k9w.work")
    assert work is not None
    assert work.status == "succeeded"
    assert work.attempts == 2
    assert work.errors[0].category == "worker_lost"
    for name in ("work", "after"):
        state = await bus.tasks.value(f"k9w.{name}")
        assert state is not None and state.status.terminal


async def test_planner_killed_mid_ticket_then_restarted_completes_without_reruns(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    procs: Callable[..., AgentProcess],
    start_worker: Start,
) -> None:
    await start_worker()
    await start_worker()
    first = await procs("planner", "planner-first").start(bus)
    tasks = [
        {"name": "a", "phase": "requirements", "command": "echo a >> runs.log"},
        {
            "name": "b",
            "phase": "design",
            "command": "echo b >> runs.log; " + gated("b"),
        },
        {"name": "c", "phase": "implementation", "command": "echo c >> runs.log"},
        {
            "name": "d",
            "phase": "implementation",
            "command": "echo d >> runs.log",
            "depends_on": ["c"],
        },
    ]
    assert (await submit(bus, {"id": "k9p", "title": "kill planner", "tasks": tasks}))["ok"]
    ws = settings.workspaces_dir / "k9p"
    await read_pid(ws / "b.pid")
    await first.kill9()
    (ws / "release").touch()
    await events.wait_type("k9p", "task.succeeded", task="b")
    c = await bus.tasks.value("k9p.c")
    assert c is not None and c.status == "blocked"  # nobody planned it yet

    await procs("planner", "planner-second").start(bus)
    await events.wait_type("k9p", "ticket.done", timeout=30)
    assert (ws / "runs.log").read_text().split() == ["a", "b", "c", "d"]
    for name in "abcd":
        assert len([e for e in events.of("k9p", "task.started") if e.task == name]) == 1
        state = await bus.tasks.value(f"k9p.{name}")
        assert state is not None and state.attempts == 1
    assert len(events.of("k9p", "ticket.created")) == 1


async def test_worker_that_loses_its_claim_leaves_the_message_for_the_new_owner(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    # Simulates a worker stalled past the ack wait: the server redelivered its message
    # and another worker (who then died too) took the task over.
    await start_planner()
    await start_worker()
    spec = {"name": "t", "phase": "design", "command": gated("t")}
    assert (await submit(bus, {"id": "stall", "title": "stall", "tasks": [spec]}))["ok"]
    ws = settings.workspaces_dir / "stall"
    first_pid = await read_pid(ws / "t.pid")

    def taken_over(t: TaskState) -> TaskState:
        t.worker = "someone-else"
        t.delivery += 1
        return t

    await bus.tasks.update("stall.t", taken_over)
    # Our worker notices, stops its process, and must not ack the message away: it is
    # redelivered and the task still completes.
    await wait_until(lambda: _pid_changed(ws / "t.pid", first_pid), timeout=30)
    (ws / "release").touch()
    await events.wait_type("stall", "ticket.done", timeout=30)
    state = await bus.tasks.value("stall.t")
    assert state is not None
    assert state.attempts == 2
    assert [e.category for e in state.errors] == ["worker_lost"]

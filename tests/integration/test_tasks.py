"""Dependencies, parallelism, retries and failure propagation on a real server."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agents.executors import ShellExecutor
from agents.settings import Settings
from agents.worker.agent import Worker
from bus import Bus
from bus import constants as c
from tests.helpers import EventLog, Running, gated, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


def task(name: str, phase: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "phase": phase, "command": command, **extra}


async def test_independent_tasks_run_in_parallel_on_different_workers(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    # Each task waits for the other's marker: they can only both finish if they overlap.
    rendezvous = (
        "touch {me}; for i in $(seq 200); do [ -f {other} ] && exit 0; sleep 0.05; done; exit 3"
    )
    await start_planner()
    a, b = await start_worker(), await start_worker()
    tasks = [
        task("left", "implementation", rendezvous.format(me="L", other="R"), max_retries=0),
        task("right", "implementation", rendezvous.format(me="R", other="L"), max_retries=0),
        task("join", "implementation", "test -f L && test -f R", depends_on=["left", "right"]),
    ]
    reply = await submit(bus, {"id": "par", "title": "parallel", "tasks": tasks})
    assert reply["ok"], reply
    await events.wait_type("par", "ticket.done")
    started = {e.task: e.agent for e in events.of("par", "task.started")}
    assert {started["left"], started["right"]} == {a.id, b.id}
    join_start = events.of("par", "task.started")[-1]
    assert join_start.task == "join"
    succeeded = [e.task for e in events.of("par", "task.succeeded")]
    assert succeeded.index("join") == 2


async def test_dependency_order_and_phase_gates(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    await start_worker()
    tasks = [
        task("deploy", "deployment", "echo deploy >> order.log", depends_on=["build"]),
        task("build", "implementation", "echo build >> order.log", depends_on=["spec"]),
        task("spec", "requirements", "echo spec >> order.log"),
        task("check", "testing", "echo check >> order.log"),
    ]
    reply = await submit(bus, {"id": "gates", "title": "gated", "tasks": tasks})
    assert reply["ok"], reply
    await events.wait_type("gates", "ticket.done")
    ticket = await bus.tickets.value("gates")
    assert ticket is not None
    reasons = [(h.from_, h.to, h.reason) for h in ticket.phase_history]
    assert ("design", "implementation", "design has no tasks") in reasons
    log = (settings.workspaces_dir / "gates" / "order.log").read_text().split()
    assert log == ["spec", "build", "check", "deploy"]


async def test_transient_failures_retry_with_backoff_then_succeed(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    flaky = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]"
    reply = await submit(
        bus, {"id": "flaky", "title": "flaky", "tasks": [task("f", "design", flaky)]}
    )
    assert reply["ok"]
    await events.wait_type("flaky", "ticket.done")
    state = await bus.tasks.value("flaky.f")
    assert state is not None
    assert state.status == "succeeded"
    assert state.attempts == 3
    assert [(e.attempt, e.category) for e in state.errors] == [(1, "exit_code"), (2, "exit_code")]
    retrying = events.of("flaky", "task.retrying")
    assert [e.data["attempt"] for e in retrying] == [1, 2]
    assert all(e.data["error"]["message"].startswith("exit code 1") for e in retrying)
    assert all(0 < e.data["delay_s"] <= 0.2 for e in retrying)


async def test_permanent_failure_does_not_retry_and_skips_dependents(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    tasks = [
        task("broken", "implementation", "no-such-command-anywhere"),
        task("after", "implementation", "true", depends_on=["broken"]),
        task("later", "testing", "true"),
    ]
    reply = await submit(bus, {"id": "perm", "title": "perm", "tasks": tasks})
    assert reply["ok"]
    failed = await events.wait_type("perm", "ticket.failed")
    assert "broken" in failed.data["reason"]
    broken = await bus.tasks.value("perm.broken")
    assert broken is not None
    assert broken.status == "failed"
    assert broken.attempts == 1
    assert broken.error is not None and broken.error.category == "invalid_spec"
    for name in ("after", "later"):
        state = await bus.tasks.value(f"perm.{name}")
        assert state is not None and state.status == "skipped"
    assert events.of("perm", "task.retrying") == []


async def test_exhausted_retries_fail_the_ticket_after_running_tasks_finish(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    await start_worker()
    tasks = [
        task("doomed", "design", "exit 2", max_retries=2),
        task("slow", "design", "for i in $(seq 100); do [ -f ../go ] && break; sleep 0.05; done"),
    ]
    reply = await submit(bus, {"id": "exh", "title": "exhaust", "tasks": tasks})
    assert reply["ok"]
    await events.wait_type("exh", "task.failed", task="doomed")
    ticket = await bus.tickets.value("exh")
    slow = await bus.tasks.value("exh.slow")
    assert ticket is not None and slow is not None
    if slow.status == "running":
        assert ticket.status == "running"
    (settings.workspaces_dir / "go").touch()
    await events.wait_type("exh", "ticket.failed")
    doomed = await bus.tasks.value("exh.doomed")
    assert doomed is not None
    assert doomed.attempts == 3
    assert [e.category for e in doomed.errors] == ["exit_code"] * 3


async def test_long_task_is_kept_alive_and_not_redelivered(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    # The task outlives the ack wait twice over; in_progress keeps it with its worker.
    assert settings.ack_wait_s == 2.0
    await start_planner()
    await start_worker()
    await start_worker()
    spec = task("long", "design", "sleep 5", max_retries=0)
    assert (await submit(bus, {"id": "alive", "title": "long", "tasks": [spec]}))["ok"]
    await events.wait_type("alive", "ticket.done")
    state = await bus.tasks.value("alive.long")
    assert state is not None
    assert state.attempts == 1
    assert state.errors == []
    assert len(events.of("alive", "task.started")) == 1


class LateKeepAlive(Worker):
    """Keeps its running task's message alive far too late, as a starved event loop or a
    reconnect longer than the ack wait would: the server redelivers it, to this worker."""

    @property
    def keep_alive_s(self) -> float:
        return 60.0


async def test_a_redelivery_to_the_worker_running_the_task_starts_no_second_attempt(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, running: Running
) -> None:
    await start_planner()
    executors = {"shell": ShellExecutor(dict(os.environ), settings)}
    # A free slot fetches the redelivery while the task runs (with one slot it comes
    # once the attempt's slot is released, while its outcome is being recorded).
    roomy = settings.model_copy(update={"worker_concurrency": 2})
    late = LateKeepAlive(bus, roomy, phases=["design"], capabilities=["shell"],
                         executors=executors)  # fmt: skip
    await running.start(late)
    spec = task("slow", "design", gated("slow"), max_retries=0)
    assert (await submit(bus, {"id": "late", "title": "late", "tasks": [spec]}))["ok"]
    await events.wait_type("late", "task.started")

    async def redelivered() -> bool:
        info = await bus.js.consumer_info(c.TASKS_STREAM, c.task_consumer("design", "shell"))
        return bool(info.num_redelivered)

    await wait_until(redelivered)
    (settings.workspaces_dir / "late" / "release").touch()
    await events.wait_type("late", "ticket.done")
    state = await bus.tasks.value("late.slow")
    assert state is not None and state.status.value == "succeeded"
    # Not counted as a lost worker, and not run a second time beside the first.
    assert (state.attempts, state.errors) == (1, [])
    assert len(events.of("late", "task.started")) == 1

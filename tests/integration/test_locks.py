"""Resource locks on a real server: exclusive claims never run at once, within a ticket
(the planner holds them back) or across tickets (the workers' leases in `omoi_locks`), and
a kill -9'd holder's lease runs out so its task completes elsewhere."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.executors import ShellExecutor
from agents.settings import Settings
from agents.validator.agent import Validator
from agents.worker.agent import Worker
from bus import Bus
from bus import constants as c
from schemas import TaskState, TaskStatus, TicketStatus
from schemas.lock import LockState
from tests.conftest import ALL_PHASES, agent_env
from tests.helpers import (
    AgentProcess,
    EventLog,
    Running,
    gated,
    read_pid,
    submit,
    ticket_finished,
    wait_until,
)

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


async def finished(bus: Bus, *ticket_ids: str) -> bool:
    return all([await ticket_finished(bus, t) is not None for t in ticket_ids])


def overlapping(tasks: list[TaskState]) -> list[tuple[str, str]]:
    spans = sorted((t.started_at, t.finished_at, t.id) for t in tasks)
    out = []
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        assert start is not None and end is not None
        if start < end:
            out.append((a, b))
    return out


async def test_exclusive_resources_never_overlap_within_or_across_tickets(
    bus: Bus, settings: Settings, running: Running, start_planner: Start
) -> None:
    fast = settings.model_copy(update={"worker_concurrency": 3})
    await start_planner()
    for n in range(2):
        await running.start(
            Worker(bus, fast, phases=ALL_PHASES, capabilities=["shell"],
                   executors={"shell": ShellExecutor(dict(os.environ), fast)},
                   agent_id=f"worker-{n}")
        )  # fmt: skip
    claimed = [
        {"name": f"m{i}", "phase": "implementation", "command": "sleep 0.2",
         "resources": ["db:migrations"]}
        for i in range(3)
    ]  # fmt: skip
    free = {"name": "free", "phase": "implementation", "command": "sleep 0.2"}
    for ticket_id in ("L1", "L2"):
        assert (await submit(bus, {"id": ticket_id, "title": "locks", "tasks": [*claimed, free]}))[
            "ok"
        ]
    await wait_until(lambda: finished(bus, "L1", "L2"), timeout=60)
    states = [
        await bus.tasks.value(f"{t}.{task['name']}") for t in ("L1", "L2") for task in claimed
    ]
    done = [s for s in states if s is not None and s.status is TaskStatus.SUCCEEDED]
    assert len(done) == 6
    assert overlapping(done) == []
    # The free tasks ran alongside: the workers were not serialised as a whole.
    frees = [await bus.tasks.value(f"{t}.free") for t in ("L1", "L2")]
    assert all(f is not None and f.status is TaskStatus.SUCCEEDED for f in frees)
    # Nothing is held once everything finished.
    locks = await bus.bucket(c.LOCKS_BUCKET, LockState)
    lock = await locks.value("named.db.migrations")
    assert lock is not None and lock.holders == [] and lock.fence >= 6


async def omoi_locks(env: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "omoi"), "locks", "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    found: dict[str, Any] = json.loads(out)
    return found


async def test_a_killed_holders_lease_runs_out_and_its_task_completes(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    procs: Callable[..., AgentProcess],
    start_planner: Start,
) -> None:
    short = settings.model_copy(update={"lock_ttl_s": 3.0})
    await start_planner()
    doomed = await procs("worker", "worker-doomed", short).start(bus)
    tasks = [
        {"name": "work", "phase": "implementation", "command": gated("work"),
         "resources": ["db:migrations"]},
        {"name": "other", "phase": "implementation", "command": "true",
         "resources": ["db:migrations"]},
    ]  # fmt: skip
    assert (await submit(bus, {"id": "k9l", "title": "kill holder", "tasks": tasks}))["ok"]
    await events.wait_type("k9l", "task.started", task="work")
    ws = settings.workspaces_dir / "k9l"
    await read_pid(ws / "work.pid")
    shown = await omoi_locks(agent_env(short))
    [held] = shown["locks"]
    assert held["key"] == "named.db.migrations"
    [holder] = held["holders"]
    assert (holder["task"], holder["worker"], holder["mode"]) == (
        "k9l.work",
        "worker-doomed",
        "exclusive",
    )
    assert [w["task"] for w in shown["waiting"]] == ["k9l.other"]
    first_token = holder["token"]

    await doomed.kill9()
    os.killpg(await read_pid(ws / "work.pid"), signal.SIGKILL)
    await procs("worker", "worker-rescue", short).start(bus)
    rerun = await events.wait(
        lambda e: e.type == "task.started" and e.task == "work" and e.agent == "worker-rescue",
        timeout=30,
    )
    assert rerun.data["attempt"] == 2
    locks = await bus.bucket(c.LOCKS_BUCKET, LockState)
    lock = await locks.value("named.db.migrations")
    assert lock is not None
    [taken] = lock.holders
    assert taken.worker == "worker-rescue" and taken.token > first_token
    (ws / "release").touch()
    ticket = await wait_until(lambda: ticket_finished(bus, "k9l"), timeout=30)
    assert ticket.status is TicketStatus.DONE, ticket.reason
    work = await bus.tasks.value("k9l.work")
    assert work is not None and work.attempts == 2
    assert work.errors[0].category == "worker_lost"


async def test_the_work_of_an_attempt_that_lost_its_lease_is_refused(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    running: Running,
    start_planner: Start,
    start_worker: Start,
) -> None:
    await start_planner()
    await start_worker()
    await running.start(Validator(bus, settings, env=dict(os.environ)))
    # The first attempt waits for the test; the retry goes straight through.
    command = f'[ "$OMOI_ATTEMPT" -gt 1 ] && echo again > again.txt || {{ {gated("work")}; }}'
    tasks = [{"name": "work", "phase": "implementation", "command": command,
              "resources": ["db:migrations"], "max_retries": 1}]  # fmt: skip
    gates = {"implementation": {"checks": [{"kind": "diff"}]}}  # a git ticket: it commits
    assert (await submit(bus, {"id": "fence", "title": "f", "tasks": tasks, "gates": gates}))["ok"]
    await events.wait_type("fence", "task.started", task="work")
    ws = settings.workspaces_dir / "fence"
    await read_pid(ws / "work.pid")
    # Another party took the lock over (as after a lease ran out): the token is gone.
    locks = await bus.bucket(c.LOCKS_BUCKET, LockState)

    def taken_over(lock: LockState) -> LockState:
        lock.fence += 1
        lock.holders = []
        return lock

    assert await locks.update("named.db.migrations", taken_over) is not None
    (ws / "release").touch()
    retrying = await events.wait_type("fence", "task.retrying", task="work")
    assert "lost its lease on named.db.migrations" in retrying.data["error"]["message"]
    assert "not committed" in retrying.data["error"]["message"]
    ticket = await wait_until(lambda: ticket_finished(bus, "fence"), timeout=30)
    assert ticket.status is TicketStatus.DONE, ticket.reason
    work = await bus.tasks.value("fence.work")
    assert work is not None and work.attempts == 2 and work.result is not None
    # Only the second attempt's work was committed and published.
    succeeded = events.of("fence", "task.succeeded")
    assert [e.data["commit"] for e in succeeded] == [work.result.commit]
    assert "again.txt" in work.result.files

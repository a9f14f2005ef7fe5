"""A ticket's workspace reaches whichever worker or validator takes the next step, with no
shared filesystem: every agent here has its own data dir, and the work travels only
through the `omoi_workspaces` object store."""

from __future__ import annotations

import os
import subprocess
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
from schemas import Phase, TaskState, TicketStatus
from schemas.ticket import GateStatus
from tests.helpers import (
    AgentProcess,
    EventLog,
    Running,
    stream_holds,
    submit,
    ticket_finished,
    wait_until,
)

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


def machine(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """Settings of an agent on a machine of its own: nothing on disk in common."""
    return settings.model_copy(update={"data_dir": tmp_path / "machines" / name})


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def start_worker_on(
    settings: Settings, tmp_path: Path, running: Running
) -> Callable[..., Awaitable[Worker]]:
    """An in-process worker with its own data dir and its own connection."""

    async def start(name: str, phases: list[str], **overrides: Any) -> Worker:
        own = machine(settings, tmp_path, name).model_copy(update=overrides)
        assert own.nats_url
        # Another machine holds only the worker's identity.
        bus = await Bus.connect(own.nats_url, name=name, credentials=settings.credentials("worker"))
        worker = Worker(
            bus,
            own,
            phases=phases,
            capabilities=["shell"],
            executors={"shell": ShellExecutor(dict(os.environ), own)},
            agent_id=name,
        )
        await running.start(worker)
        return worker

    return start


async def test_a_gated_ticket_crosses_machines_through_the_bucket(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    tmp_path: Path,
    procs: Callable[..., AgentProcess],
    start_planner: Start,
) -> None:
    await start_planner()
    machines = tmp_path / "machines"
    await procs("worker", "worker-impl").start(
        bus, "--phase", "implementation", "--data-dir", str(machines / "impl")
    )
    await procs("worker", "worker-test").start(
        bus, "--phase", "testing", "--data-dir", str(machines / "test")
    )
    await procs("validator", "validator-1").start(bus, "--data-dir", str(machines / "val"))
    payload = {
        "id": "X1",
        "title": "Across machines",
        "tasks": [
            {"name": "impl", "phase": "implementation",
             "command": "echo built by $OMOI_TASK > impl.txt"},
            {"name": "check", "phase": "testing", "depends_on": ["impl"],
             "command": "test -f impl.txt && cat impl.txt > seen.txt"},
        ],
        "gates": {
            "implementation": {"checks": [
                {"kind": "file", "path": "impl.txt", "contains": "built by impl"},
                {"kind": "diff"},
            ]},
            "testing": {"checks": [
                {"kind": "command", "command": "grep 'built by impl' seen.txt"},
            ]},
        },
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]
    done = await wait_until(lambda: ticket_finished(bus, "X1"), timeout=60)
    assert done.status is TicketStatus.DONE, done.reason

    impl, check = await bus.tasks.value("X1.impl"), await bus.tasks.value("X1.check")
    assert impl is not None and check is not None
    assert (impl.worker, check.worker) == ("worker-impl", "worker-test")
    assert check.attempts == 1  # it saw impl.txt the first time
    # The testing machine got the implementation's file from the bucket ...
    tester = machines / "test" / "workspaces" / "X1"
    assert (tester / "seen.txt").read_text() == "built by impl\n"
    assert git(tester, "log", "--format=%s").splitlines()[:2] == [
        "check: testing",
        "impl: implementation",
    ]
    # ... and the implementation machine never saw the testing phase's work.
    assert not (machines / "impl" / "workspaces" / "X1" / "seen.txt").exists()
    # Neither the validator nor the planner keeps a workspace.
    assert not (machines / "val" / "workspaces").exists()
    assert not settings.workspaces_dir.exists()

    # Each gate checked a commit out of the bucket, and the published head is the result.
    gates = done.gates
    assert gates[Phase.IMPLEMENTATION].status is GateStatus.PASSED
    assert gates[Phase.TESTING].status is GateStatus.PASSED
    assert impl.result is not None
    assert gates[Phase.IMPLEMENTATION].verdicts[-1].commit == impl.result.commit
    assert gates[Phase.TESTING].verdicts[-1].commit == done.commit
    published = await bus.workspaces.info(c.workspace_object("X1"))
    assert published is not None
    assert (
        published.headers[c.HDR_WORKSPACE_HEAD] == done.commit == git(tester, "rev-parse", "HEAD")
    )
    requested = events.of("X1", "gate.requested")
    assert requested and all("workspace" not in e.data for e in requested)


def release_file(barrier: Path, name: str) -> str:
    """Write `<name>.ready` in the test's barrier dir (outside every workspace), then wait
    for `<name>.go` there; the test decides who goes when."""
    return (
        f"touch {barrier}/{name}.ready; i=0; while [ ! -f {barrier}/{name}.go ]; do "
        "i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05; done"
    )


def parallel_ticket(ticket_id: str, barrier: Path, *, same_file: bool) -> dict[str, Any]:
    right_file = "left.txt" if same_file else "right.txt"
    return {
        "id": ticket_id,
        "title": "Parallel publishers",
        "gates": {"testing": {"checks": [{"kind": "diff"}]}},
        "tasks": [
            {"name": "left", "phase": "implementation",
             "command": release_file(barrier, "left") + "; echo left > left.txt"},
            {"name": "right", "phase": "implementation", "max_retries": 2,
             "command": release_file(barrier, "right") + f"; echo right >> {right_file}"},
            {"name": "both", "phase": "testing", "depends_on": ["left", "right"],
             "command": "cat left.txt right.txt 2>/dev/null > both.txt; cat left.txt"},
        ],
    }  # fmt: skip


async def test_parallel_tasks_commit_only_their_own_files_and_the_phase_merges_them(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    tmp_path: Path,
    start_planner: Start,
    start_worker_on: Callable[..., Awaitable[Worker]],
    running: Running,
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    await start_planner()
    await running.start(Validator(bus, machine(settings, tmp_path, "val"), env=dict(os.environ)))
    await start_worker_on("w1", ["implementation", "testing"])
    await start_worker_on("w2", ["implementation"])
    assert (await submit(bus, parallel_ticket("P1", barrier, same_file=False)))["ok"]
    # Both started from the same state, each on its own machine (one task at a time each).
    await wait_until(lambda: _exists(barrier / "left.ready", barrier / "right.ready"))
    (barrier / "left.go").touch()
    left = await events.wait_type("P1", "task.succeeded", task="left")
    (barrier / "right.go").touch()
    right = await events.wait_type("P1", "task.succeeded", task="right")

    done = await wait_until(lambda: ticket_finished(bus, "P1"), timeout=60)
    assert done.status is TicketStatus.DONE, done.reason
    assert left.agent != right.agent
    # Each task's commit holds its own file only, on its own branch from the same start.
    assert (left.data["files"], right.data["files"]) == (["left.txt"], ["right.txt"])
    merge = await bus.tasks.value("P1.merge-implementation")
    assert merge is not None and merge.result is not None and merge.is_merge
    assert sorted(merge.base) == sorted([left.data["commit"], right.data["commit"]])
    copy = machine(settings, tmp_path, "w1").workspaces_dir / "P1"
    merged = merge.result.commit
    assert merged is not None
    parents = git(copy, "rev-parse", f"{merged}^1", f"{merged}^2").split()
    assert sorted(parents) == sorted([left.data["commit"], right.data["commit"]])
    stat = git(copy, "log", "--stat", "--format=%s", merged)
    assert "left: implementation\n\n left.txt | 1 +" in stat
    assert "right: implementation\n\n right.txt | 1 +" in stat
    assert git(copy, "rev-parse", "omoi/task/left", "omoi/task/right").split() == [
        left.data["commit"],
        right.data["commit"],
    ]
    # The testing task started from the merge, and the gate checked what it committed.
    both = await bus.tasks.value("P1.both")
    assert both is not None and both.base == [merged] and both.result is not None
    assert both.result.output_tail.strip() == "left"
    assert done.gates[Phase.TESTING].verdicts[-1].commit == done.commit == both.result.commit
    assert git(copy, "show", f"{done.commit}:both.txt") == "left\nright"


async def test_a_merge_conflict_is_an_event_and_fails_clearly_when_the_ticket_says_so(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    tmp_path: Path,
    start_planner: Start,
    start_worker_on: Callable[..., Awaitable[Worker]],
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    await start_planner()
    await start_worker_on("w1", ["implementation", "testing"])
    await start_worker_on("w2", ["implementation"])
    payload = {**parallel_ticket("P2", barrier, same_file=True), "on_conflict": "fail"}
    assert (await submit(bus, payload))["ok"]
    await wait_until(lambda: _exists(barrier / "left.ready", barrier / "right.ready"))
    (barrier / "left.go").touch()
    (barrier / "right.go").touch()

    conflicted = await events.wait_type("P2", "merge.conflicted", task="merge-implementation")
    assert conflicted.data["files"] == ["left.txt"]
    hunk = conflicted.data["hunks"]["left.txt"]
    assert "left" in hunk and "right" in hunk and "<<<<<<<" in hunk
    done = await wait_until(lambda: ticket_finished(bus, "P2"), timeout=60)
    assert done.status is TicketStatus.FAILED
    assert done.reason == "task merge-implementation failed or was cancelled"
    merge = await bus.tasks.value("P2.merge-implementation")
    assert merge is not None and merge.error is not None
    assert merge.error.category == "merge_conflict" and merge.attempts == 1
    assert "conflicts in left.txt" in merge.error.message
    # Both tasks succeeded, each with its own commit: nothing was retried or lost.
    for name in ("left", "right"):
        task = await bus.tasks.value(f"P2.{name}")
        assert task is not None and task.attempts == 1 and task.result is not None
        assert task.result.files == ["left.txt"]


async def test_a_task_whose_base_is_gone_fails_once_with_a_dead_letter(
    bus: Bus,
    events: EventLog,
    start_planner: Start,
    start_worker_on: Callable[..., Awaitable[Worker]],
) -> None:
    await start_planner()
    await start_worker_on("w1", ["implementation"])
    payload = {
        "id": "P5",
        "title": "A vanished base",
        "gates": {"testing": {"checks": [{"kind": "diff"}]}},
        "tasks": [
            {"name": "first", "phase": "implementation", "command": "echo a > a.txt"},
            {"name": "then", "phase": "testing", "depends_on": ["first"], "command": "cat a.txt"},
        ],
    }
    assert (await submit(bus, payload))["ok"]
    await events.wait_type("P5", "task.queued", task="then")
    # As if the branch it starts from had been replaced (a bundle restored from before it).
    gone = "deadbeef" * 5

    def replaced(t: TaskState) -> TaskState:
        t.base = [gone]
        return t

    await bus.tasks.update("P5.then", replaced)
    await start_worker_on("w2", ["testing"])

    failed = await events.wait_type("P5", "task.failed", task="then")
    assert failed.data["error"]["category"] == "missing_branch"
    assert (
        "lacks commit deadbeefdead, which task then starts from"
        in (failed.data["error"]["message"])
    )
    then = await bus.tasks.value("P5.then")
    assert then is not None and then.attempts == 1
    done = await wait_until(lambda: ticket_finished(bus, "P5"), timeout=30)
    assert done.status is TicketStatus.FAILED
    await wait_until(lambda: stream_holds(bus, c.DLQ_STREAM, 1))
    dead = await bus.js.get_last_msg(c.DLQ_STREAM, c.dlq_subject("tasks"))
    assert dead.headers is not None
    assert dead.headers[c.HDR_ERROR_CATEGORY] == "missing_branch"
    assert "lacks commit deadbeefdead" in dead.headers[c.HDR_REASON]
    await wait_until(lambda: stream_holds(bus, c.TASKS_STREAM, 0))


async def _exists(*paths: Path) -> bool:
    return all(p.exists() for p in paths)


async def test_workers_sharing_a_data_dir_share_the_copy_without_losing_work(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    running: Running,
    start_planner: Start,
    start_worker: Start,
) -> None:
    # `omoi up --workers 2`: two processes, one data dir, tasks of a phase at once.
    await start_planner()
    await running.start(Validator(bus, settings, env=dict(os.environ)))
    await start_worker()
    await start_worker()
    writers = [
        {"name": f"w{i}", "phase": "implementation", "command": f"sleep 0.3; echo {i} > w{i}.txt"}
        for i in range(4)
    ]
    payload = {
        "id": "S1",
        "title": "Shared copy",
        "gates": {"implementation": {"checks": [{"kind": "glob", "path": "w*.txt"}]}},
        "tasks": [
            *writers,
            {"name": "all", "phase": "testing", "depends_on": [w["name"] for w in writers],
             "command": "cat w0.txt w1.txt w2.txt w3.txt"},
        ],
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]
    done = await wait_until(lambda: ticket_finished(bus, "S1"), timeout=60)
    assert done.status is TicketStatus.DONE, done.reason
    every = await bus.tasks.value("S1.all")
    assert every is not None and every.result is not None
    assert every.result.output_tail.split() == ["0", "1", "2", "3"]
    files = set(done.gates[Phase.IMPLEMENTATION].verdicts[-1].checks[0].files)
    assert files == {"w0.txt", "w1.txt", "w2.txt", "w3.txt"}
    assert len({e.agent for e in events.of("S1", "task.started")}) == 2

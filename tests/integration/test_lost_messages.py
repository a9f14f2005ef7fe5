"""No state without its message: work whose message is gone gets a new one, and a worker
that finished a task records it through an outage instead of running it again."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.settings import Settings
from agents.validator.agent import Validator
from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from tests.helpers import EventLog, Running, gated, read_pid, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Restore what has been missing for a second; the sweep runs every second.
    return settings.model_copy(update={"lost_message_after_s": 1.0})


async def task_messages(bus: Bus) -> dict[str, int]:
    return await bus.live_subjects(c.TASKS_STREAM, c.TASKS_SUBJECTS)


def counting(name: str, runs: Path) -> str:
    return f"echo {name} >> {runs}"


async def test_a_dispatch_that_never_reached_the_stream_is_sent_again(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    running: Running,
    start_worker: Start,
    tmp_path: Path,
) -> None:
    from agents.planner.agent import Planner

    # The planner's own connection gives up on a publish after a second, as one would
    # after a longer outage: its queued write is then left without a dispatch.
    assert settings.nats_url
    impatient = await Bus.connect(
        settings.nats_url,
        name="impatient",
        patience_s=1.0,
        credentials=settings.credentials("planner"),
    )
    try:
        await running.start(Planner(impatient, settings))
        # Only the requirements phase can be stored: the work subject of design is gone.
        info = await bus.admin.stream_info(c.TASKS_STREAM)
        narrowed = dataclasses.replace(info.config, subjects=["omoi.tasks.requirements.>"])
        await bus.admin.update_stream(narrowed)
        runs = tmp_path / "runs.log"
        tasks = [{"name": "d", "phase": "design", "command": counting("d", runs)}]
        assert (await submit(bus, {"id": "nodisp", "title": "no dispatch", "tasks": tasks}))["ok"]

        # The sweep finds the task queued with no message, and queues it again (whose
        # dispatch fails too while the subject is gone).
        requeued = await events.wait_type("nodisp", "task.requeued", task="d")
        assert requeued.data["was"] == "queued"
        assert not await task_messages(bus)
        await bus.admin.update_stream(info.config)  # the stream takes the subject again
        await start_worker()
        await events.wait_type("nodisp", "ticket.done")
        assert runs.read_text().split() == ["d"]
        task = await bus.tasks.value("nodisp.d")
        assert task is not None and task.attempts == 1 and not task.errors
    finally:
        await running.stop_all()
        await impatient.close()


async def test_a_running_task_whose_message_vanished_runs_again(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    start_planner: Start,
    start_worker: Start,
) -> None:
    await start_planner()
    await start_worker()
    spec = {"name": "t", "phase": "implementation", "command": gated("t")}
    assert (await submit(bus, {"id": "vanish", "title": "vanished", "tasks": [spec]}))["ok"]
    ws = settings.workspaces_dir / "vanish"
    first = await read_pid(ws / "t.pid")
    # The message under the running attempt is gone (a lost disk, an operator's purge).
    await bus.admin.purge_stream(c.TASKS_STREAM, subject=c.TASKS_SUBJECTS)
    requeued = await events.wait_type("vanish", "task.requeued", task="t")
    assert requeued.data["was"] == "running"

    async def restarted() -> bool:
        return await read_pid(ws / "t.pid") != first

    await wait_until(restarted)
    (ws / "release").touch()
    await events.wait_type("vanish", "ticket.done")
    task = await bus.tasks.value("vanish.t")
    assert task is not None and task.status == "succeeded" and task.attempts == 2
    assert [e.category for e in task.errors] == ["worker_lost"]
    assert "message" in task.errors[0].message


async def test_a_pending_gate_whose_request_vanished_is_asked_again(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    running: Running,
    start_planner: Start,
    start_worker: Start,
) -> None:
    await start_planner()
    await start_worker()
    payload = {
        "id": "nogate",
        "title": "lost gate request",
        "tasks": [{"name": "n", "phase": "requirements", "command": "echo n > notes.md"}],
        "gates": {"requirements": {"checks": [{"kind": "file", "path": "notes.md"}]}},
    }
    assert (await submit(bus, payload))["ok"]
    await events.wait_type("nogate", "gate.requested")
    # No validator yet; the request is lost before one comes.
    await bus.admin.purge_stream(c.GATES_STREAM)

    async def resent() -> bool:
        ticket = await bus.tickets.value("nogate")
        return ticket is not None and ticket.gates["requirements"].resent == 1

    await wait_until(resent)
    await running.start(Validator(bus, settings, env=dict(os.environ)))
    passed = await events.wait_type("nogate", "gate.passed")
    assert passed.data["attempt"] == 1
    await events.wait_type("nogate", "ticket.done")


async def test_a_finished_task_is_recorded_through_a_server_restart_not_run_again(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    nats_server: EmbeddedNatsServer,
    start_planner: Start,
    start_worker: Start,
    tmp_path: Path,
) -> None:
    await start_planner()
    await start_worker()
    runs = tmp_path / "runs.log"
    tasks = [
        {"name": "t", "phase": "implementation", "command": f"({gated('t')}) && echo t >> {runs}"},
        {"name": "u", "phase": "testing", "command": counting("u", runs)},
    ]
    assert (await submit(bus, {"id": "outage", "title": "outage", "tasks": tasks}))["ok"]
    ws = settings.workspaces_dir / "outage"
    await read_pid(ws / "t.pid")
    await nats_server.kill()
    await wait_until(lambda: _disconnected(bus))
    # The task finishes while the server is down; the worker must hold on to its outcome.
    (ws / "release").touch()
    await wait_until(lambda: _has_line(runs, "t"))
    await nats_server.start()
    await events.wait_type("outage", "ticket.done", timeout=60)
    assert runs.read_text().split() == ["t", "u"]
    task = await bus.tasks.value("outage.t")
    assert task is not None and task.attempts == 1 and not task.errors


async def _has_line(path: Path, line: str) -> bool:
    return path.exists() and line in path.read_text().split()


async def _disconnected(bus: Bus) -> bool:
    return not bus.connected

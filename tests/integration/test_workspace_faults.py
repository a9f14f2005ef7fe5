"""A published workspace that is missing or damaged: the worker's attempt fails as a
transient `workspace` failure with the reason, and the validator fails the gate with it."""

from __future__ import annotations

import os
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
from schemas import Phase, TicketStatus
from schemas.gate import CheckSpec, GateRequest, GateSpec
from tests.helpers import EventLog, Running, submit, ticket_finished, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


def own_machine(settings: Settings, tmp_path: Path, name: str) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "machines" / name})


async def start_worker_on(
    bus: Bus, settings: Settings, running: Running, name: str, phases: list[str]
) -> Worker:
    worker = Worker(
        bus,
        settings,
        phases=phases,
        capabilities=["shell"],
        executors={"shell": ShellExecutor(dict(os.environ), settings)},
        agent_id=name,
    )
    await running.start(worker)
    return worker


def two_phase_ticket(ticket_id: str) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "title": "Damaged workspace",
        # A gate makes the workspace a git one; the ticket fails before it is asked.
        "gates": {"testing": {"checks": [{"kind": "diff"}]}},
        "tasks": [
            {"name": "impl", "phase": "implementation", "command": "echo built > impl.txt"},
            {"name": "check", "phase": "testing", "depends_on": ["impl"], "max_retries": 1,
             "command": "test -f impl.txt"},
        ],
    }  # fmt: skip


async def delete_object(bus: Bus, name: str, scratch: Path) -> None:
    store = await bus.js.object_store(c.WORKSPACES_BUCKET)
    await store.delete(name)


async def replace_with_garbage(bus: Bus, name: str, scratch: Path) -> None:
    current = await bus.workspaces.info(name)
    assert current is not None
    junk = scratch / "junk"
    junk.write_bytes(os.urandom(3000))
    await bus.workspaces.put(name, junk, headers=current.headers, replacing=current)


async def change_a_chunk(bus: Bus, name: str, scratch: Path) -> None:
    current = await bus.workspaces.info(name)
    assert current is not None and current.chunks == 1
    stream, subject = bus.workspaces.stream, bus.workspaces.chunk_subject(current.nuid)
    chunk = await bus.js.get_msg(stream, seq=1, subject=subject, next=True)
    await bus.js.delete_msg(stream, chunk.seq or 0)
    await bus.js.publish(subject, bytes(b ^ 0x01 for b in chunk.data or b""))


async def name_another_head(bus: Bus, name: str, scratch: Path) -> None:
    current = await bus.workspaces.get(name, scratch / "real.bundle")
    headers = {**current.headers, c.HDR_WORKSPACE_HEAD: "f" * 40}
    await bus.workspaces.put(name, scratch / "real.bundle", headers=headers, replacing=current)


DAMAGE = {
    "missing object": (delete_object, "is missing, though its task impl committed"),
    "corrupt bundle": (replace_with_garbage, "is not a readable git bundle"),
    "digest mismatch": (change_a_chunk, "digest mismatch"),
    "head not in the bundle": (name_another_head, "not its head ffffffffffff"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_a_damaged_workspace_fails_the_next_attempt_as_transient_with_the_reason(
    damage: str,
    bus: Bus,
    events: EventLog,
    settings: Settings,
    tmp_path: Path,
    running: Running,
    start_planner: Start,
) -> None:
    harm, reason = DAMAGE[damage]
    await start_planner()
    builder = own_machine(settings, tmp_path, "builder")
    await start_worker_on(bus, builder, running, "builder", ["implementation"])
    assert (await submit(bus, two_phase_ticket("D1")))["ok"]
    await events.wait_type("D1", "task.succeeded", task="impl")
    await harm(bus, c.workspace_object("D1"), tmp_path)

    tester = own_machine(settings, tmp_path, "tester")
    await start_worker_on(bus, tester, running, "tester", ["testing"])
    retrying = await events.wait_type("D1", "task.retrying", task="check")
    assert retrying.data["error"]["category"] == "workspace"
    assert reason in retrying.data["error"]["message"]
    done = await wait_until(lambda: ticket_finished(bus, "D1"), timeout=30)
    assert done.status is TicketStatus.FAILED
    check = await bus.tasks.value("D1.check")
    assert check is not None and check.attempts == 2
    assert [e.category for e in check.errors] == ["workspace", "workspace"]
    assert all(reason in e.message for e in check.errors)
    # Nothing ran on a workspace that was not the ticket's.
    assert not (tester.workspaces_dir / "D1" / "impl.txt").exists()


async def test_a_copy_that_holds_all_the_work_publishes_a_lost_object_again(
    bus: Bus, events: EventLog, settings: Settings, running: Running, start_planner: Start
) -> None:
    await start_planner()
    await start_worker_on(bus, settings, running, "only", ["implementation", "testing"])
    ticket = two_phase_ticket("D2")
    ticket["tasks"][1]["command"] = "test -f impl.txt && echo checked > check.txt"
    assert (await submit(bus, ticket))["ok"]
    await events.wait_type("D2", "task.succeeded", task="impl")
    await delete_object(bus, c.workspace_object("D2"), settings.data_dir)
    # The testing task may already be past its pull; either way the ticket finishes and
    # the object is back, holding the testing task's commit.
    checked = await events.wait_type("D2", "task.succeeded", task="check")
    published = await bus.workspaces.info(c.workspace_object("D2"))
    assert published is not None
    assert published.headers[c.HDR_WORKSPACE_HEAD] == checked.data["commit"]


def gate_request(ticket_id: str, commit: str | None) -> GateRequest:
    return GateRequest(
        ticket_id=ticket_id,
        phase=Phase.TESTING,
        attempt=1,
        commit=commit,
        spec=GateSpec(checks=[CheckSpec(kind="diff")]),
    )


async def test_the_validator_fails_a_gate_whose_workspace_cannot_be_had(
    bus: Bus, events: EventLog, settings: Settings, tmp_path: Path, running: Running
) -> None:
    validator = own_machine(settings, tmp_path, "val")
    await running.start(Validator(bus, validator, env=dict(os.environ)))

    # Nothing published for the ticket.
    request = gate_request("V1", "a" * 40)
    await bus.enqueue(c.gate_subject("testing", "V1"), request.to_json(), "gate.V1", "V1")
    failed = await events.wait_type("V1", "gate.failed")
    assert "could not be checked out" in failed.data["feedback"]
    assert "omoi_workspaces/V1.bundle does not exist" in failed.data["feedback"]

    # Garbage where the bundle should be.
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a bundle")
    headers = {c.HDR_WORKSPACE_HEAD: "b" * 40}
    await bus.workspaces.put(c.workspace_object("V2"), junk, headers=headers, replacing=None)
    request = gate_request("V2", "b" * 40)
    await bus.enqueue(c.gate_subject("testing", "V2"), request.to_json(), "gate.V2", "V2")
    failed = await events.wait_type("V2", "gate.failed")
    assert "is not a readable git bundle" in failed.data["feedback"]
    assert not failed.data["checks"]  # no check ran on anything else

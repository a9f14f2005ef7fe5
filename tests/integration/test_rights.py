"""Who may run what: shell commands, gate commands and local repositories are a right the
trusted intake subject grants and the plain one does not; the validator only ever uses
workspaces Omoi published."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.settings import Settings
from agents.validator.agent import Validator
from bus import Bus
from bus import constants as c
from bus.topology import provision, stream_configs
from gateway.problems import ApiProblem
from gateway.submit import submit as gateway_submit
from schemas import Phase
from schemas.gate import CheckSpec, GateRequest, GateSpec
from tests.helpers import (
    EventLog,
    Running,
    publish_workspace,
    stream_holds,
    submit,
    ticket_finished,
    wait_until,
)

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]

SHELL = [{"name": "build", "phase": "implementation", "command": "echo built > built.txt"}]
NOOP = [{"name": "plan", "phase": "design", "capability": "noop"}]
GATE_CMD = {"design": {"checks": [{"kind": "command", "command": "true", "name": "ok"}]}}

PRIVILEGED = [
    pytest.param({"tasks": SHELL}, "shell commands (task 'build')", id="shell-task"),
    pytest.param(
        {"tasks": NOOP, "gates": GATE_CMD}, "gate commands (the design gate's", id="gate-command"
    ),
    pytest.param(
        {"tasks": NOOP, "repository": "/etc"},
        "a local repository (repository '/etc')",
        id="local-repo",
    ),
]


async def dead_letters(bus: Bus) -> list[Any]:
    info = await bus.js.stream_info(c.DLQ_STREAM)
    if not info.state.messages:
        return []
    first, last = info.state.first_seq, info.state.last_seq
    return [await bus.js.get_msg(c.DLQ_STREAM, seq) for seq in range(first, last + 1)]


@pytest.mark.parametrize(("fields", "what"), PRIVILEGED)
async def test_a_plain_submission_may_not_ask_for_privileged_things(
    bus: Bus, events: EventLog, start_planner: Start, fields: dict[str, Any], what: str
) -> None:
    await start_planner()
    payload = {"id": "P1", "title": "asks too much", **fields}

    reply = await submit(bus, payload, trusted=False)
    assert reply["ok"] is False, reply
    assert reply["error"]["category"] == "forbidden"
    assert what in reply["error"]["message"]
    assert c.TRUSTED_SUBMIT_SUBJECT in reply["error"]["message"]

    rejected = await events.wait_type("P1", "ticket.rejected")
    assert rejected.data["error"]["category"] == "forbidden"
    assert rejected.data["subject"] == c.SUBMIT_SUBJECT
    (entry,) = await wait_until(lambda: dead_letters(bus))
    assert json.loads(entry.data) == payload
    assert entry.headers is not None
    assert entry.headers[c.HDR_ERROR_CATEGORY] == "forbidden"
    assert what in entry.headers[c.HDR_REASON]
    assert entry.headers[c.HDR_ORIGIN_SUBJECT] == c.SUBMIT_SUBJECT
    assert await bus.tickets.value("P1") is None

    # The same payload from a trusted client is a ticket.
    accepted = await submit(bus, payload)
    assert accepted["ok"] is True, accepted
    await events.wait_type("P1", "ticket.created")
    assert await bus.tickets.value("P1") is not None


async def test_the_gateway_submits_with_or_without_the_right(
    bus: Bus, events: EventLog, start_planner: Start
) -> None:
    await start_planner()
    body = json.dumps({"id": "G1", "title": "gateway", "tasks": SHELL}).encode()
    with pytest.raises(ApiProblem) as info:
        await gateway_submit(bus, "G1", body, 10.0, trusted=False)
    assert info.value.status_code == 403 and info.value.kind == "forbidden"
    assert "shell commands" in str(info.value.detail)
    accepted = await gateway_submit(bus, "G1", body, 10.0, trusted=True)
    assert accepted.status == "accepted"
    await events.wait_type("G1", "ticket.created")


async def test_a_plain_submission_may_name_a_remote_repository(
    bus: Bus, events: EventLog, start_planner: Start
) -> None:
    await start_planner()  # no worker: nothing is cloned
    remote = {"id": "P4", "title": "remote", "tasks": NOOP, "repository": "https://x.test/r"}
    remote["deliver"] = False  # reading it is no right; pushing to it is one
    assert (await submit(bus, remote, trusted=False))["ok"]
    await events.wait_type("P4", "ticket.created")
    ticket = await bus.tickets.value("P4")
    assert ticket is not None and ticket.repository == "https://x.test/r"


async def test_a_plain_ticket_runs_including_its_workflows_commands(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker(capabilities=("shell", "noop"))
    # Explicit tasks without commands, and a workflow whose commands are the operator's.
    assert (await submit(bus, {"id": "P2", "title": "plain", "tasks": NOOP}, trusted=False))["ok"]
    templated = {"id": "P3", "title": "templated", "workflow": "default"}
    assert (await submit(bus, templated, trusted=False))["ok"]
    for ticket_id in ("P2", "P3"):
        done = await wait_until(lambda: ticket_finished(bus, ticket_id), timeout=30)  # noqa: B023
        assert done.status == "done", done.reason
    assert (await bus.tasks.value("P3.requirements")).result.exit_code == 0  # type: ignore[union-attr]


async def test_provisioning_adds_the_trusted_subject_to_an_existing_intake_stream(
    bus: Bus,
) -> None:
    """A deployment from before the trusted subject keeps its stream and what is in it."""
    (intake,) = [s for s in stream_configs(Settings().topology()) if s.name == c.INTAKE_STREAM]
    await bus.js.delete_stream(c.INTAKE_STREAM)
    await bus.js.add_stream(dataclasses.replace(intake, subjects=[c.SUBMIT_SUBJECT]))
    await bus.nc.publish(c.SUBMIT_SUBJECT, b'{"title": "waiting"}')
    await wait_until(lambda: stream_holds(bus, c.INTAKE_STREAM, 1))

    await provision(bus.js, Settings().topology())
    info = await bus.js.stream_info(c.INTAKE_STREAM)
    assert set(info.config.subjects or []) == {c.SUBMIT_SUBJECT, c.TRUSTED_SUBMIT_SUBJECT}
    assert info.state.messages == 1
    await bus.nc.publish(c.TRUSTED_SUBMIT_SUBJECT, b'{"title": "trusted"}')
    await wait_until(lambda: stream_holds(bus, c.INTAKE_STREAM, 2))


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", "first")
    return path


async def test_a_gate_request_naming_another_repository_never_uses_it(
    bus: Bus, events: EventLog, settings: Settings, tmp_path: Path, running: Running
) -> None:
    await running.start(Validator(bus, settings, env=dict(os.environ)))
    elsewhere = repo(tmp_path / "elsewhere", {"SECRET.txt": "not Omoi's\n"})
    published = await publish_workspace(bus, "V3", repo(tmp_path / "v3", {"a.txt": "a\n"}))
    spec = GateSpec(checks=[CheckSpec(kind="file", path="SECRET.txt")])

    async def request_gate(ticket_id: str, commit: str | None) -> dict[str, Any]:
        body = GateRequest(
            ticket_id=ticket_id, phase=Phase.DESIGN, attempt=1, commit=commit, spec=spec
        ).model_dump(mode="json")
        # What an older (or forged) request carried: a path on the validator's disk.
        body["workspace"] = str(elsewhere)
        subject = c.gate_subject("design", ticket_id)
        await bus.enqueue(subject, json.dumps(body).encode(), f"gate.{ticket_id}", ticket_id)
        return (await events.wait_type(ticket_id, "gate.failed")).data

    # The check ran on the published workspace, which has no SECRET.txt.
    verdict = await request_gate("V3", published)
    assert verdict["commit"] == published
    assert verdict["checks"][0]["detail"] == "SECRET.txt does not exist"
    # Without a published workspace nothing is checked at all, the path notwithstanding.
    verdict = await request_gate("V4", None)
    assert "could not be checked out" in verdict["feedback"]
    assert verdict["checks"] == []
    assert "not Omoi's" not in json.dumps([e.model_dump(mode="json") for e in events.events])

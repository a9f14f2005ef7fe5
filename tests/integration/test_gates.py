"""Gates without a model: shell tasks, a validator, and an operator releasing a block."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from agents.settings import Settings
from agents.validator.agent import Validator
from bus import Bus
from bus import constants as c
from schemas import Phase, TicketStatus
from schemas.ticket import GateStatus
from tests.helpers import EventLog, Running, submit, ticket_finished, wait_until

pytestmark = pytest.mark.integration

OMOI = str(Path(sys.executable).parent / "omoi")
Start = Callable[..., Awaitable[Any]]


async def command(bus: Bus, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    msg = await bus.nc.request(subject, json.dumps(body).encode(), timeout=10)
    return dict(json.loads(msg.data))


def ticket_payload(ticket_id: str) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "title": "Gated",
        "max_gate_attempts": 1,
        "tasks": [
            {"name": "notes", "phase": "requirements", "command": "echo draft > notes.md"},
            {"name": "build", "phase": "implementation", "command": "echo x > build.txt",
             "depends_on": ["notes"]},
        ],
        "gates": {
            "requirements": {"checks": [{"kind": "file", "path": "docs/requirements.md"}]},
            "implementation": {"checks": [{"kind": "glob", "path": "*.txt"}, {"kind": "diff"}]},
        },
    }  # fmt: skip


async def test_failed_gate_blocks_until_an_operator_moves_the_ticket(
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
    assert (await submit(bus, ticket_payload("G1")))["ok"]

    failed = await events.wait_type("G1", "gate.failed")
    check = failed.data["checks"][0]
    assert not check["passed"] and "docs/requirements.md does not exist" in check["detail"]
    blocked = await events.wait_type("G1", "ticket.blocked")
    assert "requirements gate failed 1 times" in blocked.data["reason"]
    ticket = await bus.tickets.value("G1")
    assert ticket is not None and ticket.phase is Phase.BLOCKED
    assert ticket.blocked_from is Phase.REQUIREMENTS
    assert ticket.gates[Phase.REQUIREMENTS].status is GateStatus.FAILED
    # Nothing moved on while blocked.
    build = await bus.tasks.value("G1.build")
    assert build is not None and build.status == "blocked"

    # Back into the phase: the gate gets fresh attempts, fails again, blocks again.
    back = await command(bus, c.CMD_TICKET_MOVE, {"ticket_id": "G1", "phase": "requirements"})
    assert back["ok"], back
    await events.wait(
        lambda e: e.ticket_id == "G1" and e.type == "gate.failed" and e.data["attempt"] == 2
    )
    await wait_until(lambda: _phase_is(bus, "G1", Phase.BLOCKED))

    # On past it: the operator overrides the gate, and the rest of the ticket runs.
    on = await command(bus, c.CMD_TICKET_MOVE, {"ticket_id": "G1", "phase": "design"})
    assert on["ok"], on
    done = await wait_until(lambda: ticket_finished(bus, "G1"), timeout=30)
    assert done.status is TicketStatus.DONE, done.reason
    assert done.gates[Phase.REQUIREMENTS].status is GateStatus.OVERRIDDEN
    impl = done.gates[Phase.IMPLEMENTATION]
    assert impl.status is GateStatus.PASSED
    evidence = {c.name: c for c in impl.verdicts[-1].checks}
    assert set(evidence["glob *.txt"].files) == {"build.txt"}
    assert "build.txt" in evidence["diff"].detail or "1 file changed" in evidence["diff"].detail
    assert done.commit is not None
    assert [ctx.phase for ctx in done.context][:1] == [Phase.REQUIREMENTS]

    # The CLI shows the hand-over.
    proc = await asyncio.create_subprocess_exec(
        OMOI, "ticket", "show", "G1", "--context", "--json",
        env={**os.environ, **settings.to_env()},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    shown = json.loads(out)
    assert shown[0]["phase"] == "requirements"
    assert "notes" in shown[0]["summary"]
    assert any("build.txt" in c["artifacts"] for c in shown)


async def _phase_is(bus: Bus, ticket_id: str, phase: Phase) -> bool:
    ticket = await bus.tickets.value(ticket_id)
    return ticket is not None and ticket.phase is phase


async def test_malformed_gate_request_is_dead_lettered(
    bus: Bus, settings: Settings, running: Running
) -> None:
    await running.start(Validator(bus, settings, env=dict(os.environ)))
    await bus.js.publish(c.gate_subject("testing", "X"), b'{"ticket_id": "X"}')

    async def dead_lettered() -> Any:
        try:
            return await bus.js.get_last_msg(c.DLQ_STREAM, c.dlq_subject("gates"))
        except NotFoundError:
            return None

    msg = await wait_until(dead_lettered, timeout=20)
    assert msg.data == b'{"ticket_id": "X"}'
    assert "not a gate request" in (msg.headers or {}).get(c.HDR_REASON, "")


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


async def test_a_ticket_works_on_a_clone_and_never_touches_the_original(
    bus: Bus, tmp_path: Path, settings: Settings, start_planner: Start, start_worker: Start
) -> None:
    original = tmp_path / "original"
    original.mkdir()
    git(original, "init", "-q", "-b", "main")
    (original / "README").write_text("hello\n")
    git(original, "add", "README")
    git(original, "commit", "-q", "-m", "first")
    before = git(original, "rev-parse", "HEAD")
    await start_planner()
    await start_worker()
    payload = {
        "id": "R1",
        "title": "Clone",
        "repository": str(original),
        # Delivering would push its branch there (tests/integration/test_delivery.py).
        "deliver": False,
        "tasks": [{"name": "edit", "phase": "implementation",
                   "command": "cat README > copy.txt && echo more >> README"}],
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]
    done = await wait_until(lambda: ticket_finished(bus, "R1"), timeout=30)
    assert done.status is TicketStatus.DONE, done.reason

    ws = settings.workspaces_dir / "R1"
    assert (ws / "copy.txt").read_text() == "hello\n"
    assert git(ws, "log", "--format=%s").splitlines()[0].startswith("edit: ")
    assert done.commit == git(ws, "rev-parse", "HEAD")
    # The original is as it was.
    assert git(original, "rev-parse", "HEAD") == before
    assert (original / "README").read_text() == "hello\n"
    assert not (original / "copy.txt").exists()

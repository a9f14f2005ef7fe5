"""Secrets stay out of tasks: real worker and validator processes with the model key in
their environment (as `omoi up` gives it), or in a file, run tasks and gate commands that
look for it everywhere a task can look."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from agents.recorder.agent import Recorder
from agents.settings import Settings
from bus import Bus
from schemas import Phase, TaskStatus, TicketStatus
from store.reader import Reader
from tests.conftest import agent_env
from tests.helpers import (
    AgentProcess,
    EventLog,
    Running,
    stop_all,
    submit,
    ticket_finished,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Not shaped like any provider's key, so nothing else (the SDK's own redaction) hides it.
KEY = "omoi-model-key-3f9c1a7e52"
REDACTED = "[redacted]"
PROBE = "echo \"key:$OMOI_LLM_API_KEY\"; env; cat /proc/self/environ | tr '\\000' '\\n'"
OMOI = str(Path(sys.executable).parent / "omoi")


def names(output: str) -> set[str]:
    return {line.split("=", 1)[0] for line in output.splitlines() if "=" in line}


def assert_clean_task_env(output: str, ticket_id: str) -> None:
    """The output of PROBE: the allow-list and Omoi's per-task variables, nothing else."""
    assert "key:\n" in output  # the variable is not set at all
    assert f"OMOI_TICKET_ID={ticket_id}" in output and "PATH=" in output
    assert KEY not in output and REDACTED not in output
    seen = names(output)
    assert not {n for n in seen if n.startswith("NATS_")}, seen
    assert {n for n in seen if n.startswith("OMOI_")} <= {
        "OMOI_TICKET_ID", "OMOI_TICKET_TITLE", "OMOI_TICKET_DESCRIPTION",
        "OMOI_TASK", "OMOI_PHASE", "OMOI_ATTEMPT",
    }  # fmt: skip


async def everything_stored(bus: Bus, events: EventLog) -> str:
    """Every event, ticket and task as JSON: what reaches SSE, the CLI and the store."""
    parts = [e.model_dump_json() for e in events.events]
    parts += [t.model_dump_json() for t in await bus.tickets.values()]
    parts += [t.model_dump_json() for t in await bus.tasks.values()]
    return "\n".join(parts)


async def test_shell_tasks_and_gate_commands_never_see_the_key(
    bus: Bus, events: EventLog, settings: Settings, tmp_path: Path, running: Running
) -> None:
    s = settings.model_copy(update={"store_publish_interval_s": 0.2})
    env = agent_env(s) | {"OMOI_LLM_API_KEY": KEY, "OPENAI_API_KEY": KEY}
    await running.start(Recorder(bus, s))
    procs = [
        AgentProcess(role, role, env, tmp_path / f"{role}.log")
        for role in ("planner", "worker", "validator")
    ]
    try:
        for proc in procs:
            await proc.start(bus)
        payload = {
            "id": "S1",
            "title": "Look for the key",
            "tasks": [{"name": "probe", "phase": "implementation", "command": PROBE}],
            "gates": {"implementation": {"checks": [{"kind": "command", "command": PROBE}]}},
        }
        assert (await submit(bus, payload))["ok"]
        ticket = await wait_until(lambda: ticket_finished(bus, "S1"), timeout=60)
    finally:
        await stop_all(procs)
    assert ticket.status is TicketStatus.DONE, ticket.reason

    task = await bus.tasks.value("S1.probe")
    assert task is not None and task.result is not None
    assert_clean_task_env(task.result.output_tail, "S1")
    check = ticket.gates[Phase.IMPLEMENTATION].verdicts[-1].checks[0]
    assert_clean_task_env(check.output_tail, "S1")

    stored = await everything_stored(bus, events)
    assert "OMOI_TICKET_ID=S1" in stored
    assert KEY not in stored and REDACTED not in stored
    reader = Reader(s.published_dir, refresh_s=0.0)

    async def recorded() -> str:
        try:
            rows = reader.query("SELECT * FROM events WHERE ticket_id = 'S1'").rows
        except Exception:  # noqa: BLE001 - nothing published yet
            return ""
        text = json.dumps(rows, default=str)
        return text if "ticket.done" in text else ""

    in_store = await wait_until(recorded, timeout=30)
    assert "OMOI_TICKET_ID=S1" in in_store
    assert KEY not in in_store and REDACTED not in in_store
    for proc in procs:
        assert KEY not in proc.log_path.read_text()


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


async def test_a_key_a_task_finds_anyway_is_redacted(
    bus: Bus, events: EventLog, settings: Settings, tmp_path: Path
) -> None:
    """The backstop: the key comes from a file (so it is in no environment), and the
    tasks read that file, which they can, being the worker's user."""
    key_file = private_file(tmp_path / "model.key", KEY + "\n")
    env = agent_env(settings) | {"OMOI_LLM_API_KEY_FILE": str(key_file)}
    leak = f"cat /proc/$PPID/environ | tr '\\000' '\\n'; echo \"the key is $(cat {key_file})\""
    procs = [
        AgentProcess(role, role, env, tmp_path / f"{role}.log")
        for role in ("planner", "worker", "validator")
    ]
    try:
        for proc in procs:
            await proc.start(bus)
        payload = {
            "id": "S2",
            "title": "Find the key",
            "tasks": [
                {"name": "leak", "phase": "implementation", "command": leak},
                # After the gate: a failing task would hold the implementation phase.
                {"name": "fail", "phase": "testing", "max_retries": 0,
                 "command": f"echo x; echo \"failing with $(cat {key_file})\"; exit 3"},
            ],
            "gates": {"implementation": {"checks": [{"kind": "command", "command": leak}]}},
        }  # fmt: skip
        assert (await submit(bus, payload))["ok"]
        ticket = await wait_until(lambda: ticket_finished(bus, "S2"), timeout=60)
    finally:
        await stop_all(procs)
    assert ticket.status is TicketStatus.FAILED

    leaked = await bus.tasks.value("S2.leak")
    assert leaked is not None and leaked.result is not None
    tail = leaked.result.output_tail
    assert f"the key is {REDACTED}\n" in tail
    # The worker's own environment names the file, never the key.
    assert f"OMOI_LLM_API_KEY_FILE={key_file}" in tail
    failed = await bus.tasks.value("S2.fail")
    assert failed is not None and failed.status is TaskStatus.FAILED
    assert failed.errors[-1].message == f"exit code 3: failing with {REDACTED}"
    succeeded = events.of("S2", "task.succeeded")
    assert f"the key is {REDACTED}" in succeeded[0].data["output_tail"]
    (verdict,) = events.of("S2", "gate.passed")
    assert f"the key is {REDACTED}" in verdict.data["checks"][0]["output_tail"]
    assert KEY not in await everything_stored(bus, events)
    for proc in procs:
        assert KEY not in proc.log_path.read_text()


async def test_a_key_file_others_may_read_stops_agents_and_the_cli_with_a_message(
    settings: Settings, tmp_path: Path
) -> None:
    key_file = private_file(tmp_path / "model.key", KEY + "\n", mode=0o644)
    env = agent_env(settings) | {"OMOI_LLM_API_KEY_FILE": str(key_file)}
    for argv in (
        [sys.executable, "-m", "agents.worker"],
        [OMOI, "agents"],
        [OMOI, "submit", "--title", "t"],
    ):
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        message = (out + err).decode()
        assert proc.returncode == 2, message
        assert f"OMOI_LLM_API_KEY_FILE: {key_file} may be read by others" in message
        assert f"chmod 600 {key_file}" in message
        assert "Traceback" not in message and KEY not in message

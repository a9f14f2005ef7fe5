"""The `omoi` CLI against a real server, as a user runs it (a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.settings import Settings
from bus import Bus
from tests.helpers import EventLog, wait_until

pytestmark = pytest.mark.integration

OMOI = str(Path(sys.executable).parent / "omoi")
Start = Callable[..., Awaitable[Any]]


async def omoi(settings: Settings, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    assert settings.nats_url
    proc = await asyncio.create_subprocess_exec(
        OMOI, *args,
        env={
            **os.environ,
            "NATS_URL": settings.nats_url,
            "OMOI_NATS_CREDENTIALS": str(settings.auth_path / "operator.nk"),
            "COLUMNS": "200",
        },
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 40)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def system(start_planner: Start, start_worker: Start, start_monitor: Start) -> None:
    await start_planner()
    await start_worker()
    await start_monitor()


@pytest.mark.usefixtures("system")
async def test_submit_follow_show_list(settings: Settings, events: EventLog) -> None:
    code, out, err = await omoi(
        settings, "submit", "--id", "cli-1", "--title", "From the CLI", "--follow"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "cli-1"
    assert any("ticket.phase_changed" in line and "testing -> deployment" in line for line in lines)
    assert "ticket.done" in lines[-1]

    code, out, _ = await omoi(settings, "ticket", "show", "cli-1", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["ticket"]["status"] == "done"
    assert shown["ticket"]["phase_history"][0]["from"] == "requirements"
    assert {t["status"] for t in shown["tasks"]} == {"succeeded"}

    code, out, _ = await omoi(settings, "ticket", "show", "cli-1")
    assert code == 0
    assert "phase history" in out and "implement-code" in out

    code, out, _ = await omoi(settings, "ticket", "list", "--json")
    assert [t["id"] for t in json.loads(out)] == ["cli-1"]

    code, out, _ = await omoi(settings, "task", "show", "cli-1.deploy", "--json")
    assert code == 0
    assert json.loads(out)["result"]["exit_code"] == 0


@pytest.mark.usefixtures("system")
async def test_submit_from_file_and_rejections(settings: Settings, events: EventLog) -> None:
    ticket = {
        "id": "from-file",
        "title": "file",
        "tasks": [{"name": "x", "phase": "design", "command": "true"}],
    }
    code, out, _ = await omoi(settings, "submit", "--file", "-", stdin=json.dumps(ticket).encode())
    assert code == 0
    assert out.strip() == "from-file"
    await events.wait_type("from-file", "ticket.done")

    bad = {"title": "cyclic", "tasks": [{"name": "x", "phase": "design", "command": "true",
                                          "depends_on": ["x"]}]}  # fmt: skip
    code, out, err = await omoi(settings, "submit", "--file", "-", stdin=json.dumps(bad).encode())
    assert code == 1
    assert "dependency cycle: x -> x" in err

    code, _, err = await omoi(settings, "ticket", "move", "from-file", "design")
    assert code == 1
    assert "already_finished" in err

    code, _, err = await omoi(settings, "ticket", "priority", "from-file", "high")
    assert code == 1
    assert "already_finished" in err
    code, _, err = await omoi(settings, "ticket", "priority", "from-file", "asap")
    assert code == 1
    assert "invalid_command" in err and "critical" in err

    code, _, err = await omoi(settings, "task", "cancel", "from-file.x")
    assert code == 1
    assert "already succeeded" in err

    code, _, err = await omoi(settings, "ticket", "show", "nope")
    assert code == 1
    assert "no ticket 'nope'" in err


@pytest.mark.usefixtures("system")
async def test_agents_lists_the_live_agents(settings: Settings) -> None:
    code, out, _ = await omoi(settings, "agents", "--json")
    assert code == 0
    agents = json.loads(out)
    assert {a["role"] for a in agents} == {"planner", "worker", "monitor"}
    assert {a["service"] for a in agents} == {"omoi-planner", "omoi-worker", "omoi-monitor"}
    assert {a["status"]["ready"] for a in agents} == {True}
    worker = next(a for a in agents if a["role"] == "worker")
    assert "implementation" in worker["phases"]
    assert worker["capabilities"] == ["shell"]
    assert (worker["status"]["running"], worker["slots"]) == (0, 1)

    code, out, _ = await omoi(settings, "agents")
    assert code == 0
    assert "worker" in out and "0/1" in out and "3 live agents" in out


async def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        OMOI, "ticket", "list",
        env={**os.environ, "NATS_URL": "nats://127.0.0.1:1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "cannot reach NATS" in err.decode()


async def test_agent_command_runs_a_worker_for_chosen_phases(settings: Settings, bus: Bus) -> None:
    assert settings.nats_url
    proc = await asyncio.create_subprocess_exec(
        OMOI, "agent", "worker", "--phase", "design", "--phase", "testing",
        "--agent-id", "scale-out-1",
        env={**os.environ, **settings.to_env()},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        beat = await wait_until(lambda: bus.heartbeats.value("scale-out-1"), timeout=30)
        assert beat.role == "worker"
        assert beat.phases == ["design", "testing"]
        assert beat.capabilities == ["shell", "agent"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
    assert await bus.heartbeats.value("scale-out-1") is None  # deregistered on shutdown


async def omoi_without_nats_url(data_dir: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    proc = await asyncio.create_subprocess_exec(
        OMOI, *args, env={**env, "OMOI_DATA_DIR": str(data_dir), "COLUMNS": "300"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_up_state(data_dir: Path, nats_url: str, pid: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    state = {"nats_url": nats_url, "http_url": None, "pid": pid, "agents": {}}
    (data_dir / "omoi-up.json").write_text(json.dumps(state))


async def test_without_nats_url_the_cli_finds_a_running_omoi_up(
    settings: Settings, start_monitor: Start, tmp_path: Path
) -> None:
    assert settings.nats_url
    monitor = await start_monitor()
    # The data dir of that `omoi up`: its state file, and the identities it made.
    data_dir = settings.data_dir
    write_up_state(data_dir, settings.nats_url, os.getpid())  # this test is the live owner
    code, out, err = await omoi_without_nats_url(data_dir, "agents", "--json")
    assert code == 0, err
    assert [a["agent_id"] for a in json.loads(out)] == [monitor.id]


async def test_a_stale_state_file_is_ignored(
    settings: Settings, start_monitor: Start, tmp_path: Path
) -> None:
    assert settings.nats_url
    monitor = await start_monitor()
    gone = await asyncio.create_subprocess_exec("true")
    assert await gone.wait() == 0
    data_dir = tmp_path / "elsewhere"
    write_up_state(data_dir, settings.nats_url, gone.pid)  # its omoi up was killed
    code, out, err = await omoi_without_nats_url(data_dir, "agents", "--json")
    # Not that server: the default one, which may or may not run on this machine.
    if code == 0:
        assert monitor.id not in {a["agent_id"] for a in json.loads(out)}
    else:
        assert "cannot reach NATS at nats://127.0.0.1:4222 (the default: no NATS_URL and " in err
        assert f"no omoi up running on {data_dir}" in err

    (data_dir / "omoi-up.json").write_text("{not json")
    code, out, err = await omoi_without_nats_url(data_dir, "agents", "--json")
    assert "ignoring" in err and "omoi-up.json" in err  # a clear word, no traceback
    assert "Traceback" not in err

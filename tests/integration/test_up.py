"""`omoi up` end to end: embedded server, supervised agents, restart with the same data dir."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.base import Agent
from agents.monitor.agent import Monitor
from agents.planner.agent import Planner
from agents.settings import Settings
from bus import AuthError, Bus, EmbeddedNatsServer
from bus.auth import AuthDir, Credentials
from cli.readiness import http_status
from schemas import Heartbeat
from tests.helpers import EventLog, Running, gated, omoi_sql, read_pid, submit, wait_until

pytestmark = pytest.mark.integration

OMOI = str(Path(sys.executable).parent / "omoi")


def up_env() -> dict[str, str]:
    # As a new user's shell: no server, data dir or model chosen.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NATS_URL", "OMOI_DATA_DIR") and not k.startswith("OMOI_LLM_")
    }
    env.update(
        COLUMNS="300",
        OMOI_HEARTBEAT_INTERVAL_S="0.5",
        OMOI_ACK_WAIT_S="2",
        OMOI_SHUTDOWN_GRACE_S="1",
        OMOI_RETRY_BASE_S="0.05",
        OMOI_RETRY_CAP_S="0.2",
        OMOI_FETCH_POLL_S="0.25",
    )
    return env


class Up:
    """`omoi up` run as a user runs it, in `cwd`; its terminal output is read line by line."""

    def __init__(self, cwd: Path, data_dir: Path, log: Path) -> None:
        self.cwd = cwd
        self.data_dir = data_dir
        self.given_auth_dir: Path | None = None
        # Set before starting: what this test's `omoi up` gets on top of `up_env()`.
        self.extra_env: dict[str, str] = {}
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.state: dict[str, Any] = {}
        self.lines: list[str] = []
        self._ended = False
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, nats_url: str | None = None, auth_dir: Path | None = None) -> str:
        """The usual test system: one worker, any free ports, an explicit data dir."""
        self.given_auth_dir = auth_dir
        await self.launch(
            "--data-dir", str(self.data_dir), "--nats-port", "0", "--workers", "1",
            "--http-port", "0", nats_url=nats_url,
        )  # fmt: skip
        return await self.until_up()

    @property
    def auth_dir(self) -> Path:
        """Its identities: made in the data dir, or given for a server of one's own."""
        return self.given_auth_dir or self.data_dir / "auth"

    async def launch(self, *args: str, nats_url: str | None = None) -> None:
        env = {**up_env(), **self.extra_env}
        if nats_url:
            env["NATS_URL"] = nats_url
            env["OMOI_AUTH_DIR"] = str(self.auth_dir)
        self.lines, self._ended = [], False
        self.proc = await asyncio.create_subprocess_exec(
            OMOI, "up", *args, cwd=self.cwd, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(self.proc))

    async def until_up(self, timeout: float = 60) -> str:
        """Waits for the line saying it is up; the state file must be there by then."""
        await self.wait_line("omoi is up", timeout)
        self.state = json.loads((self.data_dir / "omoi-up.json").read_text())
        return str(self.state["nats_url"])

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with open(self.log, "ab") as log:
            while raw := await proc.stdout.readline():
                log.write(raw)
                async with self._changed:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._changed.notify_all()
        async with self._changed:
            self._ended = True
            self._changed.notify_all()

    async def wait_line(self, text: str, timeout: float = 60) -> str:
        async def first() -> str:
            async with self._changed:
                while True:
                    for line in self.lines:
                        if text in line:
                            return line
                    if self._ended:
                        raise AssertionError(f"omoi up ended without {text!r}:\n{self.output}")
                    await self._changed.wait()

        return await asyncio.wait_for(first(), timeout)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def exited(self, timeout: float = 40) -> int:
        assert self.proc is not None and self._reader is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, timeout)
        return code

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.exited()


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[Up]:
    u = Up(tmp_path, tmp_path / "omoi-data", tmp_path / "up.log")
    yield u
    if u.proc is not None and u.proc.returncode is None:
        u.proc.kill()
        await u.proc.wait()
    if u._reader is not None:
        u._reader.cancel()


def admin_of(up: Up) -> Credentials:
    """The identity `omoi up` made in its data dir, which the test inspects state with."""
    return AuthDir(up.auth_dir).credentials("admin")


async def connect(up: Up) -> tuple[Bus, EventLog]:
    """Connects to what `up` started, which is ready already: no waiting here."""
    bus = await Bus.connect(up.state["nats_url"], name="test-up", credentials=admin_of(up))
    beats = {b.agent_id: b for b in await bus.heartbeats.values()}
    for name, agent_id in up.state["agent_ids"].items():
        assert agent_id in beats and beats[agent_id].ready, f"{name} is not ready"
    return bus, await EventLog(bus).start()


async def omoi_cli(cwd: Path, *args: str) -> tuple[int, str, str]:
    """The CLI as a user runs it next to `omoi up`: from that directory, no NATS_URL."""
    proc = await asyncio.create_subprocess_exec(
        OMOI, *args, cwd=cwd, env=up_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_restart_with_same_data_dir_continues_in_flight_tickets(up: Up) -> None:
    await up.start()
    bus, events = await connect(up)
    tasks = [
        {"name": "a", "phase": "requirements", "command": "echo a >> runs.log"},
        {"name": "b", "phase": "design", "command": "echo b >> runs.log; " + gated("b")},
        {"name": "c", "phase": "deployment", "command": "echo c >> runs.log"},
    ]
    reply = await submit(bus, {"id": "survivor", "title": "restart", "tasks": tasks})
    assert reply["ok"], reply
    ws = up.data_dir / "workspaces" / "survivor"
    await read_pid(ws / "b.pid")
    await events.stop()
    await bus.close()

    assert await up.stop() == 0  # graceful: b is handed back, not failed

    await up.start()
    bus, events = await connect(up)
    try:
        (ws / "release").touch()
        await events.wait_type("survivor", "ticket.done", timeout=40)
        b = await bus.tasks.value("survivor.b")
        assert b is not None
        assert b.status == "succeeded"
        assert b.attempts == 1  # handing back on shutdown did not use up an attempt
        assert (ws / "runs.log").read_text().split() == ["a", "b", "b", "c"]
    finally:
        await events.stop()
        await bus.close()
    assert await up.stop() == 0


async def test_supervisor_restarts_a_crashed_agent(up: Up) -> None:
    await up.start()
    bus, events = await connect(up)
    first_id = up.state["agent_ids"]["worker-1"]
    worker_log = up.data_dir / "logs" / "worker-1.log"
    try:
        os.kill(up.state["agents"]["worker-1"], signal.SIGKILL)

        async def replacement() -> Heartbeat | None:
            for beat in await bus.heartbeats.values():
                if beat.agent_id.startswith("worker-1-") and beat.agent_id != first_id:
                    return beat if beat.ready else None
            return None

        # A fresh agent id for every start, named after the child it is.
        second_id = (await wait_until(replacement, timeout=30)).agent_id
        reply = await submit(bus, {"id": "after-crash", "title": "still served", "tasks": [
            {"name": "x", "phase": "design", "command": "true"}]})  # fmt: skip
        assert reply["ok"]
        await events.wait_type("after-crash", "ticket.done")
        # Both lives of worker-1 are in its one log, in order.
        text = worker_log.read_text()
        assert text.index(f"[{first_id}] started") < text.index(f"[{second_id}] started")
        assert text.count("omoi up starts worker-1 as") == 2
    finally:
        await events.stop()
        await bus.close()
    assert await up.stop() == 0
    assert "worker-1 exited with -9; restarting" in up.output


async def test_up_with_nats_url_uses_that_server_and_starts_none(
    up: Up, nats_server: EmbeddedNatsServer, auth_dir: AuthDir
) -> None:
    url = await up.start(nats_server.url, auth_dir.path)
    assert url == nats_server.url
    assert not (up.data_dir / "nats").exists()
    bus, events = await connect(up)
    await events.stop()
    await bus.close()
    assert await up.stop() == 0


async def test_up_serves_the_dashboard_and_sql_while_tickets_run(up: Up) -> None:
    import httpx

    await up.start()
    bus, events = await connect(up)
    http_url = up.state["http_url"]
    try:
        tasks = [
            {"name": "a", "phase": "design", "command": "true"},
            {"name": "b", "phase": "testing", "command": gated("b")},
        ]
        assert (await submit(bus, {"id": "live", "title": "live", "tasks": tasks}))["ok"]
        await events.wait_type("live", "task.succeeded", task="a")
        # Local use needs no token typed: an admin token waits in a private file, and the
        # terminal shows a one-time sign-in link for the dashboard.
        token_file = up.data_dir / "auth" / "gateway-admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        line = await up.wait_line("/login/link?token=")
        link = line[line.index(http_url) :].split()[0]
        async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
            assert (await http.get("/ready")).status_code == 200  # up means up
            assert (await http.get("/api/v1/tickets/live")).status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            ticket = (await http.get("/api/v1/tickets/live", headers=auth)).json()
            assert ticket["id"] == "live" and ticket["status"] == "running"
            signed_in = await http.get(link)
            assert signed_in.status_code == 303 and "omoi_session" in http.cookies
            page = await http.get("/")
            assert page.status_code == 200 and "live" in page.text
            http.cookies.clear()
            assert (await http.get(link)).status_code == 401  # once only

        # While b is still running, the store already answers.
        env = {**up_env(), "OMOI_DATA_DIR": str(up.data_dir)}

        async def recorded() -> bool:
            q = "SELECT outcome FROM task_attempts WHERE ticket_id = 'live' AND task = 'a'"
            _, rows, _ = await omoi_sql(env, q)
            return rows == [{"outcome": "succeeded"}]

        await wait_until(recorded, timeout=30, interval=0.5)
        # A connection the server refuses is audited too (the monitor hears it as `system`).
        with pytest.raises(AuthError):
            await Bus.connect(up.state["nats_url"], name="intruder", max_reconnect_attempts=0)

        async def refusal_audited() -> Any:
            q = "SELECT actor, client FROM audit_log WHERE action = 'auth.failure' AND via = 'nats'"
            return (await omoi_sql(env, q))[1]

        refused = await wait_until(refusal_audited, timeout=30, interval=0.5)
        assert refused[0]["actor"] == "anonymous" and "intruder" in refused[0]["client"]
        b = await bus.tasks.value("live.b")
        assert b is not None and b.status == "running"
        (up.data_dir / "workspaces" / "live" / "release").touch()
        await events.wait_type("live", "ticket.done", timeout=30)
    finally:
        await events.stop()
        await bus.close()
    assert await up.stop() == 0


async def test_submit_right_after_up_says_so_is_answered_by_the_planner(up: Up) -> None:
    # Exactly what a new user types: no data dir, any free ports, then `omoi submit` from
    # the same directory without NATS_URL, the moment `omoi up` says it is up.
    up.data_dir = up.cwd / ".omoi"
    await up.launch("--nats-port", "0", "--http-port", "0")
    await up.until_up()
    code, out, err = await omoi_cli(up.cwd, "submit", "--title", "right away", "--json")
    assert code == 0, err
    reply = json.loads(out)
    assert reply["ok"] and reply["message"] == "accepted", reply  # not "stored; no planner…"

    state_file = up.data_dir / "omoi-up.json"
    assert up.proc is not None and up.state["pid"] == up.proc.pid
    bus = await Bus.connect(up.state["nats_url"], name="test-up", credentials=admin_of(up))
    try:
        beats = {b.agent_id: b for b in await bus.heartbeats.values()}
        ids = up.state["agent_ids"]
        assert set(ids) == {
            "planner", "monitor", "guardian", "validator", "delivery", "recorder", "worker-1",
            "worker-2",
        }  # fmt: skip
        assert all(beats[agent_id].ready for agent_id in ids.values())
        ticket = await bus.tickets.value(reply["ticket_id"])
        assert ticket is not None and ticket.title == "right away"
    finally:
        await bus.close()
    assert await http_status(up.state["http_url"], "/ready") == 200

    # The terminal has omoi up's own lines and where the agents' logs are; the logs
    # themselves are in one file per process.
    assert "agent logs: .omoi/logs/<name>.log" in up.output
    assert "agents.planner" not in up.output and "uvicorn" not in up.output
    logs = up.data_dir / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        f"{name}.log" for name in sorted([*ids, "gateway"])
    ]
    assert f"[{ids['planner']}] started" in (logs / "planner.log").read_text()
    assert "gateway serving on" in (logs / "gateway.log").read_text()

    assert await up.stop() == 0
    assert not state_file.exists()


async def test_logs_flag_shows_every_agents_lines_after_its_name(up: Up) -> None:
    await up.launch("--data-dir", str(up.data_dir), "--nats-port", "0", "--http-port", "0",
                    "--workers", "1", "--logs")  # fmt: skip
    await up.until_up()
    ids = up.state["agent_ids"]
    up_at = next(i for i, line in enumerate(up.lines) if "omoi is up" in line)
    for name, agent_id in ids.items():
        shown = [i for i, line in enumerate(up.lines) if line.startswith(f"{name:<9} | ")]
        started = [i for i in shown if f"[{agent_id}] started" in up.lines[i]]
        assert started and started[0] < up_at, f"{name}'s start is not shown before up"
    assert any(line.startswith("gateway   | ") for line in up.lines)
    # The files get them too.
    assert f"[{ids['planner']}] started" in (up.data_dir / "logs" / "planner.log").read_text()
    assert await up.stop() == 0
    assert any(line.startswith("planner   | ") and "stopped" in line for line in up.lines)


async def test_up_names_who_is_not_ready_stops_the_rest_and_fails(up: Up) -> None:
    # The gateway's port is taken, so the gateway can never be ready.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        await up.launch("--data-dir", str(up.data_dir), "--nats-port", "0", "--workers", "1",
                        "--http-port", str(port), "--ready-timeout", "15")  # fmt: skip
        code = await up.exited(timeout=90)
    assert code == 1
    assert "omoi is up" not in up.output
    # (15 s: on a busy machine a gateway takes a few seconds to import before it even
    # tries the port, and the log below must show it tried.)
    assert "error: not ready after 15s, so omoi is not up:" in up.output
    gateway = next(line for line in up.lines if line.startswith("  gateway: "))
    assert gateway.endswith("its log: omoi-data/logs/gateway.log")  # relative to where it ran
    assert "Address already in use" in (up.data_dir / "logs" / "gateway.log").read_text()
    assert not (up.data_dir / "omoi-up.json").exists()
    # The agents that did start were stopped, not left behind.
    assert "stopped" in (up.data_dir / "logs" / "planner.log").read_text().splitlines()[-1]


async def test_demo_terminal_shows_the_demos_progress_not_agent_logs(up: Up) -> None:
    await up.launch("--data-dir", str(up.data_dir), "--nats-port", "0", "--http-port", "-1",
                    "--workers", "1", "--demo")  # fmt: skip
    await up.until_up()
    await up.wait_line("submitted demo ticket")
    await up.wait_line("task.started")  # a coding agent is at work on the first phase
    assert await up.stop() == 0
    assert "SCRIPTED MODEL" in up.output
    assert "agents.worker" not in up.output and "agents.planner" not in up.output
    assert "agents.worker.agent" in (up.data_dir / "logs" / "worker-1.log").read_text()


@pytest.mark.parametrize("role", ["monitor", "planner"])
async def test_an_agent_beats_ready_the_moment_it_is_ready(
    role: str, bus: Bus, settings: Settings, running: Running
) -> None:
    # An hour between beats: only the beat sent on becoming ready can say so in time.
    slow = settings.model_copy(update={"heartbeat_interval_s": 3600})
    agent: Agent = Monitor(bus, slow) if role == "monitor" else Planner(bus, slow)
    await running.start(agent)  # returns once agent.ready is set

    async def ready_beat() -> Heartbeat | None:
        beat = await bus.heartbeats.value(agent.id)
        return beat if beat is not None and beat.ready else None

    beat = await wait_until(ready_beat, timeout=10)
    assert beat.role == role

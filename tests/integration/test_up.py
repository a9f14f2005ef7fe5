"""`omoi up` end to end: embedded server, supervised agents, restart with the same data dir."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bus import Bus, EmbeddedNatsServer
from tests.helpers import EventLog, gated, read_pid, submit, wait_until

pytestmark = pytest.mark.integration

OMOI = str(Path(sys.executable).parent / "omoi")


def up_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(
        OMOI_HEARTBEAT_INTERVAL_S="0.5",
        OMOI_ACK_WAIT_S="2",
        OMOI_SHUTDOWN_GRACE_S="1",
        OMOI_RETRY_BASE_S="0.05",
        OMOI_RETRY_CAP_S="0.2",
        OMOI_FETCH_POLL_S="0.25",
    )
    return env


class Up:
    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir = data_dir
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.state: dict[str, Any] = {}

    async def start(self, nats_url: str | None = None) -> str:
        state = self.data_dir / "omoi-up.json"
        state.unlink(missing_ok=True)
        env = up_env()
        if nats_url:
            env["NATS_URL"] = nats_url
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                OMOI, "up", "--data-dir", str(self.data_dir), "--nats-port", "0", "--workers", "1",
                "--http-port", "0",
                env=env, stdout=log, stderr=log,
            )  # fmt: skip
        text = await wait_until(lambda: _read(state), timeout=30)
        self.state = json.loads(text)
        return str(self.state["nats_url"])

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 40)


async def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[Up]:
    u = Up(tmp_path / "omoi-data", tmp_path / "up.log")
    yield u
    if u.proc is not None and u.proc.returncode is None:
        u.proc.kill()
        await u.proc.wait()


async def connect(url: str) -> tuple[Bus, EventLog]:
    bus = await Bus.connect(url, name="test-up")
    await wait_until(lambda: _agents_ready(bus), timeout=30)
    return bus, await EventLog(bus).start()


async def _agents_ready(bus: Bus) -> Any:
    roles = {b.role for b in await bus.heartbeats.values()}
    return {"planner", "worker", "monitor"} <= roles


async def test_restart_with_same_data_dir_continues_in_flight_tickets(up: Up) -> None:
    bus, events = await connect(await up.start())
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

    bus, events = await connect(await up.start())
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
    bus, events = await connect(await up.start())
    try:
        before = {b.agent_id for b in await bus.heartbeats.values() if b.role == "worker"}
        os.kill(up.state["agents"]["worker-1"], signal.SIGKILL)

        async def replaced() -> bool:
            now = {b.agent_id for b in await bus.heartbeats.values() if b.role == "worker"}
            return bool(now - before)

        await wait_until(replaced, timeout=30)
        reply = await submit(bus, {"id": "after-crash", "title": "still served", "tasks": [
            {"name": "x", "phase": "design", "command": "true"}]})  # fmt: skip
        assert reply["ok"]
        await events.wait_type("after-crash", "ticket.done")
    finally:
        await events.stop()
        await bus.close()
    assert await up.stop() == 0


async def test_up_with_nats_url_uses_that_server_and_starts_none(
    up: Up, nats_server: EmbeddedNatsServer
) -> None:
    url = await up.start(nats_server.url)
    assert url == nats_server.url
    assert not (up.data_dir / "nats").exists()
    bus, events = await connect(url)
    await events.stop()
    await bus.close()
    assert await up.stop() == 0


async def test_up_serves_the_dashboard_and_sql_while_tickets_run(up: Up) -> None:
    import httpx

    bus, events = await connect(await up.start())
    http_url = up.state["http_url"]
    try:
        tasks = [
            {"name": "a", "phase": "design", "command": "true"},
            {"name": "b", "phase": "testing", "command": gated("b")},
        ]
        assert (await submit(bus, {"id": "live", "title": "live", "tasks": tasks}))["ok"]
        await events.wait_type("live", "task.succeeded", task="a")
        async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
            await wait_until(lambda: _ok(http, "/health"), timeout=30)
            ticket = (await http.get("/api/v1/tickets/live")).json()
            assert ticket["id"] == "live" and ticket["status"] == "running"
            page = await http.get("/")
            assert page.status_code == 200 and "live" in page.text

        # While b is still running, the store already answers.
        env = {**up_env(), "OMOI_DATA_DIR": str(up.data_dir)}

        async def recorded() -> Any:
            proc = await asyncio.create_subprocess_exec(
                OMOI, "sql", "--json",
                "SELECT outcome FROM task_attempts WHERE ticket_id = 'live' AND task = 'a'",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate()
            return proc.returncode == 0 and json.loads(out) == [{"outcome": "succeeded"}]

        await wait_until(recorded, timeout=30, interval=0.5)
        b = await bus.tasks.value("live.b")
        assert b is not None and b.status == "running"
        (up.data_dir / "workspaces" / "live" / "release").touch()
        await events.wait_type("live", "ticket.done", timeout=30)
    finally:
        await events.stop()
        await bus.close()
    assert await up.stop() == 0


async def _ok(http: Any, path: str) -> bool:
    try:
        return bool((await http.get(path)).status_code == 200)
    except Exception:  # noqa: BLE001 - the gateway is still starting
        return False

"""Agents' log lines through NATS into the store, and `omoi logs` over them.

The shipper runs against a real server; the pipeline test runs a worker and a recorder as
real processes and the CLI as a user runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from agents.logs import JsonFormatter, shipped_logs
from agents.redact import Redactor
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from bus.log_context import logging_context
from bus.log_shipper import LogShipper
from bus.topology import LOG_LINE_MAX_BYTES
from bus.trace_context import ticket_trace_id
from store import Reader
from tests.conftest import agent_env
from tests.helpers import AgentProcess, EventLog, stop_all, submit, wait_until

pytestmark = pytest.mark.integration

OMOI = str(Path(sys.executable).parent / "omoi")
Start = Callable[..., Awaitable[Any]]
# A secret (the model key, in the pipeline test), which no shipped line may carry.
KEY = "sk-omoi-logs-test-0123456789abcdef"


class Received:
    """The JSON lines published on a subject, as a plain subscriber sees them."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    async def on_msg(self, msg: Msg) -> None:
        assert len(msg.data) <= LOG_LINE_MAX_BYTES
        self.lines.append(json.loads(msg.data))

    async def count(self, n: int) -> bool:
        return len(self.lines) >= n


async def test_shipped_lines_reach_the_subject_and_the_stream_with_their_context(
    bus: Bus,
) -> None:
    subject = c.log_subject("worker", "w-ship")
    got = Received()
    await bus.nc.subscribe(subject, cb=got.on_msg)
    log = logging.getLogger("tests.shipping")
    redactor = Redactor([KEY])
    async with shipped_logs(bus, "worker", "w-ship", redactor, flush_s=0.05) as shipper:
        with logging_context(agent="w-ship", ticket="T", task="a"):
            log.warning("T.a failed: %s", f"exit 3: {KEY}")
        log.warning("x" * (2 * LOG_LINE_MAX_BYTES))
        await wait_until(lambda: got.count(2), timeout=10)
        await shipper.stop()
        await shipper.stop()  # safe twice
    first, long = [line for line in got.lines if line["logger"] == "tests.shipping"]
    assert (first["message"], first["level"]) == ("T.a failed: exit 3: [redacted]", "warning")
    assert (first["agent"], first["ticket"], first["task"]) == ("w-ship", "T", "a")
    assert long["message"].endswith("characters cut)")
    info = await bus.js.stream_info(c.LOGS_STREAM)
    assert info.state.messages >= 2


async def test_a_full_buffer_drops_the_oldest_lines_and_says_how_many(bus: Bus) -> None:
    subject = c.log_subject("worker", "w-full")
    got = Received()
    await bus.nc.subscribe(subject, cb=got.on_msg)
    log = logging.getLogger("tests.shipping")
    shipper = LogShipper(bus, subject, JsonFormatter(), max_buffered=3, flush_s=0.05)
    root = logging.getLogger()
    root.addHandler(shipper)
    try:
        for n in range(5):  # nothing sends yet: as while no server takes lines
            log.warning("line %d", n)
        assert shipper.dropped == 2
        shipper.start()
        await wait_until(lambda: got.count(4), timeout=10)
    finally:
        await shipper.stop()
        root.removeHandler(shipper)
    messages = [line["message"] for line in got.lines]
    assert messages[:3] == ["line 2", "line 3", "line 4"]
    assert "2 log lines were dropped while no server took them" in messages


async def omoi_logs(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    assert settings.nats_url
    return await asyncio.create_subprocess_exec(
        OMOI, "logs", "--json", *args,
        env={
            **os.environ,
            "NATS_URL": settings.nats_url,
            "OMOI_NATS_CREDENTIALS": str(settings.auth_path / "operator.nk"),
            "OMOI_DATA_DIR": str(settings.data_dir),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def failing(ticket: str) -> dict[str, Any]:
    command = f"echo {KEY}; exit 3"
    tasks = [{"name": "broken", "phase": "implementation", "command": command, "max_retries": 0}]
    return {"id": ticket, "title": "logs", "tasks": tasks}


async def test_agent_processes_lines_are_in_the_store_and_omoi_logs_finds_and_follows_them(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, tmp_path: Path
) -> None:
    await start_planner()
    env = {**agent_env(settings), "OMOI_STORE_PUBLISH_INTERVAL_S": "0.2", "OMOI_LLM_API_KEY": KEY}
    procs = [
        await AgentProcess("recorder", "recorder-logs", env, tmp_path / "r.log").start(bus),
        await AgentProcess("worker", "worker-logs", env, tmp_path / "w.log").start(bus),
    ]
    try:
        assert (await submit(bus, failing("LG")))["ok"]
        await events.wait_type("LG", "ticket.failed", timeout=30)
        reader = Reader(settings.published_dir, refresh_s=0)

        async def stored() -> bool:
            if not settings.published_dir.is_dir():
                return False
            found = reader.query(
                "SELECT count(*) FROM logs WHERE ticket_id = 'LG' AND task = 'broken'"
            )
            return bool(found.rows[0][0])

        await wait_until(stored, timeout=30)
        roles = reader.query("SELECT DISTINCT role FROM logs ORDER BY role").rows
        assert ("recorder",) in roles and ("worker",) in roles

        proc = await omoi_logs(
            settings, "--ticket", "LG", "--task", "broken", "--level", "info", "--grep", "FAILED"
        )
        out, err = await asyncio.wait_for(proc.communicate(), 40)
        assert proc.returncode == 0, err.decode()
        [line] = [json.loads(x) for x in out.decode().splitlines()]
        assert (line["role"], line["agent"]) == ("worker", "worker-logs")
        assert line["message"].startswith("LG.broken failed")
        assert line["subject"] == "omoi.tasks.implementation.shell.normal.LG.broken"
        assert line["trace_id"] == ticket_trace_id("LG")  # the ticket's trace
        # The task printed the key; the line about its failure does not say it.
        assert "exit code 3" in line["message"] and KEY not in line["message"]
        leaked = reader.query("SELECT count(*) FROM logs WHERE contains(message, ?)", [KEY])
        assert leaked.rows == [(0,)]

        follower = await omoi_logs(settings, "--follow", "--ticket", "LG2", "--grep", "failed")
        try:
            assert (await submit(bus, failing("LG2")))["ok"]
            assert follower.stdout is not None
            raw = await asyncio.wait_for(follower.stdout.readline(), 30)
            followed = json.loads(raw)
            assert followed["ticket_id"] == "LG2" and followed["agent"] == "worker-logs"
            assert followed["message"].startswith("LG2.broken failed")
        finally:
            follower.terminate()
            await follower.wait()
    finally:
        await stop_all(procs)


async def test_a_bad_level_is_a_usage_error(settings: Settings) -> None:
    proc = await omoi_logs(settings, "--level", "loud")
    _, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 2
    assert "one of debug, info" in err.decode()

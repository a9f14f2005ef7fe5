"""A real worker process with `OMOI_LOG_FORMAT=json` writes only JSON lines, with ids."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.settings import Settings
from bus import Bus
from tests.conftest import agent_env
from tests.helpers import AgentProcess, EventLog, submit

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


async def test_a_json_logging_worker_says_which_ticket_and_task_a_line_is_about(
    bus: Bus, events: EventLog, settings: Settings, start_planner: Start, tmp_path: Path
) -> None:
    await start_planner()
    env = {**agent_env(settings), "OMOI_LOG_FORMAT": "json"}
    log_path = tmp_path / "worker.log"
    worker = await AgentProcess("worker", "worker-json", env, log_path).start(bus)
    try:
        tasks = [{"name": "broken", "phase": "implementation", "command": "exit 3",
                  "max_retries": 0}]  # fmt: skip
        assert (await submit(bus, {"id": "JL", "title": "json logs", "tasks": tasks}))["ok"]
        await events.wait_type("JL", "ticket.failed", timeout=30)
    finally:
        assert await worker.terminate() == 0
    lines: list[dict[str, Any]] = [json.loads(x) for x in log_path.read_text().splitlines() if x]
    assert lines and all(line["agent"] == "worker-json" for line in lines), lines
    assert any(line["message"].startswith("started") for line in lines), lines
    [failed] = [line for line in lines if line["message"].startswith("JL.broken failed")]
    assert (failed["ticket"], failed["task"]) == ("JL", "broken")
    assert failed["subject"] == "omoi.tasks.implementation.shell.normal.JL.broken"
    assert failed["level"] == "info"

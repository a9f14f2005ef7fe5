"""The recorder: every event into DuckDB exactly once, across kill -9 and restarts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.recorder.agent import Recorder
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from store.errors import ReadOnlyError
from store.reader import Reader
from tests.conftest import agent_env
from tests.helpers import AgentProcess, Running, omoi_sql, submit, ticket_finished, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

OMOI = str(Path(sys.executable).parent / "omoi")
DUCKDB = str(Path(sys.executable).parent / "duckdb")


def synthetic(i: int) -> bytes:
    return json.dumps(
        {
            "id": f"S{i // 50}.t{i % 50}.g0.a1.task.succeeded",
            "type": "task.succeeded",
            "ticket_id": f"S{i // 50}",
            "task": f"t{i % 50}",
            "agent": "bench",
            "at": "2026-11-24T10:00:00+00:00",
            "data": {"phase": "implementation", "capability": "shell", "attempt": 1,
                     "generation": 0, "duration_s": 0.01},
        }
    ).encode()  # fmt: skip


async def publish_events(bus: Bus, first: int, count: int) -> None:
    for i in range(first, first + count):
        event = synthetic(i)
        subject = c.event_subject(f"S{i // 50}", "task.succeeded")
        await bus.nc.publish(subject, event, headers={c.HDR_MSG_ID: f"syn-{i}"})
    await bus.nc.flush()


async def stream_count(bus: Bus) -> int:
    info = await bus.js.stream_info(c.EVENTS_STREAM)
    return int(info.state.messages)


def store_count(reader: Reader) -> int:
    try:
        return int(reader.query("SELECT count(*) FROM events").rows[0][0])
    except Exception:  # noqa: BLE001 - nothing published yet
        return 0


async def test_kill9_mid_batch_then_restart_records_every_event_once(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"record_batch": 500, "store_publish_interval_s": 0.2})
    env = agent_env(s)
    first = await AgentProcess("recorder", "rec-1", env, tmp_path / "r1.log").start(bus)
    await publish_events(bus, 0, 20_000)
    reader = Reader(s.published_dir, refresh_s=0.0)
    # Kill it once it is part-way through.
    await wait_until(lambda: _async(0 < store_count(reader) < 20_000), timeout=60)
    await first.kill9()

    second = await AgentProcess("recorder", "rec-2", env, tmp_path / "r2.log").start(bus)
    try:
        total = await stream_count(bus)
        await wait_until(lambda: _async(store_count(reader) >= total), timeout=90)
        # Exactly the stream's events: nothing lost, nothing twice.
        rows = reader.query("SELECT count(*), count(DISTINCT id) FROM events").rows[0]
        assert rows[0] == rows[1] == await stream_count(bus)
        synthetic_rows = reader.query("SELECT count(*) FROM events WHERE agent = 'bench'")
        assert synthetic_rows.rows[0][0] == 20_000
    finally:
        await second.terminate()


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


async def _async[T](value: T) -> T:
    return value


async def test_sql_answers_while_tickets_run_and_stays_read_only(
    bus: Bus,
    settings: Settings,
    running: Running,
    start_planner: object,
    start_worker: object,
) -> None:
    s = settings.model_copy(update={"store_publish_interval_s": 0.2})
    await running.start(Recorder(bus, s))
    await start_planner()  # type: ignore[operator]
    await start_worker()  # type: ignore[operator]
    tasks = [
        {"name": "a", "phase": "design", "command": "true"},
        {"name": "b", "phase": "implementation", "command": "exit 3", "max_retries": 1},
    ]
    assert (await submit(bus, {"id": "Q1", "title": "q", "tasks": tasks}))["ok"]
    await wait_until(lambda: ticket_finished(bus, "Q1"), timeout=30)
    reader = Reader(s.published_dir, refresh_s=0.0)

    async def recorded_failure() -> bool:
        q = "SELECT count(*) FROM events WHERE ticket_id = 'Q1' AND type = 'ticket.failed'"
        return store_count(reader) > 0 and reader.query(q).rows[0][0] == 1

    await wait_until(recorded_failure, timeout=30)
    env = {**agent_env(s)}
    code, rows, err = await omoi_sql(
        env,
        "SELECT task, outcome, error_category FROM task_attempts WHERE ticket_id = 'Q1' "
        "ORDER BY task, attempt",
    )
    assert code == 0, err
    assert {"task": "a", "outcome": "succeeded", "error_category": None} in rows
    assert [r["outcome"] for r in rows if r["task"] == "b"] == ["retrying", "failed"]

    # The stock duckdb CLI reads the published files with nothing of ours loaded.
    cli = run(
        DUCKDB, "-init", str(s.published_dir / "omoi.sql"), "-csv", "-noheader", "-c",
        "SELECT count(*) FROM task_attempts WHERE ticket_id = 'Q1'",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip().splitlines()[-1] == str(len(rows))

    # Writes and file access are refused, through the CLI as through the library.
    bad = run(OMOI, "sql", "DROP TABLE events", env=env)
    assert bad.returncode == 1 and "read" in bad.stderr.lower()
    with pytest.raises(ReadOnlyError):
        reader.query("DELETE FROM events")
    assert store_count(reader) > 0

"""Log lines in the store: parsing what agents ship, the `logs` view, and `omoi logs` queries."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.logs import JsonFormatter
from bus import constants as c
from bus.log_context import logging_context
from cli.logs import LogFilter, rows_as_lines
from store import EventStore, Reader, StoreError
from store.records import LogLine

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def shipped(
    seq: int,
    message: str,
    *,
    level: str = "info",
    role: str = "worker",
    agent: str = "w-1",
    **fields: Any,
) -> LogLine:
    line = {
        "ts": (T0 + timedelta(seconds=seq)).isoformat(),
        "level": level,
        "logger": "agents.worker.agent",
        "message": message,
        **fields,
    }
    return LogLine.from_message(c.log_subject(role, agent), json.dumps(line).encode(), seq)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "omoi.duckdb", tmp_path / "published") as s:
        yield s


def test_a_formatted_record_parses_into_the_line_it_was() -> None:
    record = logging.LogRecord(
        "agents.worker.agent", logging.WARNING, "x.py", 1, "T.a %s", ("failed",), None
    )
    with logging_context(ticket="T", task="a", subject="omoi.tasks.design.shell.T.a"):
        raw = JsonFormatter().format(record).encode()
    line = LogLine.from_message(c.log_subject("worker", "w-7"), raw, 42)
    assert (line.stream_seq, line.level, line.message) == (42, "warning", "T.a failed")
    assert (line.role, line.agent, line.ticket_id, line.task) == ("worker", "w-7", "T", "a")
    assert line.subject == "omoi.tasks.design.shell.T.a"
    assert line.at.tzinfo is not None


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{}", b'{"ts": "2026-01-01T00:00:00", "level": "info", "message": "naive"}',
     b'{"ts": "2026-01-01T00:00:00Z", "level": "", "message": "no level"}'],
)  # fmt: skip
def test_what_is_not_a_log_line_raises_store_error(raw: bytes) -> None:
    with pytest.raises(StoreError, match="not a log line"):
        LogLine.from_message(c.log_subject("worker", "w-1"), raw, 1)


def test_lines_are_recorded_once_and_published_as_the_logs_view(store: EventStore) -> None:
    lines = [
        shipped(1, "started"),
        shipped(2, "T.a failed: exit 3", level="warning", ticket="T", task="a"),
        shipped(3, "reconciled", role="planner", agent="p-1", ticket="T"),
    ]
    assert store.ingest_logs(lines) == 3
    assert store.ingest_logs(lines) == 0  # a redelivered batch
    store.publish()
    reader = Reader(store.published_dir)
    result = reader.query(
        "SELECT stream_seq, level, role, agent, ticket_id, task FROM logs ORDER BY stream_seq"
    )
    assert result.rows == [
        (1, "info", "worker", "w-1", None, None),
        (2, "warning", "worker", "w-1", "T", "a"),
        (3, "info", "planner", "p-1", "T", None),
    ]
    # The published script serves the same view to a plain DuckDB.
    script = (store.published_dir / "omoi.sql").read_text()
    assert "CREATE OR REPLACE VIEW logs AS" in script


def test_the_filter_finds_the_same_lines_in_the_store_and_in_the_stream(
    store: EventStore,
) -> None:
    lines = [
        shipped(1, "T.a started", ticket="T", task="a"),
        shipped(2, "T.a failed: Disk FULL", level="error", ticket="T", task="a"),
        shipped(3, "T.b failed: disk full", level="warning", ticket="T", task="b"),
        shipped(4, "U.a failed: disk full", level="critical", ticket="U", task="a"),
        shipped(5, "T.a retrying", level="debug", ticket="T", task="a"),
        shipped(6, "T.a crashed", level="error", ticket="T", task="a", exc="OSError: disk full"),
    ]
    store.ingest_logs(lines)
    store.publish()
    reader = Reader(store.published_dir)
    cases = {
        LogFilter(ticket="T", task="a"): [1, 2, 5, 6],
        LogFilter(ticket="T", level="warning"): [2, 3, 6],
        LogFilter(grep="disk full"): [2, 3, 4, 6],
        LogFilter(ticket="T", task="a", level="warning", grep="DISK"): [2, 6],
        LogFilter(role="planner"): [],
        LogFilter(agent="w-1", level="critical"): [4],
        # Quotes are parameters, never SQL.
        LogFilter(grep="'; DROP TABLE logs; --"): [],
    }
    for flt, seqs in cases.items():
        sql, params = flt.query(limit=100)
        rows = rows_as_lines(*_result(reader, sql, params))
        assert [r["stream_seq"] for r in rows] == seqs, flt
        assert [line.stream_seq for line in lines if flt.matches(line)] == seqs, flt
    sql, params = LogFilter(ticket="T").query(limit=2)
    assert [r["stream_seq"] for r in rows_as_lines(*_result(reader, sql, params))] == [5, 6]


def _result(reader: Reader, sql: str, params: list[Any]) -> tuple[list[str], list[Any]]:
    result = reader.query(sql, params)
    return result.columns, result.rows


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="one of debug, info"):
        LogFilter(level="loud")


def test_role_and_agent_narrow_the_stream_subject() -> None:
    assert LogFilter().subject() == "omoi.logs.>"
    assert LogFilter(role="worker").subject() == "omoi.logs.worker.*"
    assert LogFilter(role="worker", agent="w-1").subject() == "omoi.logs.worker.w-1"

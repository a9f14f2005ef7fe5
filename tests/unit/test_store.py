"""The analytics store: ingest, views, publishing to Parquet, compaction, pruning, reading.

Everything runs on real DuckDB files under tmp_path. Time moves through an injected clock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from schemas import Event, EventType
from schemas.audit import AuditAction, AuditEntry, AuditOutcome
from schemas.common import Phase
from schemas.gate import CheckKind, CheckResult, GateVerdict
from store import (
    DeadLetter,
    EventStore,
    Reader,
    RecordedEvent,
    StoreError,
)
from store.records import AuditRecord

T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
E = EventType


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# A ticket's life as the agents publish it (ids as agents/events.py builds them).


def task_ev(
    task: str, kind: EventType, t: float, attempt: int, phase: str, cap: str, **data: Any
) -> Event:
    return Event(
        id=f"T1.{task}.g0.a{attempt}.{kind.value}",
        type=kind,
        ticket_id="T1",
        task=task,
        agent=data.get("worker", "planner-1"),
        at=at(t),
        data={"phase": phase, "capability": cap, "attempt": attempt, "generation": 0, **data},
    )


def usage(prompt: int, completion: int, cost: float) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cost_usd": cost}


def verdict(attempt: int, passed: list[bool], t: float) -> Event:
    checks = [
        CheckResult(name=f"c{i}", kind=CheckKind.FILE, passed=p, detail="")
        for i, p in enumerate(passed)
    ]
    v = GateVerdict(
        ticket_id="T1",
        phase=Phase.REQUIREMENTS,
        attempt=attempt,
        passed=all(passed),
        commit="c0ffee",
        checks=checks,
        feedback="" if all(passed) else "SPEC.md lacks acceptance criteria",
        at=at(t),
    )
    kind = E.GATE_PASSED if v.passed else E.GATE_FAILED
    return Event(
        id=f"T1.gate.requirements.{attempt}.verdict",
        type=kind,
        ticket_id="T1",
        agent="validator-1",
        at=at(t),
        data=v.model_dump(mode="json"),
    )


def ticket_ev(id_: str, kind: EventType, t: float, ticket: str = "T1", **data: Any) -> Event:
    return Event(id=id_, type=kind, ticket_id=ticket, agent="planner-1", at=at(t), data=data)


def agent_ev(kind: EventType, t: float) -> Event:
    data = {"role": "worker", "last_beat": at(30).isoformat(), "current_task": None}
    return Event(
        id=f"w1.{kind.value}.{t}", type=kind, ticket_id="_agents", agent="w1", at=at(t), data=data
    )


def moved(n: int, frm: str | None, to: str, t: float) -> Event:
    data = {"phase": to, "from": frm, "to": to, "reason": "ok"}
    kind = E.TICKET_PHASE_CHANGED
    return Event(id=f"T1.phase_changed.{n}", type=kind, ticket_id="T1", at=at(t), data=data)


def lifecycle() -> list[RecordedEvent]:
    """spec: queued, started, retrying, started, succeeded; build: started, failed;
    a gate that fails then passes; three phase changes; the ticket fails; an agent goes
    stale and recovers; another submission is rejected."""
    spec = ("spec", "requirements", "shell")
    build = ("build", "implementation", "agent")
    events = [
        ticket_ev(
            "T1.created", E.TICKET_CREATED, -1, title="Add slugify", tasks=["spec", "build"],
            workflow="default", priority="high",
        ),
        moved(1, None, "requirements", 0),
        task_ev(spec[0], E.TASK_QUEUED, 0, 0, *spec[1:]),
        task_ev(spec[0], E.TASK_STARTED, 2, 1, *spec[1:], worker="w1"),
        task_ev(spec[0], E.TASK_PROGRESS, 3, 1, *spec[1:], tool_calls=1),
        task_ev(
            spec[0], E.TASK_RETRYING, 5, 1, *spec[1:], worker="w1",
            error={"category": "exit_code", "message": "exit 1"}, delay_s=1.5,
            usage=usage(100, 50, 0.01),
        ),
        task_ev(spec[0], E.TASK_STARTED, 8, 2, *spec[1:], worker="w2"),
        task_ev(
            spec[0], E.TASK_SUCCEEDED, 12, 2, *spec[1:], worker="w2", duration_s=4.0,
            exit_code=0, commit="c0ffee", files=["SPEC.md"], usage=usage(200, 80, 0.02),
        ),
        verdict(1, [True, False], 12.5),
        verdict(2, [True, True], 13),
        moved(2, "requirements", "design", 13),
        moved(3, "design", "implementation", 13.5),
        task_ev(build[0], E.TASK_QUEUED, 20, 0, *build[1:]),
        task_ev(build[0], E.TASK_STARTED, 21, 1, *build[1:], worker="w1"),
        task_ev(
            build[0], E.TASK_FAILED, 31, 1, *build[1:], worker="w1",
            error={"category": "budget", "message": "over budget"}, usage=usage(1000, 500, 0.5),
        ),
        ticket_ev(
            "T1.ticket.failed.3", E.TICKET_FAILED, 32, phase="implementation", status="failed",
            reason="task build failed",
        ),
        agent_ev(E.AGENT_STARTED, -10),
        agent_ev(E.AGENT_STALE, 40),
        agent_ev(E.AGENT_RECOVERED, 45),
        ticket_ev(
            "T2.rejected.invalid", E.TICKET_REJECTED, 50, ticket="T2",
            error={"category": "invalid", "message": "no title"}, bytes=12,
        ),
    ]  # fmt: skip
    return [RecordedEvent.from_event_json(e.to_json(), seq) for seq, e in enumerate(events, 1)]


def synthetic(n: int, start: int = 0, day: float = 0) -> list[RecordedEvent]:
    return [
        RecordedEvent(
            id=f"X{i}", type="task.progress", ticket_id=f"T{i % 50}", task="t", agent="w",
            at=at(day * 86400 + i), data='{"phase":"design","attempt":1,"generation":0}',
            stream_seq=1000 + i,
        )
        for i in range(start, start + n)
    ]  # fmt: skip


def letter(seq: int, t: float = 0, payload: bytes = b'{"title": 1}') -> DeadLetter:
    headers = {
        "Omoi-Reason": "title: not a string",
        "Omoi-Error-Category": "invalid_ticket",
        "Omoi-Origin-Subject": "omoi.tickets.submit",
        "Omoi-Origin-Seq": str(seq * 10),
    }
    return DeadLetter.from_message("omoi.dlq.intake", payload, headers, seq, at(t))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "omoi.duckdb", tmp_path / "published") as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reader(store: EventStore, clock: Clock) -> Reader:
    return Reader(store.published_dir, refresh_s=1.0, clock=clock)


def count(r: Reader, table: str = "events") -> int:
    return int(r.query(f"SELECT count(*) FROM {table}").rows[0][0])


def parquet_rows(path: Path) -> int:
    with duckdb.connect() as con:
        return int(con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0])


# Ingest


def test_ingest_dedups_by_id(store: EventStore) -> None:
    batch = lifecycle()
    assert store.ingest(batch) == len(batch)
    assert store.ingest(batch) == 0
    assert store.ingest([*batch[:3], *synthetic(2), synthetic(2)[0]]) == 2
    assert store.counts() == {
        "events": len(batch) + 2,
        "dead_letters": 0,
        "audit_events": 0,
        "logs": 0,
        "spans": 0,
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"type": "task.queued", "ticket_id": "T1", "at": "2025-01-01T00:00:00Z"}',
        b'{"id": "a", "type": "x", "ticket_id": "T1", "at": "2025-01-01T00:00:00"}',
        b'{"id": "a", "type": "x", "ticket_id": "T1", "at": "2025-01-01T00:00:00Z", "data": 3}',
    ],
)
def test_invalid_event_bytes_raise_store_error(raw: bytes) -> None:
    with pytest.raises(StoreError):
        RecordedEvent.from_event_json(raw, 1)


def test_hundred_thousand_events_in_batches(store: EventStore) -> None:
    events = synthetic(100_000)
    started = time.perf_counter()
    inserted = sum(store.ingest(events[i : i + 5_000]) for i in range(0, len(events), 5_000))
    elapsed = time.perf_counter() - started
    assert inserted == 100_000
    assert store.counts()["events"] == 100_000
    assert elapsed < 20, f"{100_000 / elapsed:.0f} events/s"


def test_dead_letters(store: EventStore, reader: Reader) -> None:
    big = letter(3, payload=b"\xff" + b"x" * 100_000)
    assert big.payload.startswith("\ufffd") and len(big.payload.encode()) < 64 * 1024 + 3
    assert (big.origin, big.origin_seq, big.category) == ("intake", 30, "invalid_ticket")
    assert store.ingest_dead_letters([letter(1), letter(2), big]) == 3
    assert store.ingest_dead_letters([letter(2)]) == 0
    store.publish()
    rows = reader.query("SELECT stream_seq, origin, reason FROM dead_letters ORDER BY 1").rows
    assert rows[0] == (1, "intake", "title: not a string") and len(rows) == 3
    with pytest.raises(StoreError):
        DeadLetter.from_message("omoi.dlq.intake", b"", None, 9, datetime(2025, 1, 1))  # noqa: DTZ001


def test_audit_entries_become_the_audit_log_view(store: EventStore, reader: Reader) -> None:
    entries = [
        AuditEntry(
            id=f"a{i}", at=at(i), action=AuditAction.AUTH_FAILURE, outcome=AuditOutcome.DENIED,
            actor="anonymous", source="10.0.0.9", target="/api/v1/tickets", status=401,
        )
        for i in range(3)
    ]  # fmt: skip
    records = [AuditRecord.from_json(e.to_json(), i + 1) for i, e in enumerate(entries)]
    assert store.ingest_audit(records) == 3
    assert store.ingest_audit(records[:1]) == 0  # a redelivery is harmless
    store.publish()
    rows = reader.query(
        'SELECT action, outcome, actor, source, status, count FROM audit_log ORDER BY "at"'
    ).rows
    assert rows == [("auth.failure", "denied", "anonymous", "10.0.0.9", 401, 1)] * 3
    # A newer writer's action is recorded, not refused; a non-entry is a StoreError.
    newer = AuditRecord.from_json(
        b'{"id":"n","at":"2025-01-01T10:00:00Z","action":"x.y",'
        b'"outcome":"ok","actor":"nats:planner","extra":1}',
        9,
    )
    assert (newer.action, newer.count, newer.via) == ("x.y", 1, "")
    with pytest.raises(StoreError):
        AuditRecord.from_json(b'{"id":"n"}', 10)


# Views


@pytest.fixture
def published(store: EventStore) -> EventStore:
    store.ingest(lifecycle())
    store.publish()
    return store


def test_task_attempts_view(published: EventStore, reader: Reader) -> None:
    rows = reader.query(
        "SELECT task, attempt, phase, capability, queued_at, started_at, finished_at, worker, "
        "outcome, error_category, prompt_tokens, completion_tokens, cost_usd, "
        "schedule_to_start_ms, run_ms FROM task_attempts ORDER BY task, attempt"
    ).rows
    assert rows == [
        ("build", 1, "implementation", "agent", at(20), at(21), at(31), "w1", "failed",
         "budget", 1000, 500, 0.5, 1000.0, 10000.0),
        ("spec", 1, "requirements", "shell", at(0), at(2), at(5), "w1", "retrying",
         "exit_code", 100, 50, 0.01, 2000.0, 3000.0),
        # Ready again when the retry's backoff ended: 5 s + 1.5 s.
        ("spec", 2, "requirements", "shell", at(6.5), at(8), at(12), "w2", "succeeded",
         None, 200, 80, 0.02, 1500.0, 4000.0),
    ]  # fmt: skip


def test_ticket_task_gate_and_agent_views(published: EventStore, reader: Reader) -> None:
    q = reader.query
    assert q("SELECT * FROM tickets ORDER BY id").to_dicts() == [
        {"id": "T1", "title": "Add slugify", "workflow": "default", "priority": "high",
         "created_at": at(-1), "finished_at": at(32), "status": "failed",
         "phase": "implementation", "tasks": 2, "reason": "task build failed"},
        {"id": "T2", "title": None, "workflow": None, "priority": None, "created_at": None,
         "finished_at": None, "status": "rejected", "phase": None, "tasks": None,
         "reason": None},
    ]  # fmt: skip
    assert q(
        "SELECT task, phase, capability, status, attempts, generation, error_category, "
        "error_message, worker FROM tasks ORDER BY task"
    ).rows == [
        ("build", "implementation", "agent", "failed", 1, 0, "budget", "over budget", "w1"),
        ("spec", "requirements", "shell", "succeeded", 2, 0, "exit_code", "exit 1", "w2"),
    ]
    assert q('SELECT from_phase, to_phase, "at" FROM phase_transitions ORDER BY "at"').rows == [
        (None, "requirements", at(0)),
        ("requirements", "design", at(13)),
        ("design", "implementation", at(13.5)),
    ]
    assert q(
        "SELECT phase, attempt, passed, commit, checks_passed, checks_total, feedback <> '' "
        "FROM gate_verdicts ORDER BY attempt"
    ).rows == [
        ("requirements", 1, False, "c0ffee", 1, 2, True),
        ("requirements", 2, True, "c0ffee", 2, 2, False),
    ]
    assert q('SELECT type, role, gap_s FROM agent_health ORDER BY "at"').rows == [
        ("agent.started", "worker", None),
        ("agent.stale", "worker", 50.0),
        ("agent.recovered", "worker", 5.0),
    ]


def test_analytics_views(published: EventStore, reader: Reader) -> None:
    q = reader.query
    latency = q(
        "SELECT phase, capability, attempts, schedule_to_start_p50_ms, schedule_to_start_p95_ms,"
        " run_p50_ms, run_p99_ms FROM latency_by_phase_capability ORDER BY phase"
    ).rows
    assert latency == [
        ("implementation", "agent", 1, 1000.0, 1000.0, 10000.0, 10000.0),
        ("requirements", "shell", 2, 1750.0, pytest.approx(1975.0), 3500.0, pytest.approx(3990.0)),
    ]
    assert q("SELECT * FROM retry_causes").rows == [("exit_code", 1)]
    assert q("SELECT * FROM failure_rate_by_capability ORDER BY capability").rows == [
        ("agent", 1, 1, 1.0),
        ("shell", 2, 1, 0.5),
    ]
    assert q("SELECT * FROM throughput_per_minute").rows == [(at(0), 1, 1)]
    cost = q("SELECT * FROM cost_by_ticket_phase ORDER BY phase").rows
    assert cost == [
        ("T1", "implementation", 1, 1000, 500, 1500, 0.5),
        ("T1", "requirements", 2, 300, 130, 430, pytest.approx(0.03)),
    ]


def test_writer_database_has_the_same_views(published: EventStore, reader: Reader) -> None:
    sql = "SELECT * FROM task_attempts ORDER BY task, attempt"
    published.close()
    with duckdb.connect(str(published.path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        assert con.execute(sql).fetchall() == reader.query(sql).rows


def test_published_script_works_in_a_plain_duckdb_process(
    published: EventStore, reader: Reader
) -> None:
    sql = (
        "SELECT task, attempt, outcome, schedule_to_start_ms, run_ms, cost_usd "
        "FROM task_attempts ORDER BY task, attempt"
    )
    script = "import duckdb, json, sys; duckdb.sql(open(sys.argv[1]).read()); "
    script += f"print(json.dumps(duckdb.sql({sql!r}).fetchall()))"
    done = subprocess.run(
        [sys.executable, "-c", script, str(published.published_dir / "omoi.sql")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert [tuple(r) for r in json.loads(done.stdout)] == reader.query(sql).rows


# Publishing


def segments(store: EventStore, kind: str = "events") -> list[str]:
    return sorted(p.name for p in (store.published_dir / kind).glob("*.parquet"))


def test_empty_store_publishes_a_script_with_empty_tables(store: EventStore) -> None:
    assert store.publish() == []
    con = duckdb.connect()
    con.execute((store.published_dir / "omoi.sql").read_text())
    assert con.execute("SELECT count(*) FROM tasks").fetchall() == [(0,)]
    assert Reader(store.published_dir).query("SELECT count(*) FROM tickets").rows == [(0,)]


def test_crash_between_ingest_and_publish_loses_nothing(tmp_path: Path) -> None:
    db, pub = tmp_path / "omoi.duckdb", tmp_path / "published"
    with EventStore(db, pub) as first:
        first.ingest(synthetic(100))
        first.publish()
        first.ingest(synthetic(50, start=100))
    with EventStore(db, pub) as second:
        written = second.publish()
        assert len(written) == 1 and parquet_rows(written[0]) == 50
        assert second.publish() == []
    assert count(Reader(pub)) == 150


def test_crash_before_watermark_republishes_the_same_file(tmp_path: Path) -> None:
    db, pub = tmp_path / "omoi.duckdb", tmp_path / "published"
    with EventStore(db, pub) as s:
        s.ingest(synthetic(100))
        (seg1,) = s.publish()
        s.ingest(synthetic(50, start=100))
        (seg2,) = s.publish()
    # The second file went into place but the watermark move was lost.
    with duckdb.connect(str(db)) as con:
        last = int(seg1.name.split("-")[2].split(".")[0])
        con.execute("UPDATE _published SET last_seq = ? WHERE kind = 'events'", [last])
    with EventStore(db, pub) as s:
        s.ingest(synthetic(25, start=150))
        written = s.publish()
        assert written[0] == seg2 and len(written) == 2
        assert [parquet_rows(p) for p in written] == [50, 25]
        assert s.publish() == []
    assert len(list((pub / "events").iterdir())) == 3
    assert count(Reader(pub)) == 175


def test_compact_merges_segments(store: EventStore, reader: Reader, clock: Clock) -> None:
    for i in range(5):
        store.ingest(synthetic(10, start=10 * i))
        store.publish()
    before = reader.query("SELECT * FROM events ORDER BY id").rows
    assert store.compact(max_segments=5) == []
    # A segment kept aside stands for a compaction that crashed before removing inputs.
    leftover = store.published_dir / "events" / segments(store)[1]
    shutil.copy(leftover, store.published_dir / "aside.parquet")
    (merged,) = store.compact(max_segments=3)
    assert segments(store) == [merged.name]
    shutil.copy(store.published_dir / "aside.parquet", leftover)
    clock.now += 1
    assert reader.query("SELECT * FROM events ORDER BY id").rows == before
    store.ingest(synthetic(10, start=50))
    store.publish()
    assert len(segments(store)) == 2 and leftover.name not in segments(store)
    clock.now += 1
    assert count(reader) == 60


def test_prune_removes_old_rows_from_db_and_segments(
    store: EventStore, reader: Reader, clock: Clock
) -> None:
    store.ingest(synthetic(10, day=-30))
    store.publish()
    store.ingest([*synthetic(5, start=10, day=-30), *synthetic(5, start=15)])
    store.ingest_dead_letters([letter(1, t=-30 * 86400), letter(2)])
    store.publish()
    store.ingest(synthetic(10, start=20))
    store.publish()
    assert len(segments(store)) == 3
    assert store.prune(T0 - timedelta(days=1)) == 16
    assert store.counts() == {
        "events": 15,
        "dead_letters": 1,
        "audit_events": 0,
        "logs": 0,
        "spans": 0,
    }
    assert len(segments(store)) == 2
    assert count(reader) == 15
    assert count(reader, "dead_letters") == 1
    assert store.prune(T0 + timedelta(days=1)) == 16
    assert segments(store) == [] and segments(store, "dead_letters") == []
    clock.now += 1
    assert count(reader) == 0
    with pytest.raises(StoreError):
        store.prune(datetime(2025, 1, 1))  # noqa: DTZ001


# Reader


def test_reader_sees_new_segments_after_refresh(
    store: EventStore, reader: Reader, clock: Clock
) -> None:
    store.ingest(synthetic(10))
    store.publish()
    assert count(reader) == 10
    store.ingest(synthetic(10, start=10))
    store.publish()
    clock.now += 0.5
    assert count(reader) == 10  # checked at most once per refresh_s
    clock.now += 0.5
    assert count(reader) == 20
    assert "task_attempts" in reader.tables() and "events" in reader.tables()


def test_max_rows_truncates(store: EventStore, reader: Reader) -> None:
    store.ingest(synthetic(30))
    store.publish()
    result = reader.query("SELECT id FROM events", max_rows=10)
    assert len(result.rows) == 10 and result.truncated
    assert not reader.query("SELECT id FROM events", max_rows=30).truncated


def test_values_are_json_friendly(reader: Reader) -> None:
    result = reader.query(
        "SELECT 1.25::DECIMAL(5, 2) AS d, INTERVAL 90 SECOND AS i, 'ab'::BLOB AS b, "
        "'4c1a2b1e-8f5e-4c38-9a53-0c1f6b1f1d2e'::UUID AS u, [1.5::DECIMAL(3, 1)] AS l, "
        "TIMESTAMPTZ '2025-01-01 10:00:00+00' AS t, NULL AS n"
    )
    assert result.rows == [
        (1.25, 90.0, "6162", "4c1a2b1e-8f5e-4c38-9a53-0c1f6b1f1d2e", [1.5], T0, None)
    ]
    assert result.to_csv().splitlines()[1].endswith(",[1.5],2025-01-01T10:00:00+00:00,")
    json.dumps(result.to_dicts(), default=datetime.isoformat)


def test_concurrent_queries_during_reloads(store: EventStore) -> None:
    reader = Reader(store.published_dir, refresh_s=0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(20):
                assert count(reader) % 10 == 0
        except (AssertionError, StoreError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(5):
        store.ingest(synthetic(10, start=10 * i))
        store.publish()
    for t in threads:
        t.join()
    assert errors == []
    assert count(reader) == 50

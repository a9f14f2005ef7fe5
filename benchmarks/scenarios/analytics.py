"""Analytics: the README's five example queries over a store of a million events.

The store is built the way the recorder builds it (`EventStore.ingest` in big batches, then
`publish`), from synthetic ticket lives: phase changes, tasks that are queued, started,
sometimes retried or failed, with usage and durations, and a gate verdict per phase. The
queries then run through `store.reader.Reader`, as `omoi sql` and the gateway run them.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.common import BenchConfig, Metric
from store.reader import Reader
from store.writer import EventStore, RecordedEvent

# The two tickets the README's queries filter on exist in the data, as tickets 0 and 1.
COST_TICKET = "T-26b6517e29db"
FLAKY_TICKET = "T-263082fda52d"

# Copied from README "Analytics in SQL" (q5's "at" quoted, as the shell meant it).
QUERIES: dict[str, str] = {
    "q1": "SELECT id, title, workflow, status, phase, tasks FROM tickets ORDER BY created_at",
    "q2": "SELECT phase, capability, attempts, round(schedule_to_start_p50_ms, 1) AS "
    "start_p50_ms, round(run_p50_ms) AS run_p50_ms, round(run_p95_ms) AS run_p95_ms FROM "
    "latency_by_phase_capability WHERE capability = 'agent' ORDER BY run_p50_ms DESC",
    "q3": "SELECT task, attempt, outcome, error_category, error_message FROM task_attempts "
    f"WHERE ticket_id = '{FLAKY_TICKET}' ORDER BY started_at",
    "q4": "SELECT phase, tokens, round(cost_usd, 4) AS cost_usd FROM cost_by_ticket_phase "
    f"WHERE ticket_id = '{COST_TICKET}' ORDER BY cost_usd DESC",
    "q5": "SELECT phase, attempt, passed, checks_passed || '/' || checks_total AS checks, "
    'commit[:10] AS commit FROM gate_verdicts ORDER BY "at"',
}

PHASE_TASKS = {
    "requirements": ("spec", "research"),
    "design": ("design", "api"),
    "implementation": ("build", "lint"),
    "testing": ("test", "e2e"),
    "deployment": ("deploy", "smoke"),
}
T0 = datetime(2025, 6, 1, tzinfo=UTC)
BATCH = 100_000
SCENARIO = "analytics"
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _ticket_id(i: int) -> str:
    return (COST_TICKET, FLAKY_TICKET)[i] if i < 2 else f"T-{i:012x}"


class _Ticket:
    """Builds one ticket's events in time order."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.id = _ticket_id(index)
        self.rng = rng
        self.now = T0 + timedelta(seconds=index * 1.7)
        self.out: list[tuple[str, str, str | None, str | None, datetime, dict[str, Any]]] = []

    def emit(
        self, id_: str, kind: str, task: str | None, agent: str | None, data: dict[str, Any]
    ) -> None:
        self.now += timedelta(milliseconds=self.rng.uniform(0.5, 40))
        self.out.append((f"{self.id}.{id_}", kind, task, agent, self.now, data))

    def task(self, name: str, phase: str, cap: str) -> bool:
        """A task's attempts; False if its last one failed."""
        base = {"phase": phase, "capability": cap, "generation": 0}
        rng = self.rng
        self.emit(
            f"{name}.g0.a0.task.queued", "task.queued", name, "planner-1", {**base, "attempt": 0}
        )
        attempts = 1 + (rng.random() < 0.12) + (rng.random() < 0.03)
        failed = rng.random() < 0.02
        for attempt in range(1, attempts + 1):
            worker = f"worker-{rng.randrange(8)}"
            a = {**base, "attempt": attempt, "worker": worker}
            prefix = f"{name}.g0.a{attempt}"
            self.emit(f"{prefix}.task.started", "task.started", name, worker, a)
            if cap == "agent" and rng.random() < 0.5:
                self.emit(
                    f"{prefix}.task.progress", "task.progress", name, worker, {**a, "tool_calls": 3}
                )
            self.now += timedelta(seconds=rng.uniform(0.2, 20) * (8 if cap == "agent" else 1))
            prompt, completion = rng.randrange(500, 20_000), rng.randrange(100, 4000)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_usd": round(prompt * 1e-6 + completion * 4e-6, 6),
            }
            if attempt < attempts or failed:
                error = {
                    "category": rng.choice(("exit_code", "timeout", "budget")),
                    "message": "exit code 1",
                }
                last = attempt == attempts
                kind = "task.failed" if last else "task.retrying"
                extra = {} if last else {"delay_s": round(rng.uniform(0.8, 1.2) * attempt, 3)}
                self.emit(
                    f"{prefix}.{kind}",
                    kind,
                    name,
                    worker,
                    {**a, "error": error, "usage": usage, **extra},
                )
            else:
                result = {
                    "duration_s": 1.5,
                    "exit_code": 0,
                    "commit": f"{rng.getrandbits(64):016x}",
                    "usage": usage,
                }
                self.emit(
                    f"{prefix}.task.succeeded", "task.succeeded", name, worker, {**a, **result}
                )
        return not failed

    def gate(self, phase: str) -> bool:
        """Verdicts until one passes, at most three; False if none did."""
        return any(self.verdict(phase, attempt) for attempt in range(1, 4))

    def verdict(self, phase: str, attempt: int) -> bool:
        checks = [
            {"name": f"c{k}", "kind": "command", "passed": self.rng.random() > 0.05, "detail": ""}
            for k in range(self.rng.randrange(1, 4))
        ]
        passed = all(ch["passed"] for ch in checks)
        data = {
            "ticket_id": self.id,
            "phase": phase,
            "attempt": attempt,
            "passed": passed,
            "commit": f"{self.rng.getrandbits(64):016x}",
            "checks": checks,
            "feedback": "" if passed else "a check failed",
        }
        kind = "gate.passed" if passed else "gate.failed"
        self.emit(f"gate.{phase}.{attempt}.verdict", kind, None, "validator-1", data)
        return passed

    def life(self) -> None:
        tasks = [t for names in PHASE_TASKS.values() for t in names]
        created = {
            "title": f"Ticket {self.id}",
            "workflow": "default",
            "priority": "normal",
            "tasks": tasks,
        }
        self.emit("ticket.created.0", "ticket.created", None, "planner-1", created)
        previous = None
        for n, (phase, names) in enumerate(PHASE_TASKS.items(), 1):
            moved = {
                "phase": phase,
                "status": "running",
                "from": previous,
                "to": phase,
                "reason": "gate passed",
            }
            self.emit(f"ticket.phase_changed.{n}", "ticket.phase_changed", None, "planner-1", moved)
            ok = all(
                [self.task(name, phase, ("shell", "agent")[k % 2]) for k, name in enumerate(names)]
            )
            if not (ok and self.gate(phase)):
                end = {"phase": phase, "status": "failed", "reason": f"{phase} did not pass"}
                self.emit(f"ticket.failed.{n}", "ticket.failed", None, "planner-1", end)
                return
            previous = phase
        end = {"phase": "done", "status": "done"}
        self.emit("ticket.done.5", "ticket.done", None, "planner-1", end)


def synthetic_events(n: int, seed: int = 7) -> Iterator[RecordedEvent]:
    """`n` events of whole ticket lives (the last one cut short), in stream order."""
    rng = random.Random(seed)
    seq = 0
    index = 0
    while True:
        ticket = _Ticket(index, rng)
        ticket.life()
        index += 1
        for id_, kind, task, agent, at, data in ticket.out:
            if seq == n:
                return
            seq += 1
            yield RecordedEvent(id_, kind, ticket.id, task, agent, at, _encode(data), seq)


def build(store: EventStore, n: int) -> float:
    """Fill the store with `n` events and publish them; returns the seconds spent in the
    store (ingest and publish), leaving out making up the events."""
    spent = 0.0
    batch: list[RecordedEvent] = []
    for event in synthetic_events(n):
        batch.append(event)
        if len(batch) == BATCH or event.stream_seq == n:
            start = time.perf_counter()
            store.ingest(batch)
            spent += time.perf_counter() - start
            batch = []
    start = time.perf_counter()
    store.publish()
    return spent + time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(reader: Reader, times: int) -> dict[str, list[float]]:
    """Each query `times` times, after a warm-up round; milliseconds per query."""
    for sql in QUERIES.values():
        reader.query(sql)
    timings: dict[str, list[float]] = {name: [] for name in QUERIES}
    for _ in range(times):
        for name, sql in QUERIES.items():
            start = time.perf_counter()
            reader.query(sql)
            timings[name].append((time.perf_counter() - start) * 1000)
    return timings


def _run(cfg: BenchConfig) -> list[Metric]:
    n = cfg.count(1_000_000)
    published = cfg.workdir / "published"
    start = time.perf_counter()
    with EventStore(cfg.workdir / "omoi.duckdb", published) as store:
        store_s = build(store, n)
        counted = store.counts()["events"]
    build_s = time.perf_counter() - start
    if counted != n:
        raise RuntimeError(f"the store holds {counted} events, expected {n}")
    reader = Reader(published, refresh_s=3600)
    try:
        start = time.perf_counter()
        reader.refresh()
        load_s = time.perf_counter() - start
        rows = reader.query(QUERIES["q3"]).rows
        if not rows:
            raise RuntimeError(f"q3 found no attempts of {FLAKY_TICKET}")
        timings = measure(reader, cfg.count(20, 5))
    finally:
        reader.close()
    sized = {"events": n}
    metrics = [
        Metric(SCENARIO, "build_s", build_s, "s", sized),
        Metric(SCENARIO, "store_ingest_events_per_s", n / store_s, "events/s", sized),
        Metric(SCENARIO, "reader_load_s", load_s, "s", sized),
    ]
    for name, values in timings.items():
        params = {"query": name}
        metrics.append(Metric(SCENARIO, "p50_ms", statistics.median(values), "ms", params))
        metrics.append(Metric(SCENARIO, "p95_ms", _percentile(values, 0.95), "ms", params))
    every = [v for values in timings.values() for v in values]
    metrics.append(Metric(SCENARIO, "p95_ms", _percentile(every, 0.95), "ms", {"query": "all"}))
    return metrics


async def run(cfg: BenchConfig) -> list[Metric]:
    return await asyncio.to_thread(_run, cfg)

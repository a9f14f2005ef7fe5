"""Synthetic attempts as the agents record them, for the anomaly benchmark and its tests:
`task.started` then `task.succeeded` or `task.failed` events, as RecordedEvents the store
ingests (ids and data as agents/events.py builds them)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from store.records import RecordedEvent

_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class Lane:
    """One (phase, capability) of the workload: a run time's median and spread (of its
    logarithm), its failure rate, and a cost per attempt (0: a shell task, no cost)."""

    phase: str
    capability: str
    run_s: float
    sigma: float = 0.35
    failure_rate: float = 0.02
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Attempt:
    ticket: str
    task: str
    lane: Lane
    worker: str
    started: datetime
    run_s: float
    failed: bool
    cost_usd: float | None


class Attempts:
    """Numbers attempts and turns them into events, in order."""

    def __init__(self) -> None:
        self.seq = 0
        self.count = 0

    def events(self, a: Attempt) -> list[RecordedEvent]:
        self.count += 1
        finished = a.started + timedelta(seconds=a.run_s)
        base = {"phase": a.lane.phase, "capability": a.lane.capability, "attempt": 1,
                "generation": 0, "worker": a.worker}  # fmt: skip
        end: dict[str, object] = {**base}
        if a.failed:
            end["error"] = {"category": "exit_code", "message": "exit code 1"}
        if a.cost_usd is not None:
            end["usage"] = {"prompt_tokens": 1000, "completion_tokens": 200,
                            "cost_usd": a.cost_usd}  # fmt: skip
        kind = "task.failed" if a.failed else "task.succeeded"
        out = []
        for type_, at, data in (("task.started", a.started, base), (kind, finished, end)):
            self.seq += 1
            out.append(
                RecordedEvent(
                    id=f"{a.ticket}.{a.task}.g0.a1.{type_}",
                    type=type_,
                    ticket_id=a.ticket,
                    task=a.task,
                    agent=a.worker,
                    at=at,
                    data=_encode(data),
                    stream_seq=self.seq,
                )
            )
        return out


def steady(
    rng: random.Random,
    lanes: Sequence[Lane],
    workers: Sequence[str],
    start: datetime,
    hours: float,
    per_hour: int,
    *,
    slow: dict[str, float] | None = None,
    failing: Sequence[str] = (),
    prefix: str = "T",
) -> Iterator[Attempt]:
    """`per_hour` attempts an hour for `hours`, spread evenly, each on a random lane and
    worker: run times log-normal around the lane's median, failures at its rate. A worker
    in `slow` runs that many times slower; one in `failing` fails every attempt."""
    slow = slow or {}
    n = int(hours * per_hour)
    step = 3600.0 / per_hour
    for i in range(n):
        lane = rng.choice(lanes)
        worker = rng.choice(workers)
        run_s = lane.run_s * math.exp(rng.gauss(0.0, lane.sigma)) * slow.get(worker, 1.0)
        failed = worker in failing or rng.random() < lane.failure_rate
        cost = lane.cost_usd * math.exp(rng.gauss(0.0, lane.sigma)) if lane.cost_usd else None
        yield Attempt(
            ticket=f"{prefix}{i // 5:06d}", task=f"t{i % 5}", lane=lane, worker=worker,
            started=start + timedelta(seconds=i * step + rng.random() * step),
            run_s=run_s, failed=failed, cost_usd=cost,
        )  # fmt: skip

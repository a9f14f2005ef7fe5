"""Scenario 2: schedule-to-start and end-to-end latency at a fixed arrival rate.

One-task tickets arrive at 200/s and at 1,000/s on two worker processes. Schedule-to-start
is from the moment the task became ready (its `task.queued` event) to the moment a worker
started it (`task.started`); end-to-end is from submission to `ticket.done`. All
timestamps come from the same host's clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.omoi_stack import Stack, omoi_stack
from bus import constants as c
from schemas import Event

RATES = (200, 1000)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def measure(stack: Stack, rate: int, n: int) -> tuple[list[float], list[float]]:
    queued: dict[str, datetime] = {}
    started: dict[str, datetime] = {}
    submitted: dict[str, float] = {}
    finished: dict[str, float] = {}
    all_done = asyncio.Event()

    async def on_event(msg: Any) -> None:
        event = Event.model_validate_json(msg.data)
        if event.type == "task.queued":
            queued.setdefault(event.ticket_id, event.at)
        elif event.type == "task.started":
            started.setdefault(event.ticket_id, event.at)
        elif event.type == "ticket.done":
            finished[event.ticket_id] = time.time()
            if len(finished) >= n:
                all_done.set()

    sub = await stack.bus.nc.subscribe("omoi.events.>", cb=on_event)
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(n):
        # Paced against the schedule, not the previous send, so the rate holds.
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        ticket_id = f"lat-{rate}-{i}"
        body = {"id": ticket_id, "title": "lat", "tasks": [
            {"name": "t", "phase": "implementation", "capability": "noop"}]}  # fmt: skip
        submitted[ticket_id] = time.time()
        await stack.bus.nc.publish(c.TRUSTED_SUBMIT_SUBJECT, json.dumps(body).encode())
    await asyncio.wait_for(all_done.wait(), timeout=600)
    await sub.unsubscribe()
    to_start = [(started[t] - queued[t]).total_seconds() * 1000 for t in started if t in queued]
    e2e = [(finished[t] - submitted[t]) * 1000 for t in finished if t in submitted]
    return to_start, e2e


async def run(cfg: BenchConfig) -> list[Metric]:
    out: list[Metric] = []
    for rate in RATES:
        # Omoi falls behind above ~150 tickets/s here; a bounded count keeps the
        # backlog (and the run) finite while the arrival rate is still the one asked for.
        n = cfg.count(2000)
        workdir = cfg.workdir / f"latency-{rate}"
        async with omoi_stack(workdir, workers=2, phases=("implementation",)) as stack:
            to_start, e2e = await measure(stack, rate, n)
        params = {"rate": rate, "workers": 2}
        for name, values in (("start", to_start), ("e2e", e2e)):
            out += [
                Metric("latency", f"{name}_p50_ms", percentile(values, 0.5), "ms", params),
                Metric("latency", f"{name}_p99_ms", percentile(values, 0.99), "ms", params),
                Metric(
                    "latency", f"{name}_max_ms", max(values, default=float("nan")), "ms", params
                ),
            ]
    return out

"""Scenario 1: task lifecycle throughput through the real planner, KV, events and
dependency release, with 1, 2 and 4 worker processes and the `noop` executor.

Each ticket has ten implementation tasks: five independent, five each depending on one
of those, so dependency release is on the path. With 2 workers it runs once more with
three planners. Timed from the first submission to the
last `ticket.done`; peak RSS per role is sampled meanwhile (the memory scenario reuses it),
and each role's CPU per task is read (planner, workers, nats-server, and the submitting
client), compared with the raw JetStream round trip's in the same run.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from benchmarks.common import BenchConfig, Metric
from benchmarks.cpu import CpuMeter
from benchmarks.scenarios.omoi_stack import Stack, omoi_stack
from bus import constants as c

TASKS_PER_TICKET = 10
PLANNERS = 3


def ticket(i: int, capability: str = "noop", prefix: str = "bench") -> dict[str, Any]:
    half = TASKS_PER_TICKET // 2
    tasks: list[dict[str, Any]] = [
        {"name": f"a{j}", "phase": "implementation", "capability": capability} for j in range(half)
    ]
    tasks += [
        {"name": f"b{j}", "phase": "implementation", "capability": capability,
         "depends_on": [f"a{j}"]}
        for j in range(half)
    ]  # fmt: skip
    return {"id": f"{prefix}-{i}", "title": f"bench {i}", "tasks": tasks}


async def drive(
    stack: Stack, tickets: int, prefix: str = "bench", cpu: list[CpuMeter] | None = None
) -> tuple[float, dict[str, float]]:
    """Submit `tickets` tickets, wait for all of them; elapsed seconds and peak RSS (MB).
    With `cpu`, a meter of each role's CPU over the run is appended to it."""
    done = asyncio.Event()
    finished = 0

    async def on_done(_: Any) -> None:
        nonlocal finished
        finished += 1
        if finished >= tickets:
            done.set()

    sub = await stack.bus.nc.subscribe("omoi.events.*.ticket.done", cb=on_done)
    peak: dict[str, float] = {}

    async def sample() -> None:
        while True:
            for name, mb in stack.rss_mb().items():
                role = name.split("-")[0]
                peak[role] = max(peak.get(role, 0.0), mb)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    if cpu is not None:
        cpu.append(CpuMeter(stack.cpu_roles()))
    start = time.perf_counter()
    for i in range(tickets):
        body = ticket(i, prefix=prefix)
        await stack.bus.nc.publish(c.TRUSTED_SUBMIT_SUBJECT, json.dumps(body).encode())
    await stack.bus.nc.flush()
    await asyncio.wait_for(done.wait(), timeout=1800)
    elapsed = time.perf_counter() - start
    sampler.cancel()
    await sub.unsubscribe()
    return elapsed, peak


async def run(cfg: BenchConfig) -> list[Metric]:
    tickets = max(1, cfg.count(10_000) // TASKS_PER_TICKET)
    out: list[Metric] = []
    for workers in cfg.worker_counts:
        workdir = cfg.workdir / f"lifecycle-{workers}"
        meters: list[CpuMeter] = []
        async with omoi_stack(workdir, workers=workers, phases=("implementation",)) as stack:
            elapsed, peak = await drive(stack, tickets, cpu=meters)
            n = tickets * TASKS_PER_TICKET
            spent = meters[0].per_task(n)
        params = {"workers": workers}
        out.append(Metric("lifecycle", "tasks_per_s", n / elapsed, "tasks/s", params))
        for role, us in spent.items():
            out.append(Metric("lifecycle", "cpu_us_per_task", us, "µs", {**params, "role": role}))
        for role, mb in sorted(peak.items()):
            out.append(Metric("lifecycle", "rss_peak_mb", mb, "MB", {**params, "role": role}))
    # Several planners at once, as a cluster runs them: they share the intake, and each
    # owns some of the tickets' partitions (docs/architecture.md, "Sharded planners").
    workdir = cfg.workdir / "lifecycle-planners"
    async with omoi_stack(
        workdir, workers=2, planners=PLANNERS, phases=("implementation",)
    ) as stack:
        elapsed, _ = await drive(stack, tickets)
    # A name of its own: targets on `tasks_per_s` at 2 workers mean one planner.
    one = next((m.value for m in out if m.name == "tasks_per_s" and m.params == {"workers": 2}),
               None)  # fmt: skip
    if one is not None:
        out.append(Metric("lifecycle", "planners_tasks_per_s", one, "tasks/s",
                          {"workers": 2, "planners": 1}))  # fmt: skip
    many = tickets * TASKS_PER_TICKET / elapsed
    out.append(Metric("lifecycle", "planners_tasks_per_s", many, "tasks/s",
                      {"workers": 2, "planners": PLANNERS}))  # fmt: skip
    return out

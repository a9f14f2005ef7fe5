"""Scenario 8: memory of each agent role under churn, so a leak shows.

Two workers run a warm-up, then three equal waves of no-op tasks, 30,000 in all (what a
busy hour of agent work records, in about a minute). The RSS of every role is taken after
the warm-up and after each wave. The first wave may still grow caches and the allocator's
arenas to their working size; a leak is what keeps growing after it, so the verdict-worthy
number is `rss_growth_late_mb`: from the end of the first wave to the end of the last.

A further check that non-agent roles do not import the OpenHands SDK lives in the tests.
"""

from __future__ import annotations

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.lifecycle import TASKS_PER_TICKET, drive
from benchmarks.scenarios.omoi_stack import omoi_stack

WAVES = 3


def by_role(rss: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, mb in rss.items():
        role = name.split("-")[0]
        out[role] = max(out.get(role, 0.0), mb)
    return out


async def run(cfg: BenchConfig) -> list[Metric]:
    per_wave = max(2, cfg.count(10_000) // TASKS_PER_TICKET)
    warm = max(1, per_wave // 5)
    async with omoi_stack(cfg.workdir / "memory", workers=2, phases=("implementation",)) as s:
        await drive(s, warm, prefix="warm")
        samples = [by_role(s.rss_mb())]
        for wave in range(WAVES):
            await drive(s, per_wave, prefix=f"churn{wave}")
            samples.append(by_role(s.rss_mb()))
    out: list[Metric] = []
    tasks = (warm + WAVES * per_wave) * TASKS_PER_TICKET
    for role in sorted(samples[-1]):
        params = {"role": role, "tasks": tasks}
        warmed, first, end = (samples[i].get(role, 0.0) for i in (0, 1, -1))
        out += [
            Metric("memory", "rss_after_warmup_mb", warmed, "MB", params),
            Metric("memory", "rss_end_mb", end, "MB", params),
            Metric("memory", "rss_growth_mb", end - warmed, "MB", params),
            Metric("memory", "rss_growth_late_mb", end - first, "MB", params),
        ]
    return out


# Each repetition is a minute of churn; one is enough to show a leak.
REPS = 1

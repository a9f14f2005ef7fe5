"""Scenario 8: memory of each agent role under churn, so a leak shows.

Two workers run a warm-up tenth of the tasks, then the rest; the RSS of every role is
taken after the warm-up and at the end of 10,000 no-op tasks (about what a busy hour of
agent work records, in a minute or two).
A further check that non-agent roles do not import the OpenHands SDK lives in the tests.
"""

from __future__ import annotations

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.lifecycle import TASKS_PER_TICKET, drive
from benchmarks.scenarios.omoi_stack import omoi_stack


def by_role(rss: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, mb in rss.items():
        role = name.split("-")[0]
        out[role] = max(out.get(role, 0.0), mb)
    return out


async def run(cfg: BenchConfig) -> list[Metric]:
    tickets = max(2, cfg.count(10_000) // TASKS_PER_TICKET)
    warm = max(1, tickets // 10)
    async with omoi_stack(cfg.workdir / "memory", workers=2, phases=("implementation",)) as s:
        await drive(s, warm, prefix="warm")
        after_warmup = by_role(s.rss_mb())
        await drive(s, tickets - warm, prefix="churn")
        at_end = by_role(s.rss_mb())
    out: list[Metric] = []
    for role in sorted(at_end):
        params = {"role": role, "tasks": tickets * TASKS_PER_TICKET}
        start, end = after_warmup.get(role, 0.0), at_end[role]
        out += [
            Metric("memory", "rss_after_warmup_mb", start, "MB", params),
            Metric("memory", "rss_end_mb", end, "MB", params),
            Metric("memory", "rss_growth_mb", end - start, "MB", params),
        ]
    return out


# Each repetition is a minute or two of churn; one is enough to show a leak.
REPS = 1

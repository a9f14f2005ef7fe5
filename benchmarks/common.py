"""What every benchmark scenario shares: its configuration and what it reports.

A scenario is a module under `benchmarks/scenarios/` with
`async def run(cfg: BenchConfig) -> list[Metric]`: one repetition, starting and stopping
everything it needs (its own nats-server, redis-server, processes) under `cfg.workdir`.
The harness repeats it, takes medians and computes ratios between scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchConfig:
    workdir: Path
    # 1.0 is the full run (`make bench`); the CI smoke run uses a tiny scale.
    scale: float = 1.0
    worker_counts: tuple[int, ...] = (1, 2, 4)

    def count(self, full: int, minimum: int = 10) -> int:
        """`full` scaled down for smoke runs, never below `minimum`."""
        return max(minimum, int(full * self.scale))


@dataclass(frozen=True)
class Metric:
    scenario: str  # e.g. "lifecycle"
    name: str  # e.g. "tasks_per_s"
    value: float
    unit: str  # "tasks/s", "ms", "MB", "events/s", "s"
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {"workers": 2}

    @property
    def key(self) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
        return (self.scenario, self.name, tuple(sorted(self.params.items())))

"""CPU time per role over a measured stretch: what a task costs each process, the figure
that survives a noisy machine (wall-clock throughput does not).

`CpuMeter({"planner": [pid], "worker": [pid, pid], "nats-server": [pid]})` reads each
process's user and system time when started and when read; `per_task(n)` is microseconds
per task per role, and `total` their sum. The benchmark process itself counts as the
role `client` when its pid is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import psutil


def _seconds(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return 0.0


class CpuMeter:
    def __init__(self, roles: Mapping[str, Sequence[int | None]]) -> None:
        self.roles = {role: [p for p in pids if p] for role, pids in roles.items()}
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        return {role: sum(_seconds(p) for p in pids) for role, pids in self.roles.items()}

    def per_task(self, tasks: int) -> dict[str, float]:
        """Microseconds of CPU per task, per role and in `total`, since the meter started."""
        now = self._now()
        out = {role: (now[role] - self._start[role]) / tasks * 1e6 for role in self.roles}
        out["total"] = sum(out.values())
        return out

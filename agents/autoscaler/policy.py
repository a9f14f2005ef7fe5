"""How many workers a pool should run: a pure function of its backlog, what runs now and
what was decided before.

A pool (`<phase>-<capability>`) wants one worker per `tasks_per_worker` tasks waiting or
running (its task consumers' pending and ack-pending counts, both lanes), within its
`min` and `max`; a pool whose oldest waiting task has waited `urgent_wait_s` or more gets
at least one more than it runs. It scales up at once (after `cooldown_s` from its last
change), and down only once it has wanted fewer for `down_after_s` (hysteresis: a lull
between bursts does not stop workers that are needed again a moment later), one step to
what it wants.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pool:
    phase: str
    capability: str
    min: int = 0
    max: int = 4

    @property
    def name(self) -> str:
        return f"{self.phase}-{self.capability}"


@dataclass(frozen=True)
class ScaleRules:
    tasks_per_worker: int = 10
    cooldown_s: float = 30.0
    down_after_s: float = 60.0
    urgent_wait_s: float = 60.0


@dataclass(frozen=True)
class Backlog:
    pending: int  # stored, not yet delivered
    ack_pending: int  # delivered, not yet acked: running
    oldest_s: float | None = None  # how long the oldest waiting task has waited


@dataclass
class PoolMemory:
    """What the autoscaler remembers of a pool between looks (monotonic seconds)."""

    changed_at: float | None = None
    low_since: float | None = None


@dataclass(frozen=True)
class Scaling:
    replicas: int
    reason: str


def wanted(pool: Pool, backlog: Backlog, current: int, rules: ScaleRules) -> int:
    load = backlog.pending + backlog.ack_pending
    want = math.ceil(load / rules.tasks_per_worker)
    if backlog.oldest_s is not None and backlog.oldest_s >= rules.urgent_wait_s:
        want = max(want, current + 1)
    return max(pool.min, min(pool.max, want))


def decide(
    pool: Pool,
    backlog: Backlog,
    current: int,
    memory: PoolMemory,
    rules: ScaleRules,
    now: float,
) -> Scaling | None:
    """The change to make now, if any; updates `memory`'s hysteresis clock."""
    want = wanted(pool, backlog, current, rules)
    cooling = memory.changed_at is not None and now - memory.changed_at < rules.cooldown_s
    load = f"{backlog.pending} waiting, {backlog.ack_pending} running"
    if want >= current:
        memory.low_since = None
    if want > current:
        if cooling:
            return None
        return Scaling(want, f"{load}: {want} workers wanted, {current} run")
    if want == current:
        return None
    if memory.low_since is None:
        memory.low_since = now
    if now - memory.low_since < rules.down_after_s or cooling:
        return None
    return Scaling(want, f"{load} for {now - memory.low_since:.0f} s: {want} workers are enough")


_POOL = re.compile(r"^([a-z]+):([a-z0-9_-]+):([0-9]{1,3}):([0-9]{1,3})$")


def parse_pools(specs: tuple[str, ...]) -> list[Pool]:
    """`phase:capability:min:max` each (e.g. `implementation:agent:0:8`); ValueError."""
    pools = []
    for spec in specs:
        found = _POOL.match(spec)
        if found is None:
            raise ValueError(f"a pool is phase:capability:min:max, not {spec!r}")
        phase, capability, low, high = found[1], found[2], int(found[3]), int(found[4])
        if low > high:
            raise ValueError(f"pool {spec!r}: its min is over its max")
        pools.append(Pool(phase, capability, low, high))
    return pools

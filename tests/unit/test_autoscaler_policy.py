"""The autoscaler's decisions, as pure functions of a pool's backlog and its past."""

from __future__ import annotations

import pytest

from agents.autoscaler.policy import (
    Backlog,
    Pool,
    PoolMemory,
    ScaleRules,
    decide,
    parse_pools,
    wanted,
)

POOL = Pool("implementation", "agent", min=1, max=5)
RULES = ScaleRules(tasks_per_worker=10, cooldown_s=30, down_after_s=60, urgent_wait_s=60)


def test_a_pool_wants_a_worker_per_ten_tasks_within_its_bounds() -> None:
    assert wanted(POOL, Backlog(0, 0), 3, RULES) == 1  # never below min
    assert wanted(POOL, Backlog(25, 0), 1, RULES) == 3
    assert wanted(POOL, Backlog(5, 16), 1, RULES) == 3  # running tasks count too
    assert wanted(POOL, Backlog(500, 0), 1, RULES) == 5  # never above max
    # A task that has waited long gets one more worker, even if the count says enough.
    assert wanted(POOL, Backlog(1, 9, oldest_s=61), 1, RULES) == 2


def test_up_at_once_down_only_after_the_low_lasted_and_never_in_a_cooldown() -> None:
    memory = PoolMemory()
    up = decide(POOL, Backlog(45, 0), 1, memory, RULES, now=100)
    assert up is not None and up.replicas == 5 and "5 workers wanted, 1 run" in up.reason
    memory.changed_at = 100
    # Within the cooldown nothing changes, either way.
    assert decide(POOL, Backlog(500, 0), 2, memory, RULES, now=110) is None
    # The queue drained: fewer are wanted, but only for 60 s does that scale down.
    assert decide(POOL, Backlog(0, 3), 5, memory, RULES, now=140) is None
    assert memory.low_since == 140
    assert decide(POOL, Backlog(0, 3), 5, memory, RULES, now=199) is None
    down = decide(POOL, Backlog(0, 3), 5, memory, RULES, now=200)
    assert down is not None and down.replicas == 1 and "for 60 s" in down.reason
    # A burst in between resets the hysteresis clock.
    memory = PoolMemory(low_since=140)
    assert decide(POOL, Backlog(50, 0), 5, memory, RULES, now=150) is None
    assert memory.low_since is None


def test_pools_parse_from_settings_and_bad_ones_are_named() -> None:
    assert parse_pools(("implementation:agent:0:8",)) == [Pool("implementation", "agent", 0, 8)]
    assert parse_pools(("testing:shell:2:2",))[0].name == "testing-shell"
    for bad in ("implementation:agent:8", "implementation:agent:3:1", ":agent:0:1"):
        with pytest.raises(ValueError, match="pool"):
            parse_pools((bad,))

"""Smoke runs of the two baselines Omoi is benchmarked against, at a tiny scale.

They prove each scenario starts its servers and workers, reports every metric it promises
with a usable value, and leaves no process behind, so `make bench` can trust them.
"""

from __future__ import annotations

import math
from pathlib import Path

import psutil
import pytest

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios import celery_redis, raw_jetstream
from tests.helpers import require_tool

LATENCY = [f"{kind}_{p}_ms" for kind in ("start", "e2e") for p in ("p50", "p99", "max")]


CPU_ROLES = ("client", "worker", "nats-server", "total")


def expected_keys(
    workers: tuple[int, ...], cpu: bool = False
) -> set[tuple[str, tuple[tuple[str, object], ...]]]:
    keys: set[tuple[str, tuple[tuple[str, object], ...]]] = {
        ("tasks_per_s", (("workers", w),)) for w in workers
    }
    if cpu:  # raw JetStream's CPU per task per role, Omoi's lifecycle is compared with
        keys |= {("cpu_us_per_task", (("role", r), ("workers", w))) for w in workers
                 for r in CPU_ROLES}  # fmt: skip
    for rate in (200, 1000):
        keys |= {(name, (("rate", rate), ("workers", 2))) for name in LATENCY}
    return keys


def check(
    metrics: list[Metric], scenario: str, workers: tuple[int, ...], cpu: bool = False
) -> None:
    assert {m.scenario for m in metrics} == {scenario}
    got = [(m.name, tuple(sorted(m.params.items()))) for m in metrics]
    assert len(got) == len(set(got)), "a metric is reported twice"
    assert set(got) == expected_keys(workers, cpu)
    for m in metrics:
        assert math.isfinite(m.value)
        # CPU is counted in clock ticks: a tiny run may cost a role none.
        assert m.value >= 0 if m.name == "cpu_us_per_task" else m.value > 0, m
    by_key = {(m.name, m.params.get("rate")): m.value for m in metrics}
    for rate in (200, 1000):
        # A task starts before its completion is seen, and the max bounds the percentiles.
        assert by_key[("start_p50_ms", rate)] <= by_key[("e2e_max_ms", rate)]
        assert by_key[("e2e_p50_ms", rate)] <= by_key[("e2e_p99_ms", rate)]
        assert by_key[("e2e_p99_ms", rate)] <= by_key[("e2e_max_ms", rate)]


def assert_no_children() -> None:
    left = psutil.Process().children(recursive=True)
    assert not left, [(p.pid, p.name()) for p in left]


@pytest.mark.timeout(40)
async def test_raw_jetstream_smoke(tmp_path: Path) -> None:
    cfg = BenchConfig(workdir=tmp_path, scale=0.002, worker_counts=(1, 2))
    check(await raw_jetstream.run(cfg), "raw_jetstream", cfg.worker_counts, cpu=True)
    assert_no_children()


@pytest.mark.timeout(50)
async def test_celery_redis_smoke(tmp_path: Path) -> None:
    require_tool(Path(celery_redis.REDIS_SERVER).exists(), "redis-server")
    cfg = BenchConfig(workdir=tmp_path, scale=0.002, worker_counts=(1, 2))
    check(await celery_redis.run(cfg), "celery_redis", cfg.worker_counts)
    assert_no_children()

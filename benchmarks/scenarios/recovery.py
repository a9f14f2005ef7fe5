"""Scenario: how long throughput takes to come back when the server goes away.

Tickets of no-op tasks arrive at a steady rate, well inside capacity, on two workers.
- `single`: the only nats-server is killed (-9) and started again 3 s later, on the same
  store. Measured from the moment it is back.
- `cluster`: one node of a 3-node cluster with every stream and bucket on three replicas,
  the leader of the task stream, is killed (-9). Measured from the kill, and from the
  moment every stream and consumer has a leader again: a follower waits 4 to 9 s for a
  lost leader before it campaigns (nats-server's raft election timeout, a constant), and
  no client can shorten that; what follows the election is Omoi's.
Throughput is tasks finished, as a core subscriber sees `task.succeeded`. It is restored at
the end of the first half-second window (windows start every 250 ms) whose rate reaches
75 % of the median rate before the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.lifecycle import TASKS_PER_TICKET, ticket
from benchmarks.scenarios.omoi_stack import Stack, omoi_stack
from bus import constants as c
from bus.auth import AuthDir
from bus.cluster import LocalCluster

TASKS_PER_S = 200
BEFORE_S, DOWN_S, AFTER_S = 5.0, 3.0, 8.0
BUCKET_S = 0.25
WINDOW_S = 0.5
RESTORED_SHARE = 0.75
REPS = 2


class Throughput:
    """Completions per bucket, from a core subscription on task outcomes."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.seen: list[float] = []

    async def on_succeeded(self, _: Any) -> None:
        self.seen.append(time.monotonic() - self.t0)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def rate(self, start: float) -> float:
        return sum(1 for t in self.seen if start <= t < start + WINDOW_S) / WINDOW_S

    def restored_after(self, fault: float, since: float) -> float:
        """Seconds from `since` until throughput is back to RESTORED_SHARE of before `fault`."""
        warm = 1.0  # the first second is the stack filling up
        windows = [self.rate(t) for t in _steps(warm, fault - WINDOW_S)]
        baseline = statistics.median(windows) if windows else 0.0
        for t in _steps(since, self.now() - WINDOW_S):
            if baseline and self.rate(t) >= RESTORED_SHARE * baseline:
                return t + WINDOW_S - since
        return float("nan")


def _steps(start: float, stop: float) -> list[float]:
    n = int((stop - start) / BUCKET_S) + 1
    return [start + i * BUCKET_S for i in range(max(n, 0))]


async def _load(stack: Stack, prefix: str, seconds: float) -> None:
    """Tickets at TASKS_PER_S tasks/s for `seconds`, paced against the schedule."""
    per_s = TASKS_PER_S / TASKS_PER_TICKET
    start = time.perf_counter()
    i = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * per_s) + 1
        while i < due:
            body = json.dumps(ticket(i, prefix=prefix)).encode()
            with contextlib.suppress(Exception):  # buffered while reconnecting
                await stack.bus.notify(c.TRUSTED_SUBMIT_SUBJECT, body)
            i += 1
        await asyncio.sleep(1 / per_s)


def _spans(cfg: BenchConfig) -> tuple[float, float, float]:
    """Before, down and after, shortened for smoke runs."""
    k = min(1.0, max(cfg.scale, 0.25))
    return BEFORE_S * k, DOWN_S * k, AFTER_S * k


async def _measure(
    cfg: BenchConfig, stack: Stack, prefix: str, fault: Callable[[], Awaitable[None]]
) -> tuple[Throughput, float, float]:
    """Run the load with `fault` in the middle: the meter, when the fault began and when
    `fault` returned (the server back, or the cluster led again)."""
    before, down, after = _spans(cfg)
    meter = Throughput()
    sub = await stack.bus.nc.subscribe("omoi.events.*.task.succeeded", cb=meter.on_succeeded)
    load = asyncio.create_task(_load(stack, prefix, before + down + after))
    await asyncio.sleep(before)
    fault_at = meter.now()
    await fault()
    back_at = meter.now()
    await load
    await asyncio.sleep(1.0)
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    return meter, fault_at, back_at


async def _single(cfg: BenchConfig) -> float:
    async with omoi_stack(cfg.workdir / "recovery-single", workers=2) as stack:
        server = stack.server
        assert server is not None

        async def restart() -> None:
            await server.kill()
            await asyncio.sleep(_spans(cfg)[1])
            await server.start()

        meter, fault_at, back_at = await _measure(cfg, stack, "rs", restart)
        return meter.restored_after(fault_at, back_at)


async def _led_again(stack: Stack, lost: str) -> None:
    """Wait until every Omoi stream and durable consumer has a leader other than `lost`."""
    names = [c.INTAKE_STREAM, c.TASKS_STREAM, c.GATES_STREAM, c.EVENTS_STREAM, c.DLQ_STREAM]
    names += [c.kv_stream(b) for b in (c.TICKETS_BUCKET, c.TASKS_BUCKET, c.HEARTBEATS_BUCKET)]
    calls = [f"STREAM.INFO.{n}" for n in names]
    calls += [f"CONSUMER.INFO.{s}.{d}" for s, d in _consumers()]
    pending = set(calls)
    while pending:
        for call in list(pending):
            try:
                reply = await stack.bus.nc.request(f"$JS.API.{call}", b"", timeout=0.5)
            except Exception:  # noqa: BLE001 - not answering yet
                continue
            leader = (json.loads(reply.data).get("cluster") or {}).get("leader")
            if leader and leader != lost:
                pending.discard(call)
        await asyncio.sleep(0.05)


def _consumers() -> list[tuple[str, str]]:
    from bus.topology import TopologyConfig, consumer_configs

    return [(s, str(cfg.durable_name)) for s, cfg in consumer_configs(TopologyConfig())]


async def _cluster(cfg: BenchConfig) -> tuple[float, float]:
    # The identities the stack's agents will find in their data dir.
    auth = AuthDir(cfg.workdir / "recovery-cluster-agents" / "data" / "auth").ensure()
    cluster = await LocalCluster(
        cfg.workdir / "recovery-cluster", authorization=auth.server_block.read_text()
    ).start()
    try:
        async with omoi_stack(
            cfg.workdir / "recovery-cluster-agents", workers=2, nats_url=cluster.url, replicas=3
        ) as stack:

            async def lose_leader() -> None:
                info = await stack.bus.admin.stream_info(c.TASKS_STREAM)
                leader = info.cluster.leader if info.cluster else None
                assert leader, "the task stream has no leader"
                await cluster.kill(leader)
                await _led_again(stack, leader)

            meter, lost_at, led_at = await _measure(cfg, stack, "rc", lose_leader)
            return meter.restored_after(lost_at, lost_at), meter.restored_after(lost_at, led_at)
    finally:
        await cluster.stop()


async def run(cfg: BenchConfig) -> list[Metric]:
    from_loss, from_election = await _cluster(cfg)
    loss = {"fault": "cluster-node-loss"}
    return [
        Metric("recovery", "recovery_s", await _single(cfg), "s", {"fault": "single-restart"}),
        Metric("recovery", "recovery_s", from_loss, "s", {**loss, "from": "loss"}),
        Metric("recovery", "recovery_s", from_election, "s", {**loss, "from": "election"}),
    ]

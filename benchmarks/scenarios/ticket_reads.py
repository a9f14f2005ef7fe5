"""Reads that do not grow with history: a page of tickets, a filtered page and the
dashboard, at 100 tickets and at 100,000 (only 500 at smoke scale).

The tickets are written straight to `omoi_tickets` (nine in ten done, one in ten running,
as a long-lived deployment holds them); the gateway runs as its own process, as `omoi up`
runs it, with a viewer's token. Each figure is the p95 of sequential requests, so it is
the cost of one read, not of a queue.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx

from agents.settings import Settings
from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.gateway import start_gateway, stop_gateway, wait_ready
from benchmarks.scenarios.latency import percentile
from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from schemas import Phase, TicketState, TicketStatus, utcnow
from schemas.token import ApiToken, Role, mint

SCENARIO = "ticket_reads"
READS = {
    "page": "/api/v1/tickets?limit=50",
    "filtered": "/api/v1/tickets?status=running&limit=50",
    "dashboard": "/",
}
ROUNDS = 60


async def run(cfg: BenchConfig) -> list[Metric]:
    metrics = []
    rounds = cfg.count(ROUNDS, 5)
    # A smoke run proves the scenario works: one gateway, not two.
    counts = (100, cfg.count(100_000, 500)) if cfg.scale >= 0.1 else (500,)
    for count in counts:
        for name, p95 in (await _measure(cfg, count, rounds)).items():
            metrics.append(Metric(SCENARIO, f"{name}_p95_ms", p95, "ms", {"tickets": count}))
    return metrics


async def _measure(cfg: BenchConfig, count: int, rounds: int) -> dict[str, float]:
    server = EmbeddedNatsServer(cfg.workdir / f"reads-nats-{count}", port=0)
    nats_url = await server.start()
    settings = Settings(nats_url=nats_url, data_dir=cfg.workdir / f"reads-data-{count}")
    bus = await Bus.connect(nats_url, name="bench-reads", topology=settings.topology())
    await _fill(bus, count)
    token, record = mint(Role.VIEWER, "bench")
    await (await bus.bucket(c.TOKENS_BUCKET, ApiToken)).create(record.id, record)
    gateway, base = await start_gateway(settings, "100000/minute")
    try:
        await wait_ready(base, timeout=300)
        headers = {"Authorization": f"Bearer {token}"}
        out = {}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
            listed = (await client.get(READS["page"])).json()
            if listed["total"] != count or len(listed["items"]) != min(50, count):
                raise RuntimeError(f"the gateway lists {listed['total']} of {count} tickets")
            for name, path in READS.items():
                timings = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    answer = await client.get(path)
                    timings.append((time.perf_counter() - started) * 1000)
                    answer.raise_for_status()
                out[name] = percentile(timings, 0.95)
        return out
    finally:
        await stop_gateway(gateway)
        await bus.close()
        await server.stop()


async def _fill(bus: Bus, count: int) -> None:
    start = utcnow() - timedelta(days=30)
    for first in range(0, count, 500):
        puts = []
        for n in range(first, min(first + 500, count)):
            status = TicketStatus.RUNNING if n % 10 == 0 else TicketStatus.DONE
            t = TicketState(id=f"r{n:06}", title=f"ticket {n}", status=status,
                            phase=Phase.IMPLEMENTATION if status is TicketStatus.RUNNING
                            else Phase.DONE, created_at=start + timedelta(seconds=n))  # fmt: skip
            puts.append(bus.tickets.kv.put(t.id, t.model_dump_json().encode()))
        await asyncio.gather(*puts)

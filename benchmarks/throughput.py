"""Task throughput: Omoi end to end vs a bare JetStream work-queue round trip.

Both run in this process against the same embedded nats-server, so the ratio says what
Omoi's bookkeeping (KV compare-and-set, events, claims, planning) costs per task on this
machine. Tasks use a no-op executor so process spawning does not drown the signal.

    .venv/bin/python -m benchmarks.throughput [--tickets 50] [--tasks 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from agents.executors.noop import NoopExecutor
from agents.planner.agent import Planner
from agents.settings import Settings
from agents.worker.agent import Worker
from bus import Bus, EmbeddedNatsServer
from schemas import TicketStatus


async def bare_round_trips(bus: Bus, n: int) -> float:
    await bus.js.add_stream(
        StreamConfig(name="BENCH", subjects=["bench.>"], retention=RetentionPolicy.WORK_QUEUE)
    )
    await bus.js.add_consumer(
        "BENCH", ConsumerConfig(durable_name="bench", ack_policy=AckPolicy.EXPLICIT)
    )
    sub = await bus.js.pull_subscribe_bind(durable="bench", stream="BENCH")
    start = time.perf_counter()
    for i in range(n):
        await bus.js.publish("bench.work", str(i).encode())
        for msg in await sub.fetch(1, timeout=5):
            await msg.ack_sync()
    return (time.perf_counter() - start) / n


async def omoi_tasks(bus: Bus, settings: Settings, tickets: int, per: int, workers: int) -> float:
    noop = {"noop": NoopExecutor()}
    agents: list[Planner | Worker] = [Planner(bus, settings)]
    for _ in range(workers):
        agents.append(
            Worker(bus, settings, phases=["implementation"], capabilities=["noop"], executors=noop)
        )
    runs = [asyncio.create_task(a.run()) for a in agents]
    for a in agents:
        await asyncio.wait_for(a.ready.wait(), 30)
    start = time.perf_counter()
    for t in range(tickets):
        tasks = [
            {"name": f"t{i}", "phase": "implementation", "capability": "noop"} for i in range(per)
        ]
        payload = {"id": f"bench-{t}", "title": "bench", "tasks": tasks}
        await bus.nc.publish("omoi.tickets.submit", json.dumps(payload).encode())
    for t in range(tickets):
        while (ticket := await bus.tickets.value(f"bench-{t}")) is None or (
            ticket.status is TicketStatus.RUNNING
        ):
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    for a in agents:
        await a.shutdown()
    await asyncio.gather(*runs)
    return elapsed / (tickets * per)


async def main(tickets: int, per: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNatsServer(Path(tmp) / "nats", port=0)
        url = await server.start()
        settings = Settings(nats_url=url, data_dir=Path(tmp) / "data", fetch_poll_s=0.25)
        bus = await Bus.connect(url, name="bench", topology=settings.topology())
        try:
            bare = await bare_round_trips(bus, tickets * per)
            omoi = await omoi_tasks(bus, settings, tickets, per, workers)
        finally:
            await bus.close()
            await server.stop()
    result = {
        "tasks": tickets * per,
        "workers": workers,
        "bare_jetstream_ms_per_msg": round(bare * 1000, 3),
        "omoi_ms_per_task": round(omoi * 1000, 3),
        "omoi_tasks_per_s": round(1 / omoi, 1),
        "ratio_omoi_to_bare": round(omoi / bare, 1),
    }
    print(json.dumps(result, indent=2))  # noqa: T201 - a benchmark reports on stdout


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--tickets", type=int, default=50)
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    asyncio.run(main(a.tickets, a.tasks, a.workers))

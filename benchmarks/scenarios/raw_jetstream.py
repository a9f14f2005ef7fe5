"""Baseline: the limit of our own stack, a bare JetStream work-queue round trip.

The same workload as Omoi's scenarios, written the way a good nats-py user would without
any of Omoi's bookkeeping: the producer publishes task messages to a WORK_QUEUE stream
(async publish, pub acks awaited in windows), W worker *processes* share one durable pull
consumer (batch fetch), publish a small JSON completion event per task to a LIMITS stream,
then ack the task. The producer counts completions on the event subject.

Reported: `tasks_per_s` per worker count (first publish to last completion seen), and
schedule-to-start / end-to-end latency percentiles at fixed arrival rates with 2 workers.
Timestamps cross processes on one host, so they are `time.time()`.

Worker entry point (started by `run`): `python -m benchmarks.scenarios.raw_jetstream URL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, PubAck, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from agents.runner import loop_factory
from benchmarks.common import BenchConfig, Metric
from benchmarks.cpu import CpuMeter
from bus.server import EmbeddedNatsServer

SCENARIO = "raw_jetstream"
WORK_STREAM = "BENCH_WORK"
WORK_SUBJECT = "bench.work"
EVENTS_STREAM = "BENCH_EVENTS"
DONE_SUBJECT = "bench.events.done"
CONSUMER = "workers"

FULL_TASKS = 10_000
LATENCY_TASKS = 2_000
LATENCY_RATES = (200, 1000)
LATENCY_WORKERS = 2
PUB_WINDOW = 500  # in-flight pub acks before the producer waits for them
FETCH_BATCH = 100
FETCH_TIMEOUT_S = 1.0
FETCH_LINGER_S = 0.002  # how long a worker waits to fill a batch once it has a task
WARMUP_PER_WORKER = 10  # first messages pay for lazy setup; keep them out of the timing

REPO_ROOT = Path(__file__).resolve().parents[2]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: always a value that was actually observed."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_metrics(
    scenario: str, samples: list[tuple[float, float, float]], rate: int, workers: int
) -> list[Metric]:
    """`samples` are (sent, started, seen) wall-clock seconds, one per task."""
    params = {"rate": rate, "workers": workers}
    out: list[Metric] = []
    for kind, idx in (("start", 1), ("e2e", 2)):
        ms = sorted((s[idx] - s[0]) * 1000 for s in samples)
        for label, q in (("p50", 0.50), ("p99", 0.99), ("max", 1.0)):
            out.append(Metric(scenario, f"{kind}_{label}_ms", percentile(ms, q), "ms", params))
    return out


async def run(cfg: BenchConfig) -> list[Metric]:
    base = cfg.workdir / SCENARIO
    server = EmbeddedNatsServer(base / "nats", port=0)
    url = await server.start()
    nc = await nats.connect(url, name="bench-producer")
    metrics: list[Metric] = []
    try:
        js = nc.jetstream()
        n = cfg.count(FULL_TASKS)
        for workers in sorted({*cfg.worker_counts, LATENCY_WORKERS}):
            await _reset_streams(js)
            procs = await _start_workers(url, workers, base / f"workers-{workers}.log")
            try:
                await _round(nc, js, WARMUP_PER_WORKER * workers, None)
                if workers in cfg.worker_counts:
                    meter = CpuMeter({"client": [os.getpid()], "worker": [p.pid for p in procs],
                                      "nats-server": [server.pid]})  # fmt: skip
                    elapsed, _ = await _round(nc, js, n, None)
                    params = {"workers": workers}
                    metrics.append(Metric(SCENARIO, "tasks_per_s", n / elapsed, "tasks/s", params))
                    for role, us in meter.per_task(n).items():
                        role_params = {**params, "role": role}
                        metrics.append(Metric(SCENARIO, "cpu_us_per_task", us, "µs", role_params))
                if workers == LATENCY_WORKERS:
                    for rate in LATENCY_RATES:
                        _, samples = await _round(nc, js, cfg.count(LATENCY_TASKS), rate)
                        metrics += latency_metrics(SCENARIO, samples, rate, workers)
            finally:
                await _stop_workers(procs)
    finally:
        await nc.close()
        await server.stop()
    return metrics


async def _reset_streams(js: JetStreamContext) -> None:
    # Fresh streams per worker count, so no round inherits backlog or consumer state.
    for name in (WORK_STREAM, EVENTS_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await js.add_stream(
        StreamConfig(
            name=WORK_STREAM, subjects=[WORK_SUBJECT], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_stream(
        StreamConfig(
            name=EVENTS_STREAM, subjects=["bench.events.>"], retention=RetentionPolicy.LIMITS
        )
    )
    await js.add_consumer(
        WORK_STREAM,
        ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
    )


async def _start_workers(url: str, count: int, log_path: Path) -> list[asyncio.subprocess.Process]:
    procs: list[asyncio.subprocess.Process] = []
    log = log_path.open("ab")
    try:
        for _ in range(count):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.scenarios.raw_jetstream",
                    url,
                    cwd=REPO_ROOT,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    # Own group: killing it on failure takes the whole worker with it.
                    start_new_session=True,
                )
            )
        for proc in procs:
            # Interpreter start-up and consumer binding stay out of every timed window.
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line.strip() != b"ready":
                raise RuntimeError(f"raw_jetstream worker failed to start; see {log_path}")
    except BaseException:
        await _stop_workers(procs)
        raise
    finally:
        log.close()  # the children hold their own copies of the descriptor
    return procs


async def _stop_workers(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def _round(
    nc: Client, js: JetStreamContext, n: int, rate: int | None
) -> tuple[float, list[tuple[float, float, float]]]:
    """Publish `n` tasks (as fast as possible, or `rate` per second) and await completions.

    Returns seconds from first publish to last completion and (sent, started, seen) per task.
    """
    samples: list[tuple[float, float, float]] = []
    done = asyncio.Event()
    finished = 0.0

    async def on_done(msg: Msg) -> None:
        nonlocal finished
        seen = time.time()
        event = json.loads(msg.data)
        samples.append((event["sent"], event["started"], seen))
        if len(samples) == n:
            finished = time.perf_counter()
            done.set()

    sub = await nc.subscribe(DONE_SUBJECT, cb=on_done)
    await nc.flush()  # the server knows the subscription before the first task exists
    try:
        start = time.perf_counter()
        window: list[asyncio.Future[PubAck]] = []
        for i in range(n):
            if rate is not None and (delay := start + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            payload = json.dumps({"id": i, "sent": time.time()}).encode()
            window.append(await js.publish_async(WORK_SUBJECT, payload))
            if len(window) >= PUB_WINDOW:
                await asyncio.gather(*window)
                window.clear()
        await asyncio.gather(*window)
        await asyncio.wait_for(done.wait(), 60 + n / 100)
    finally:
        await sub.unsubscribe()
    return finished - start, samples


# ---- worker process ------------------------------------------------------------------


async def _worker(url: str, out: IO[str]) -> None:
    nc = await nats.connect(url, name=f"bench-worker-{os.getpid()}")
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(durable=CONSUMER, stream=WORK_STREAM)
    print("ready", file=out, flush=True)
    while True:
        try:
            # Long poll for one: returns the moment a task is there, costs nothing when idle.
            first = await sub.fetch(1, timeout=FETCH_TIMEOUT_S)
        except TimeoutError:
            continue
        batch = [(first[0], time.time())]
        # Then whatever else is ready, to batch under load. Not one big fetch: nats-py keeps
        # a batch fetch open until it is full or times out, so at a steady arrival rate the
        # first task of a batch waited for the other 99 (~170 ms at 1000/s, 2 workers).
        with contextlib.suppress(TimeoutError):
            more = await sub.fetch(FETCH_BATCH - 1, timeout=FETCH_LINGER_S)
            now = time.time()
            batch += [(msg, now) for msg in more]
        acks = []
        for msg, started in batch:
            task = json.loads(msg.data)
            event = {"id": task["id"], "sent": task["sent"], "started": started}
            acks.append(await js.publish_async(DONE_SUBJECT, json.dumps(event).encode()))
        # Completion durably recorded before the task leaves the queue: at-least-once.
        await asyncio.gather(*acks)
        for msg, _ in batch:
            await msg.ack()


if __name__ == "__main__":
    # Stopped by SIGTERM from the producer; nothing to flush, unacked tasks would return.
    asyncio.run(_worker(sys.argv[1], sys.stdout), loop_factory=loop_factory())

"""Baseline: the alternative, the same workload on Celery with Redis as broker and backend.

What a Celery user would run, tuned the way the docs suggest for many short tasks:

* "W workers" is one worker node with `--pool=prefork --concurrency=W`: W task-executing
  processes, which is how Celery counts workers; one node per host is the usual deployment
  (the node's parent process does the broker I/O and hands tasks to its children).
* `-O fair` (Celery's default since 4.0, spelled out) and a prefetch multiplier of 4
  (Celery's default; tasks here are no-ops, so prefetching only helps throughput).
* Late acks (`task_acks_late`), so a task is acked after it ran, as in the JetStream
  baseline and Omoi: the same at-least-once contract.
* No events, heartbeats, gossip or mingle: bookkeeping a benchmark does not need.

The producer sends with `send_task` from an app without a result backend (a Redis backend
would subscribe every sent task's result channel on the sending connection, never read),
while a second app collects the results as they land (`AsyncResult.get`, which waits on
Redis pub/sub); each result channel is subscribed just before its task is sent.

Reported like `raw_jetstream`: `tasks_per_s` per worker count (first send to last result
seen) and schedule-to-start / end-to-end latency percentiles at fixed arrival rates with
2 workers. The task stamps `time.time()` when it starts; the send time is its argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from celery.utils import uuid

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.celery_app import TASK_NAME, URL_ENV, make_app
from benchmarks.scenarios.raw_jetstream import (
    FULL_TASKS,
    LATENCY_RATES,
    LATENCY_TASKS,
    LATENCY_WORKERS,
    REPO_ROOT,
    WARMUP_PER_WORKER,
    latency_metrics,
)

SCENARIO = "celery_redis"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

Samples = list[tuple[float, float, float]]  # (sent, started, seen) wall-clock seconds


async def run(cfg: BenchConfig) -> list[Metric]:
    # Celery's client API blocks; keep it off the harness's event loop.
    return await asyncio.to_thread(_run, cfg)


def _run(cfg: BenchConfig) -> list[Metric]:
    base = cfg.workdir / SCENARIO
    base.mkdir(parents=True, exist_ok=True)
    metrics: list[Metric] = []
    with _redis_server(base) as url:
        producer = make_app(url, backend=False)
        collector = make_app(url)
        n = cfg.count(FULL_TASKS)
        try:
            for workers in sorted({*cfg.worker_counts, LATENCY_WORKERS}):
                with _celery_worker(producer, url, workers, base / f"worker-{workers}.log"):
                    _round(producer, collector, WARMUP_PER_WORKER * workers, None)
                    if workers in cfg.worker_counts:
                        elapsed, _ = _round(producer, collector, n, None)
                        params = {"workers": workers}
                        metrics.append(
                            Metric(SCENARIO, "tasks_per_s", n / elapsed, "tasks/s", params)
                        )
                    if workers == LATENCY_WORKERS:
                        for rate in LATENCY_RATES:
                            _, samples = _round(producer, collector, cfg.count(LATENCY_TASKS), rate)
                            metrics += latency_metrics(SCENARIO, samples, rate, workers)
        finally:
            # Pooled broker and backend connections; redis-server goes away next.
            collector.close()
            producer.close()
    return metrics


def _round(producer: Any, collector: Any, n: int, rate: int | None) -> tuple[float, Samples]:
    """Send `n` tasks (as fast as possible, or `rate` per second) and collect every result.

    Returns seconds from first send to last result seen and (sent, started, seen) per task.
    """
    samples: Samples = []
    last_seen = 0.0

    def on_ready(result: Any) -> None:
        # Runs when the result's pub/sub message is drained, whichever get() drains it.
        nonlocal last_seen
        value = result.result
        samples.append((value["sent"], value["started"], time.time()))
        last_seen = time.perf_counter()

    results = [collector.AsyncResult(uuid()) for _ in range(n)]
    with ThreadPoolExecutor(1, thread_name_prefix="celery-send") as pool:
        start = time.perf_counter()
        sending = pool.submit(_send, producer, results, on_ready, rate, start)

        def check_sender() -> None:
            # A failed sender would otherwise surface only as the gets' timeout.
            if sending.done() and (exc := sending.exception()) is not None:
                raise exc

        try:
            deadline = time.monotonic() + 60 + n / 100
            for result in results:
                # Not `ResultSet.join_native`: on Redis it polls MGET every 0.5 s, whereas
                # `get` waits on pub/sub, the fastest way Celery offers to see a result.
                left = max(0.1, deadline - time.monotonic())
                result.get(timeout=left, on_interval=check_sender)
        finally:
            sending.result(timeout=60)
    return last_seen - start, samples


def _send(
    producer: Any,
    results: list[Any],
    on_ready: Callable[[Any], None],
    rate: int | None,
    start: float,
) -> None:
    # One pooled producer for the whole round, as a bulk-sending Celery user would.
    with producer.producer_or_acquire() as pub:
        for i, result in enumerate(results):
            if rate is not None and (delay := start + i / rate - time.perf_counter()) > 0:
                time.sleep(delay)
            # Subscribe the result channel just before sending, as `.delay()` on an app
            # with a Redis backend does (Celery's result consumer takes subscriptions from
            # any thread). Subscribing all up front instead left the collector a burst of
            # confirmations to read, stalling the first results by a few hundred ms.
            result.then(on_ready)
            producer.send_task(TASK_NAME, args=(time.time(),), task_id=result.id, producer=pub)


@contextlib.contextmanager
def _redis_server(workdir: Path) -> Iterator[str]:
    port = _free_port()
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    with (workdir / "redis.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    msg = f"redis-server did not start; see {workdir}/redis.log"
                    raise RuntimeError(msg) from exc
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc, 10)


@contextlib.contextmanager
def _celery_worker(producer: Any, url: str, workers: int, log_path: Path) -> Iterator[None]:
    args = [sys.executable, "-m", "celery", "-A", "benchmarks.scenarios.celery_app", "worker"]
    args += ["--pool=prefork", f"--concurrency={workers}", "-O", "fair", "--loglevel=WARNING"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    args += ["-n", f"bench{workers}@%h"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env={**os.environ, URL_ENV: url},
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own group: the prefork children go down with their parent on failure.
            start_new_session=True,
        )
    try:
        # Interpreter start-up and pool forking stay out of every timed window: the node
        # answers a ping only once its consumer runs, and the pool is started before that.
        deadline = time.monotonic() + 60
        while not producer.control.ping(timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start; see {log_path}")
        yield
    finally:
        _stop(proc, 20)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a Celery warm shutdown), then whatever is left of the group is killed."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Each repetition takes about 90 s here; two keep `make bench` within its budget.
REPS = 2

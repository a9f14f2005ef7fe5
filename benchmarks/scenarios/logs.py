"""The log pipeline: lines an agent logs, through its LogShipper and OMOI_LOGS, committed
by the recorder into the store's `logs` table.

A separate process, as an agent is, logs N lines as fast as it can through the handler
chain an agent process has (`agents.logs.shipped_logs`: JsonFormatter and LogShipper on
the root logger), each line about a ticket and a task (bound once per 25 lines, as a
handler binds them once per delivery). An in-process `Recorder` stores them
(batches of 5000, as in production). The rate is the lines over the time from the first
one logged to the commit of the last; lines the shipper had to drop count against it (and
are reported: there should be none).

    python -m benchmarks.scenarios.logs URL N   (the logging process)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agents.logs import shipped_logs
from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.recorder import bench_server, recording, wait_until
from bus import Bus
from bus.log_context import bind_log_fields
from store.writer import EventStore, LogLine

SCENARIO = "logs"
# Lines logged between two chances for the shipper to send: an agent awaits far more often.
_YIELD_EVERY = 500
_LINES_PER_TASK = 25
_ROOT = Path(__file__).resolve().parents[2]


class CountingStore(EventStore):
    """The recorder's store, counting committed log lines and when the last one was."""

    def __init__(self, path: Path, published_dir: Path) -> None:
        super().__init__(path, published_dir)
        self.lines = 0
        self.last_commit = 0.0

    def ingest_logs(self, lines: Sequence[LogLine]) -> int:
        inserted = super().ingest_logs(lines)
        self.lines += inserted
        self.last_commit = time.time()
        return inserted


async def log_lines(url: str, n: int) -> dict[str, float]:
    """Log `n` lines through an agent's handler chain; when it began, how many it dropped."""
    logging.getLogger().setLevel(logging.INFO)
    log = logging.getLogger("agents.worker.agent")
    bus = await Bus.connect(url, name="bench-log-writer", max_reconnect_attempts=3)
    try:
        async with shipped_logs(bus, "worker", "bench-writer") as shipper:
            start = time.time()
            for i in range(n):
                if i % _LINES_PER_TASK == 0:  # as a worker's handler binds, once a delivery
                    bind_log_fields(ticket=f"T{i // 100:06d}", task=f"t{i // 25 % 4}")
                log.info("T%06d.t%d attempt 1 failed, retry in %.2fs", i // 100, i // 25 % 4, 0.5)
                if i % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            logged_s = time.time() - start
        dropped = shipper.dropped
    finally:
        await bus.close()
    return {"start": start, "logged_s": logged_s, "dropped": dropped}


async def write_logs(url: str, n: int) -> dict[str, float]:
    """Run the logging process and wait for it."""
    paths = [str(_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__, url, str(n), env=env, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 600)
    if proc.returncode != 0:
        raise RuntimeError(f"the logging process exited with {proc.returncode}")
    result: dict[str, float] = json.loads(stdout)
    return result


async def run(cfg: BenchConfig) -> list[Metric]:
    n = cfg.count(200_000, 2_000)
    async with bench_server(cfg, "bench-logs") as (url, bus, settings):
        store = CountingStore(settings.store_path, settings.published_dir)
        async with recording(bus, settings, store) as running:
            written = await write_logs(url, n)
            shipped = n - int(written["dropped"])
            await wait_until(lambda: store.lines >= shipped, "the lines", 120, running)
    params = {"lines": n}
    elapsed = store.last_commit - written["start"]
    return [
        Metric(SCENARIO, "lines_per_s", shipped / elapsed, "lines/s", params),
        Metric(SCENARIO, "logged_lines_per_s", n / written["logged_s"], "lines/s", params),
        Metric(SCENARIO, "dropped_lines", written["dropped"], "lines", params),
    ]


if __name__ == "__main__":
    url_, n_ = sys.argv[1:3]
    sys.stdout.write(json.dumps(asyncio.run(log_lines(url_, int(n_)))))

"""The recorder: how fast it drains a backlog, and how far behind a steady stream it runs.

One embedded nats-server and one in-process `Recorder` (batches of 5000, publishing Parquet
segments every 2 s as in production). Two measurements:

* ingest: a backlog of events is put into OMOI_EVENTS before the recorder starts; the rate
  is events over the time from its being ready to the last of them being committed.
* lag: a separate publisher process sends events at a fixed rate, stamping each one's `at`
  as it publishes it; the lag of an event is from that stamp to the commit of the batch
  holding it in the store (readers see it at the next segment publish, up to 2 s later).

The events are what agents publish: task.queued/started/succeeded with usage, ids as
agents/events.py builds them, each id also the message's Nats-Msg-Id.

    python -m benchmarks.scenarios.recorder URL RATE SECONDS OUT   (the paced publisher)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.recorder.agent import Recorder
from agents.settings import Settings
from benchmarks.common import BenchConfig, Metric
from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from schemas import Event, EventType
from store.writer import EventStore, RecordedEvent

SCENARIO = "recorder"
LAG_RATE = 10_000
BACKLOG_PREFIX = "B-"
LAG_PREFIX = "L-"
_STEPS = (EventType.TASK_QUEUED, EventType.TASK_STARTED, EventType.TASK_SUCCEEDED)
_TASKS_PER_TICKET = 4
# The repository root, for the publisher process's imports wherever the harness started.
_ROOT = Path(__file__).resolve().parents[2]


def make_event(prefix: str, i: int, at: datetime) -> tuple[str, bytes, str]:
    """Event `i` of a run: (subject, JSON, msg id). Tickets of four shell tasks, each queued,
    started and succeeded in turn."""
    ticket = f"{prefix}{i // (3 * _TASKS_PER_TICKET):09d}"
    task_no, step = divmod(i % (3 * _TASKS_PER_TICKET), 3)
    kind = _STEPS[step]
    name = f"t{task_no}"
    attempt = min(step, 1)
    worker = f"worker-{i % 7}"
    data: dict[str, object] = {
        "phase": "implementation",
        "capability": "shell",
        "attempt": attempt,
        "generation": 0,
    }
    if step:
        data["worker"] = worker
    if kind is EventType.TASK_SUCCEEDED:
        usage = {"prompt_tokens": 1200 + i % 500, "completion_tokens": 300, "cost_usd": 0.0021}
        data |= {"duration_s": 0.8, "exit_code": 0, "commit": f"{i:016x}", "usage": usage}
    event = Event(
        id=f"{ticket}.{name}.g0.a{attempt}.{kind.value}",
        type=kind,
        ticket_id=ticket,
        task=name,
        agent=worker if step else "planner-1",
        at=at,
        data=data,
    )
    return c.event_subject(ticket, kind), event.to_json(), event.id


class TimedStore(EventStore):
    """The recorder's store, counting committed benchmark events and timing lag events."""

    def __init__(self, path: Path, published_dir: Path) -> None:
        super().__init__(path, published_dir)
        self.backlog = 0
        self.lags_s: list[float] = []

    def ingest(self, events: Sequence[RecordedEvent]) -> int:
        inserted = super().ingest(events)
        committed = time.time()
        for e in events:
            if e.ticket_id.startswith(LAG_PREFIX):
                self.lags_s.append(committed - e.at.timestamp())
            elif e.ticket_id.startswith(BACKLOG_PREFIX):
                self.backlog += 1
        return inserted


@asynccontextmanager
async def bench_server(
    cfg: BenchConfig, name: str, **settings: Any
) -> AsyncIterator[tuple[str, Bus, Settings]]:
    """An embedded nats-server with the topology, a connection to it, and the settings of a
    recorder on it (batches of 5000, as in production)."""
    server = EmbeddedNatsServer(cfg.workdir / "nats", port=0)
    url = await server.start()
    try:
        config = Settings(
            nats_url=url, data_dir=cfg.workdir / "data", record_batch=5000, **settings
        )
        bus = await Bus.connect(url, name=name, topology=config.topology())
        try:
            yield url, bus, config
        finally:
            await bus.close()
    finally:
        await server.stop()


@asynccontextmanager
async def recording(
    bus: Bus, settings: Settings, store: EventStore
) -> AsyncIterator[asyncio.Task[None]]:
    """An in-process recorder writing to `store`, ready; its task, for `wait_until`."""
    recorder = Recorder(bus, settings)
    recorder.store = store
    running = asyncio.create_task(recorder.run())
    try:
        await asyncio.wait_for(recorder.ready.wait(), 30)
        yield running
    finally:
        await recorder.shutdown()
        await running


async def fill_backlog(bus: Bus, n: int) -> None:
    at = datetime.now(UTC)
    for i in range(n):
        subject, payload, msg_id = make_event(BACKLOG_PREFIX, i, at)
        await bus.js.publish_async(subject, payload, headers={c.HDR_MSG_ID: msg_id})
    await bus.js.publish_async_completed()
    info = await bus.js.stream_info(c.EVENTS_STREAM)
    if info.state.messages != n:
        raise RuntimeError(f"OMOI_EVENTS holds {info.state.messages} messages, expected {n}")


async def wait_until(
    check: Callable[[], bool], what: str, timeout: float, recorder: asyncio.Task[None]
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if recorder.done():
            raise RuntimeError(f"the recorder stopped before {what} were recorded")
        if time.monotonic() > deadline:
            raise TimeoutError(f"recorder benchmark: timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def paced_publisher(url: str, rate: int, seconds: float) -> dict[str, float]:
    """Publish `rate` events a second for `seconds`, stamping each as it goes.

    Core publishes, which the stream captures as it does intake's: acked ones would cost
    this process twice the CPU, taken from the recorder under test on a small host. That
    every event arrived is checked on the other side: the recorder must record them all.
    """
    bus = await Bus.connect(url, name="bench-lag-publisher", max_reconnect_attempts=3)
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    sent = 0
    start = loop.time()
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        while sent < due:
            subject, payload, msg_id = make_event(LAG_PREFIX, sent, datetime.now(UTC))
            await bus.nc.publish(subject, payload, headers={c.HDR_MSG_ID: msg_id})
            sent += 1
        await asyncio.sleep(0.001)
    elapsed = loop.time() - start
    await bus.nc.flush()
    await bus.close()
    return {"sent": sent, "seconds": elapsed}


async def publish_paced(url: str, seconds: float) -> dict[str, float]:
    """Run the paced publisher in its own process, so it does not share this one's CPU."""
    paths = [str(_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    args = [url, str(LAG_RATE), str(seconds)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__, *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"the paced publisher exited with {proc.returncode}")
    result: dict[str, float] = json.loads(stdout)
    return result


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(cfg: BenchConfig) -> list[Metric]:
    n = cfg.count(200_000)
    seconds = float(cfg.count(10, 1))
    async with bench_server(cfg, "bench-recorder", store_publish_interval_s=2.0) as (
        url,
        bus,
        settings,
    ):
        await fill_backlog(bus, n)
        store = TimedStore(settings.store_path, settings.published_dir)
        async with recording(bus, settings, store) as running:
            start = time.perf_counter()
            await wait_until(lambda: store.backlog >= n, "the backlog", 600, running)
            ingest_s = time.perf_counter() - start
            published = await publish_paced(url, seconds)
            sent = int(published["sent"])
            await wait_until(lambda: len(store.lags_s) >= sent, "the paced events", 60, running)
    lag = {"rate": LAG_RATE}
    lags_ms = [s * 1000 for s in store.lags_s]
    return [
        Metric(SCENARIO, "ingest_events_per_s", n / ingest_s, "events/s", {"events": n}),
        Metric(SCENARIO, "publish_events_per_s", sent / published["seconds"], "events/s", lag),
        Metric(SCENARIO, "lag_p50_ms", _quantile(lags_ms, 0.5), "ms", lag),
        Metric(SCENARIO, "lag_p99_ms", _quantile(lags_ms, 0.99), "ms", lag),
        Metric(SCENARIO, "lag_max_ms", max(lags_ms), "ms", lag),
    ]


if __name__ == "__main__":
    url_, rate_, seconds_ = sys.argv[1:4]
    sys.stdout.write(json.dumps(asyncio.run(paced_publisher(url_, int(rate_), float(seconds_)))))

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from agents.executors import ShellExecutor
from agents.executors.noop import NoopExecutor
from agents.monitor.agent import Monitor
from agents.planner.agent import Planner
from agents.settings import Settings
from agents.worker.agent import Worker
from bus import Bus, EmbeddedNatsServer
from schemas import WORK_PHASES
from tests.helpers import EventLog, Running

ALL_PHASES = [p.value for p in WORK_PHASES]


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    """A fresh JetStream server per test, on a free port, storing under tmp_path."""
    server = EmbeddedNatsServer(tmp_path / "nats", port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNatsServer) -> Settings:
    """Fast timings so retries, heartbeats and redeliveries happen within a test."""
    return Settings(
        nats_url=nats_server.url,
        data_dir=tmp_path / "data",
        heartbeat_interval_s=0.5,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        ack_wait_s=2.0,
        shutdown_grace_s=2.0,
        reconcile_interval_s=1.0,
        fetch_poll_s=0.25,
    )


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    assert settings.nats_url
    b = await Bus.connect(settings.nats_url, name="test", topology=settings.topology())
    yield b
    await b.close()


@pytest.fixture
async def events(bus: Bus) -> AsyncIterator[EventLog]:
    log = await EventLog(bus).start()
    yield log
    await log.stop()


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    r = Running()
    yield r
    await r.stop_all()


@pytest.fixture
def start_planner(
    bus: Bus, settings: Settings, running: Running
) -> Callable[[], Awaitable[Planner]]:
    async def start() -> Planner:
        planner = Planner(bus, settings)
        await running.start(planner)
        return planner

    return start


@pytest.fixture
def start_worker(
    bus: Bus, settings: Settings, running: Running
) -> Callable[..., Awaitable[Worker]]:
    async def start(
        phases: Sequence[str] = ALL_PHASES, capabilities: Sequence[str] = ("shell",)
    ) -> Worker:
        worker = Worker(
            bus,
            settings,
            phases=phases,
            capabilities=capabilities,
            executors={
                "shell": ShellExecutor(dict(os.environ), settings),
                "noop": NoopExecutor(),
            },
        )
        await running.start(worker)
        return worker

    return start


@pytest.fixture
def start_monitor(
    bus: Bus, settings: Settings, running: Running
) -> Callable[[], Awaitable[Monitor]]:
    async def start() -> Monitor:
        monitor = Monitor(bus, settings)
        await running.start(monitor)
        return monitor

    return start


def agent_env(settings: Settings) -> dict[str, str]:
    """Environment for agents run as real subprocesses."""
    return {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}


PYTHON = sys.executable

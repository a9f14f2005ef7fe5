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
from bus.auth import AuthDir, Credentials
from bus.cluster import LocalCluster
from schemas import WORK_PHASES
from tests.helpers import EventLog, Running

ALL_PHASES = [p.value for p in WORK_PHASES]


@pytest.fixture
def auth_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AuthDir:
    """The test's identities, where the `settings` fixture's data dir keeps them. The
    CLI run as a subprocess finds them as a user's shell would: OMOI_AUTH_DIR."""
    auth = AuthDir(tmp_path / "data" / "auth").ensure()
    monkeypatch.setenv("OMOI_AUTH_DIR", str(auth.path))
    return auth


@pytest.fixture
def admin(auth_dir: AuthDir) -> Credentials:
    """The identity tests set up and inspect state with (agents run as their own roles
    when they run as processes; in-process agents share the test's bus)."""
    return auth_dir.credentials("admin")


@pytest.fixture
async def nats_server(tmp_path: Path, auth_dir: AuthDir) -> AsyncIterator[EmbeddedNatsServer]:
    """A fresh JetStream server per test, on a free port, storing under tmp_path, with
    auth on as `omoi up` runs it."""
    server = EmbeddedNatsServer(
        tmp_path / "nats", port=0, authorization=auth_dir.server_block.read_text()
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNatsServer, auth_dir: AuthDir) -> Settings:
    """Fast timings so retries, heartbeats and redeliveries happen within a test."""
    return Settings(
        nats_url=nats_server.url,
        data_dir=tmp_path / "data",
        # Explicit, so copies with another data dir keep the server's identities.
        auth_dir=auth_dir.path,
        heartbeat_interval_s=0.5,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        ack_wait_s=2.0,
        shutdown_grace_s=2.0,
        reconcile_interval_s=1.0,
        fetch_poll_s=0.25,
        planner_lease_s=3.0,
    )


@pytest.fixture
async def bus(settings: Settings, admin: Credentials) -> AsyncIterator[Bus]:
    assert settings.nats_url
    b = await Bus.connect(
        settings.nats_url, name="test", topology=settings.topology(), credentials=admin
    )
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
async def cluster(tmp_path: Path, auth_dir: AuthDir) -> AsyncIterator[LocalCluster]:
    """Three nats-servers clustered on loopback, with `omoi up`'s authorization block."""
    nodes = await LocalCluster(
        tmp_path / "cluster", authorization=auth_dir.server_block.read_text()
    ).start()
    yield nodes
    await nodes.stop()


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

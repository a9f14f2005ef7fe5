"""Fixtures for the coding-agent tests: a scripted model server, a short data dir, agents."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.llm.script import Script
from agents.llm.scripted import ScriptedModelServer
from agents.planner.agent import Planner
from agents.settings import Settings
from agents.validator.agent import Validator
from agents.worker.agent import Worker, default_executors
from bus import Bus
from schemas import WORK_PHASES
from tests.conftest import agent_env
from tests.helpers import AgentProcess, Running, stop_all
from tests.integration.agent_support import ModelFactory, Start
from tests.integration.monitor_support import Store


@pytest.fixture
def model_server() -> Iterator[ModelFactory]:
    servers: list[ScriptedModelServer] = []

    def start(spec: dict[str, Any]) -> ScriptedModelServer:
        server = ScriptedModelServer(Script.model_validate(spec))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("a")


@pytest.fixture
def start_agents(bus: Bus, running: Running) -> Start:
    async def start(s: Settings, *, worker: bool = True) -> None:
        await running.start(Planner(bus, s))
        await running.start(Validator(bus, s, env=dict(os.environ)))
        if worker:
            await running.start(
                Worker(
                    bus,
                    s,
                    phases=[p.value for p in WORK_PHASES],
                    capabilities=["shell", "agent"],
                    executors=default_executors(s, dict(os.environ)),
                )
            )

    return start


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """The analytics store the monitor reads, written here instead of by a recorder."""
    s = Store(settings)
    yield s
    s.writer.close()


@pytest.fixture
async def monitor_bus(settings: Settings, bus: Bus) -> AsyncIterator[Bus]:
    """The monitor's own connection; `bus` (admin) provisioned the topology."""
    assert settings.nats_url
    b = await Bus.connect(
        settings.nats_url, name="monitor", credentials=settings.credentials("monitor")
    )
    yield b
    await b.close()


@pytest.fixture
async def procs(settings: Settings, tmp_path: Path) -> AsyncIterator[Callable[..., AgentProcess]]:
    """Agents as real OS processes (for kill -9), on the test's settings unless given
    others; every one is stopped at teardown."""
    made: list[AgentProcess] = []

    def make(role: str, agent_id: str, s: Settings | None = None) -> AgentProcess:
        env = agent_env(s or settings)
        p = AgentProcess(role, agent_id, env, tmp_path / f"{agent_id}.log")
        made.append(p)
        return p

    yield make
    await stop_all(made)

"""An Omoi deployment for benchmarks: embedded nats-server, planner and worker processes.

Agents run as real processes (as `omoi up` runs them), so worker counts mean parallelism,
and their memory can be sampled per role.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from agents.settings import Settings
from bus import Bus, EmbeddedNatsServer
from bus.auth import AuthDir

AGENT_ENV = {
    # Benchmarks measure the steady state: beats and sweeps stay out of the way.
    "OMOI_HEARTBEAT_INTERVAL_S": "5",
    "OMOI_RECONCILE_INTERVAL_S": "60",
    "OMOI_FETCH_POLL_S": "0.5",
    "OMOI_LOG_LEVEL": "WARNING",
}
# Each worker process runs up to four no-op tasks at once: the counterpart of a Celery
# pool process prefetching four (its default) and of raw JetStream's batch fetch.
BENCH_CONCURRENCY = 4


@dataclass
class Stack:
    settings: Settings
    bus: Bus
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    # The embedded server, when the stack started one (a fault scenario kills it).
    server: EmbeddedNatsServer | None = None

    def cpu_roles(self) -> dict[str, list[int | None]]:
        """The processes whose CPU a task costs, by role (this process is the client)."""
        roles: dict[str, list[int | None]] = {"client": [os.getpid()]}
        for name, proc in self.procs.items():
            roles.setdefault(name.split("-")[0], []).append(proc.pid)
        roles["nats-server"] = [self.server.pid if self.server is not None else None]
        return roles

    def rss_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                out[name] = psutil.Process(proc.pid).memory_info().rss / 2**20
        return out


@contextlib.asynccontextmanager
async def omoi_stack(
    workdir: Path,
    *,
    workers: int,
    planners: int = 1,
    capabilities: tuple[str, ...] = ("noop",),
    phases: tuple[str, ...] = (),
    concurrency: int = BENCH_CONCURRENCY,
    nats_url: str | None = None,
    replicas: int = 1,
    env: dict[str, str] | None = None,
    auth: bool = True,
    log_level: str = "WARNING",
) -> AsyncIterator[Stack]:
    """`planners` planners and `workers` worker processes, on an embedded server unless
    `nats_url` names one (a cluster). Workers serve `phases` (all when empty) and
    `capabilities`."""
    server = None
    # Auth on, as `omoi up` runs it: every process connects as its own role.
    identities = AuthDir(workdir / "data" / "auth").ensure()
    if nats_url is None:
        server = EmbeddedNatsServer(
            workdir / "nats",
            port=0,
            # Off only to measure what auth costs (the clients still present their keys).
            authorization=identities.server_block.read_text() if auth else None,
        )
        nats_url = await server.start()
    settings = Settings(
        nats_url=nats_url,
        data_dir=workdir / "data",
        replicas=replicas,
        worker_concurrency=concurrency,
    )
    bus = await Bus.connect(
        nats_url,
        name="bench",
        topology=settings.topology(),
        credentials=identities.credentials("admin"),
    )
    stack = Stack(settings, bus, server=server)
    env = {**os.environ, **settings.to_env(), **AGENT_ENV, **(env or {})}
    log = await asyncio.to_thread(_open_log, workdir)
    try:
        argv = (
            {"planner": ["agents.planner"]}
            if planners == 1
            else {f"planner-{n + 1}": ["agents.planner"] for n in range(planners)}
        )
        for i in range(workers):
            args = ["agents.worker"]
            for capability in capabilities:
                args += ["--capability", capability]
            for phase in phases:
                args += ["--phase", phase]
            argv[f"worker-{i + 1}"] = args
        for name, args in argv.items():
            stack.procs[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", *args, "--agent-id", f"bench-{name}", "--log-level",
                log_level, env=env, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        await _wait_ready(bus, {f"bench-{n}" for n in argv})
        yield stack
    finally:
        for proc in stack.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in stack.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        log.close()
        await bus.close()
        if server is not None:
            await server.stop()


def _open_log(workdir: Path) -> IO[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    return (workdir / "agents.log").open("ab")


async def _wait_ready(bus: Bus, agent_ids: set[str], timeout: float = 60.0) -> None:
    async def beating() -> None:
        while {b.agent_id for b in await bus.heartbeats.values()} < agent_ids:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(beating(), timeout)

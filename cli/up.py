"""`omoi up`: an embedded nats-server (unless NATS_URL is set), the topology, and the agents.

It says it is up (the log line and `<data-dir>/omoi-up.json`) only once every agent it
started and the gateway are ready, so a request sent right then is answered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from agents.autoscaler.policy import parse_pools
from agents.settings import Settings
from agents.supervisor import Child, LineSink, Supervisor, agent_argv
from agents.supervisor_control import SupervisorControl
from bus import Bus, BusError, EmbeddedNatsServer
from bus.audit import AuditTrail
from bus.auth import AuthDir
from bus.server_audit import ServerRefusals
from cli import state, tokens
from cli.readiness import agent_probe, http_probe, wait_ready
from cli.secret_files import ADMIN_TOKEN_FILE, SecretFileError, auth_path

log = logging.getLogger(__name__)

STATE_FILE = state.STATE_FILE
# `omoi up` talks to NATS as the admin (it provisions), and audit entries say so.
UP_ACTOR = "nats:admin"
DEFAULT_READY_TIMEOUT_S = 120.0


class UpError(Exception):
    """The system did not come up; the message says which part and where its log is."""


async def up(
    settings: Settings,
    *,
    nats_port: int,
    workers: int,
    planners: int = 1,
    http_port: int | None = 8000,
    ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
    on_line: LineSink | None = None,
    on_ready: Callable[[Settings], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM. `on_line` gets every line the children write (else they
    only go to `<data-dir>/logs/`); `on_ready` runs once the system is ready."""
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server: EmbeddedNatsServer | None = None
    refusals: ServerRefusals | None = None
    if settings.nats_url is None:
        # Auth is on from the first start: an identity per role, in the data dir.
        auth = AuthDir(settings.auth_path).ensure()
        refusals = ServerRefusals(auth.public_keys())
        server = EmbeddedNatsServer(
            settings.data_dir / "nats",
            port=nats_port,
            authorization=auth.server_block.read_text(),
            on_log=refusals,
        )
        settings = settings.model_copy(update={"nats_url": await server.start()})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children, http_url = plan(
        workers, http_port, autoscaled=bool(settings.autoscaler_pools), planners=planners
    )
    try:
        bus = await Bus.connect(
            str(settings.nats_url),
            name="omoi-up",
            topology=settings.topology(),
            credentials=settings.credentials("admin"),
        )
        if refusals is not None:
            refusals.trail = AuditTrail(bus)
        try:
            if http_url is not None:
                await _local_admin(bus, settings)
            supervisor = Supervisor(
                children,
                {**os.environ, **settings.to_env()},
                log_dir=settings.data_dir / "logs",
                on_line=on_line,
                pools=[pool.name for pool in parse_pools(settings.autoscaler_pools)],
            )
            await _supervise(settings, bus, supervisor, http_url, ready_timeout, stop, on_ready)
        finally:
            if refusals is not None and refusals.trail is not None:
                trail, refusals.trail = refusals.trail, None
                await trail.flush()
            await bus.close()
    finally:
        if server is not None:
            await server.stop()


async def _local_admin(bus: Bus, settings: Settings) -> None:
    """The local user gets the gateway's admin token in a 0600 file, before the gateway
    starts (so the gateway's copy of the tokens holds it from the first request)."""
    try:
        await tokens.ensure_local_admin(bus, settings.data_dir, actor=UP_ACTOR)
    except SecretFileError as exc:
        raise UpError(str(exc)) from None


async def _sign_in_line(bus: Bus, settings: Settings, http_url: str) -> None:
    """A one-time sign-in link, so opening the dashboard needs no token typed."""
    try:
        admin_text = tokens.local_admin_token(settings.data_dir)
        admin = await tokens.valid(bus, admin_text) if admin_text else None
        if admin is None:
            log.warning("no valid local admin token; `omoi token create --role admin` makes one")
            return
        link = await tokens.sign_in_link(bus, admin, actor=UP_ACTOR)
    except (SecretFileError, BusError) as exc:
        log.warning("no sign-in link: %s", exc)
        return
    token_file = _shown(auth_path(settings.data_dir, ADMIN_TOKEN_FILE))
    log.info("dashboard: %s/login/link?token=%s (one-time sign-in link)", http_url, link)
    log.info("API token (admin): %s; `omoi token link` makes a new sign-in link", token_file)


def plan(
    workers: int, http_port: int | None, *, autoscaled: bool = False, planners: int = 1
) -> tuple[list[Child], str | None]:
    """The processes to run, and the gateway's URL (None without one). With autoscaled
    pools (OMOI_AUTOSCALER_POOLS) an autoscaler runs too, and starts their workers."""
    roles = ["planner", "monitor", "guardian", "validator", "delivery", "recorder"]
    if autoscaled:
        roles.append("autoscaler")
    children = [Child(role, agent_argv(role), agent=True) for role in roles]
    children += [
        Child(f"planner-{i}", agent_argv("planner"), agent=True) for i in range(2, planners + 1)
    ]
    http_url = None
    if http_port is not None:
        port = http_port or free_port()
        http_url = f"http://127.0.0.1:{port}"
        gateway = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
        children.append(Child("gateway", gateway))
    children += [Child(f"worker-{i + 1}", agent_argv("worker"), agent=True) for i in range(workers)]
    return children, http_url


async def _supervise(
    settings: Settings,
    bus: Bus,
    supervisor: Supervisor,
    http_url: str | None,
    ready_timeout: float,
    stop: asyncio.Event,
    on_ready: Callable[[Settings], Coroutine[Any, Any, None]] | None,
) -> None:
    extra: asyncio.Task[None] | None = None
    # The watchdog (in the monitor, on any host) sees this host's children through it.
    control = SupervisorControl(bus, supervisor)
    try:
        await supervisor.start()
        await control.start()
        log.info("started %d processes; waiting until they are ready", len(supervisor.children))
        probes = {c.name: agent_probe(bus, c) for c in supervisor.children if c.agent}
        if http_url is not None:
            probes["gateway"] = http_probe(http_url)
        not_ready = await wait_ready(probes, timeout=ready_timeout, stop=stop)
        if stop.is_set():
            return
        if not_ready:
            raise UpError(_not_ready_message(not_ready, supervisor, ready_timeout))
        _announce(settings, supervisor, http_url)
        if http_url is not None:
            await _sign_in_line(bus, settings, http_url)
        if on_ready is not None:
            extra = asyncio.create_task(on_ready(settings))
            extra.add_done_callback(_report_failure)
        await stop.wait()
    finally:
        log.info("shutting down")
        if extra is not None:
            extra.cancel()
        await control.stop()
        await supervisor.shutdown(grace_s=settings.shutdown_grace_s + 5)
        state.remove(settings.data_dir)


def _announce(settings: Settings, supervisor: Supervisor, http_url: str | None) -> None:
    """The state file the CLI finds the system by, and the line saying it is up."""
    assert settings.nats_url is not None
    state.write(
        settings.data_dir,
        state.UpState(
            nats_url=settings.nats_url,
            http_url=http_url,
            pid=os.getpid(),
            logs=str(supervisor.log_dir),
            agents=supervisor.pids(),
            agent_ids={c.name: c.agent_id for c in supervisor.children if c.agent_id},
        ),
    )
    workers = sum(1 for c in supervisor.children if c.name.startswith("worker-"))
    log.info(
        "omoi is up: NATS %s, dashboard %s, data in %s, %d worker(s)",
        settings.nats_url,
        http_url or "off",
        settings.data_dir,
        workers,
    )
    if supervisor.on_line is None:
        where = _shown(supervisor.log_dir) if supervisor.log_dir else "?"
        log.info("agent logs: %s/<name>.log (`omoi up --logs` shows them here)", where)


def _not_ready_message(not_ready: dict[str, str], supervisor: Supervisor, timeout: float) -> str:
    lines = [f"not ready after {timeout:g}s, so omoi is not up:"]
    for child in supervisor.children:
        if child.name in not_ready:
            restarts = f"; restarted {child.restarts} time(s)" if child.restarts else ""
            where = supervisor.log_file(child)
            log_hint = f"; its log: {_shown(where)}" if where else ""
            lines.append(f"  {child.name}: {not_ready[child.name]}{restarts}{log_hint}")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s", exc, exc_info=exc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

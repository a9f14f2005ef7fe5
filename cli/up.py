"""`omoi up`: an embedded nats-server (unless NATS_URL is set), the topology, and the agents."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agents.settings import Settings
from agents.supervisor import Supervisor, agent_argv
from bus import Bus, EmbeddedNatsServer

log = logging.getLogger(__name__)

STATE_FILE = "omoi-up.json"


async def up(
    settings: Settings,
    *,
    nats_port: int,
    workers: int,
    http_port: int | None = 8000,
    on_ready: Callable[[Settings], Coroutine[Any, Any, None]] | None = None,
) -> None:
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server: EmbeddedNatsServer | None = None
    if settings.nats_url is None:
        server = EmbeddedNatsServer(settings.data_dir / "nats", port=nats_port)
        url = await server.start()
        settings = settings.model_copy(update={"nats_url": url})
    else:
        url = settings.nats_url
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    bus = await Bus.connect(url, name="omoi-up", topology=settings.topology())
    children = [
        ("planner", agent_argv("planner")),
        ("monitor", agent_argv("monitor")),
        ("validator", agent_argv("validator")),
        ("recorder", agent_argv("recorder")),
    ]
    http_url = None
    if http_port is not None:
        port = http_port or free_port()
        http_url = f"http://127.0.0.1:{port}"
        gateway = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
        children.append(("gateway", gateway))
    children += [(f"worker-{i + 1}", agent_argv("worker")) for i in range(workers)]
    supervisor = Supervisor(children, {**os.environ, **settings.to_env()})
    await supervisor.start()
    state = {
        "nats_url": url,
        "http_url": http_url,
        "pid": os.getpid(),
        "agents": supervisor.pids(),
    }
    (settings.data_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    log.info(
        "omoi is up: NATS %s, dashboard %s, data in %s, %d worker(s)",
        url,
        http_url or "off",
        settings.data_dir,
        workers,
    )
    extra: asyncio.Task[None] | None = None
    if on_ready is not None:
        extra = asyncio.create_task(on_ready(settings))
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        if extra is not None:
            extra.cancel()
        await supervisor.shutdown(grace_s=settings.shutdown_grace_s + 5)
        (settings.data_dir / STATE_FILE).unlink(missing_ok=True)
        await bus.close()
        if server is not None:
            await server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

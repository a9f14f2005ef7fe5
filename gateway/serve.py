"""Serve the app with uvicorn inside a running event loop, and stop it again.

`python -m gateway` uses it, and so do tests that need a real socket (event streams, a
browser) in the same loop as the agents they drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from litestar import Litestar

log = logging.getLogger(__name__)


class GatewayStartError(RuntimeError):
    """The app did not start (its lifespan failed, e.g. NATS was unreachable)."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit as exc:
            # uvicorn exits the process on a failed startup; in a shared loop that would
            # take everything else down with it.
            raise GatewayStartError("the gateway failed to start; see the log") from exc
        self.up.set()

    # Signals belong to whoever owns the process (`__main__` installs its own).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on connections whose socket
    # says so, and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serving(
    app: Litestar, host: str = "127.0.0.1", port: int = 0, *, grace_s: float = 2.0
) -> AsyncIterator[str]:
    """Serve `app` until the block ends; yields its base URL (`port=0` picks a free port)."""
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",
        # Event streams never end by themselves; they get this long after a stop.
        timeout_graceful_shutdown=int(max(grace_s, 1)),
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    up = asyncio.create_task(server.up.wait())
    await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
    if not server.up.is_set():
        up.cancel()
        sock.close()
        task.result()  # raises GatewayStartError
        raise GatewayStartError("the gateway stopped while starting")
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
    log.info("gateway serving on %s", url)
    try:
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()


async def serve_forever(app: Litestar, host: str, port: int, stop: asyncio.Event) -> None:
    async with serving(app, host, port):
        await stop.wait()

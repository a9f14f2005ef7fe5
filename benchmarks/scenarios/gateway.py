"""Scenario 7: `GET /api/v1/tickets/{id}` latency at 1,000 requests/s.

The gateway runs as its own process (as `omoi up` runs it) and the load comes from a
separate process, so neither steals the other's event loop. Every request carries a
viewer's token, checked and counted by the rate limit as any client's would be (its limit
raised above the load).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys

import httpx

from agents.settings import Settings
from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.latency import percentile
from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from schemas import TicketState
from schemas.token import ApiToken, Role, mint

RATE = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    async def probe() -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/ready")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    await asyncio.wait_for(probe(), timeout)


async def start_gateway(
    settings: Settings, token_rate: str
) -> tuple[asyncio.subprocess.Process, str]:
    """The gateway as its own process, as `omoi up` runs it, with a token rate limit above
    the load; the process and its base URL."""
    port = free_port()
    env = {**os.environ, **settings.to_env(), "OMOI_GATEWAY_TOKEN_RATE_LIMIT": token_rate}
    gateway = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    return gateway, f"http://127.0.0.1:{port}"


async def stop_gateway(gateway: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(gateway.pid, signal.SIGTERM)
    await asyncio.wait_for(gateway.wait(), timeout)


async def run(cfg: BenchConfig) -> list[Metric]:
    server = EmbeddedNatsServer(cfg.workdir / "gw-nats", port=0)
    nats_url = await server.start()
    settings = Settings(nats_url=nats_url, data_dir=cfg.workdir / "gw-data")
    bus = await Bus.connect(nats_url, name="bench-gw", topology=settings.topology())
    await bus.tickets.create("bench-gw", TicketState(id="bench-gw", title="gateway bench"))
    token, record = mint(Role.VIEWER, "bench")
    await (await bus.bucket(c.TOKENS_BUCKET, ApiToken)).create(record.id, record)
    gateway, base = await start_gateway(settings, f"{RATE * 120}/minute")
    try:
        await wait_ready(base)
        seconds = max(1.0, 10 * cfg.scale)
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.scenarios.http_load",
            f"{base}/api/v1/tickets/bench-gw", str(RATE), str(seconds), token,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(load.communicate(), timeout=seconds * 10 + 60)
        result = json.loads(out)
    finally:
        await stop_gateway(gateway)
        await bus.close()
        await server.stop()
    latencies = result["latencies_ms"]
    params = {"rate": RATE}
    return [
        Metric("gateway", "p50_ms", percentile(latencies, 0.5), "ms", params),
        Metric("gateway", "p99_ms", percentile(latencies, 0.99), "ms", params),
        Metric("gateway", "achieved_rate", float(result["achieved_rate"]), "req/s", params),
        Metric("gateway", "errors", float(result["errors"]), "requests", params),
    ]

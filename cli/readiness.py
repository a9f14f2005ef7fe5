"""Is what `omoi up` started ready? Each child has a probe; ready when every probe says so.

An agent is ready when its heartbeat says `ready`: it beats the moment it serves its
subjects, over the connection that subscribed them, so a request sent after that beat was
seen reaches it. The gateway is ready when its `/ready` answers 200 (connected to NATS,
topology present).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from agents.supervisor import Child
from bus import Bus

# None when ready, else why not (one short line).
Probe = Callable[[], Awaitable[str | None]]

_HTTP_TIMEOUT_S = 2.0


async def wait_ready(
    probes: Mapping[str, Probe],
    *,
    timeout: float,
    stop: asyncio.Event,
    interval: float = 0.1,
) -> dict[str, str]:
    """Poll until every probe is ready (returns {}), `stop` is set or `timeout` passed
    (returns the children not ready, with the reason)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = dict(probes)
    reasons: dict[str, str] = {}
    while True:
        answers = await asyncio.gather(*(probe() for probe in pending.values()))
        reasons = {name: why for name, why in zip(pending, answers, strict=True) if why}
        pending = {name: pending[name] for name in reasons}
        if not pending or stop.is_set() or loop.time() >= deadline:
            return reasons
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(interval, deadline - loop.time()))


def agent_probe(bus: Bus, child: Child) -> Probe:
    """Follows restarts: it asks for the heartbeat of the child's current agent id."""

    async def probe() -> str | None:
        agent_id = child.agent_id
        if agent_id is None:
            return "not started"
        try:
            beat = await bus.heartbeats.value(agent_id)
        except Exception as exc:  # noqa: BLE001 - NATS trouble is a reason, not a crash
            return f"cannot read its heartbeat: {_describe(exc)}"
        if beat is None:
            return f"no heartbeat from {agent_id} yet"
        return None if beat.ready else f"{agent_id} is starting (heartbeat not ready yet)"

    return probe


def http_probe(base_url: str, path: str = "/ready") -> Probe:
    async def probe() -> str | None:
        try:
            status = await http_status(base_url, path)
        except TimeoutError:
            return f"GET {path}: no answer within {_HTTP_TIMEOUT_S:g}s"
        except (OSError, ValueError) as exc:
            return f"GET {path} failed: {_describe(exc)}"
        return None if status == 200 else f"GET {path} answered {status}"

    return probe


async def http_status(base_url: str, path: str) -> int:
    """The status code of one GET; plain HTTP/1.1 on 127.0.0.1 needs no HTTP client."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _HTTP_TIMEOUT_S)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), _HTTP_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    return int(parts[1])


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

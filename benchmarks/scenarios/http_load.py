"""A fixed-rate HTTP load process: `python -m benchmarks.scenarios.http_load URL RATE SECONDS
[TOKEN]` (a bearer token sent with every request).

Requests are due at fixed times (open loop) and latency is measured from the due time,
so queueing in the client counts too (no coordinated omission). A small raw HTTP/1.1
keep-alive client is used: httpx's connection pool, not the server, was the limit at
1,000 requests/s. Prints one JSON object: latencies in ms, errors, the achieved rate.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

CONNECTIONS = 16


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def load(url: str, rate: int, seconds: float, token: str = "") -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    raw = f"GET {parts.path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n{auth}\r\n".encode()
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while (scheduled := await due.get()) is not None:
            try:
                status = await _request(reader, writer, raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            if status == 200:
                latencies.append((time.perf_counter() - scheduled) * 1000)
            else:
                errors += 1
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(scheduled)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    achieved = n / (time.perf_counter() - start)
    return {"latencies_ms": latencies, "errors": errors, "achieved_rate": achieved}


if __name__ == "__main__":
    url, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    token = sys.argv[4] if len(sys.argv) > 4 else ""
    result = asyncio.run(load(url, rate, seconds, token))
    sys.stdout.write(json.dumps(result))

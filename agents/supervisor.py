"""Run agents as child processes; restart a crashed one with backoff; stop them all cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agents.procs import detach_from_terminal_and_follow_parent

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


def agent_argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"agents.{role}", *args]


class Supervisor:
    """Keeps a set of processes running until `shutdown()`.

    A child that exits is restarted after a delay that doubles with each quick crash
    (from `backoff_base_s` up to `backoff_cap_s`) and resets once it stayed up for
    `healthy_after_s`.
    """

    def __init__(
        self,
        children: Sequence[tuple[str, list[str]]],
        env: Mapping[str, str],
        *,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        healthy_after_s: float = 60.0,
    ) -> None:
        self.children = [Child(name, argv) for name, argv in children]
        self.env = dict(env)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.healthy_after_s = healthy_after_s
        self._stop = asyncio.Event()

    async def start(self) -> None:
        for child in self.children:
            await self._spawn(child)
            child.watcher = asyncio.create_task(self._watch(child))

    async def _spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv, env=self.env, preexec_fn=detach_from_terminal_and_follow_parent
        )
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    async def _watch(self, child: Child) -> None:
        failures = 0
        while not self._stop.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stop.is_set():
                return
            lived = time.monotonic() - child.started
            failures = 0 if lived >= self.healthy_after_s else failures + 1
            delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(failures - 1, 0))
            log.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)
            await asyncio.sleep(delay)
            if self._stop.is_set():
                return
            child.restarts += 1
            await self._spawn(child)

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.children if c.proc and c.proc.returncode is None}

    async def shutdown(self, grace_s: float) -> None:
        """SIGTERM every child, wait up to `grace_s`, then SIGKILL. Safe to call twice."""
        self._stop.set()
        for child in self.children:
            if child.watcher is not None:
                child.watcher.cancel()
        running = [c.proc for c in self.children if c.proc and c.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in running]
        if waits:
            await asyncio.wait(waits, timeout=grace_s)
            for proc in running:
                if proc.returncode is None:
                    log.warning("pid %d did not stop in %.0fs; killing", proc.pid, grace_s)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*waits, return_exceptions=True)

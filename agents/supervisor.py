"""Run agents as child processes; restart a crashed one with backoff; stop them all cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from agents.base import new_agent_id
from agents.procs import detach_from_terminal_and_follow_parent
from schemas.supervisor import ChildStatus

log = logging.getLogger(__name__)

# Called with a child's name and one line of its output (without the newline).
LineSink = Callable[[str, str], None]

# Restarts a child remembers the time of (its supervisor's status shows them).
RESTART_HISTORY = 20
# How long shutdown waits for the last lines of the children's output to arrive.
_DRAIN_S = 2.0
_CHUNK = 64 * 1024


@dataclass
class Child:
    """One supervised program. An `agent` gets a fresh `--agent-id` on every start, named
    after the child, so whoever started it can tell its heartbeat from any other."""

    name: str
    argv: list[str]
    agent: bool = False
    agent_id: str | None = None
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    # When it was restarted (wall clock, newest last) and how its last run ended.
    restarted_at: deque[datetime] = field(default_factory=lambda: deque(maxlen=RESTART_HISTORY))
    last_exit: int | None = None
    # Held (the guardian stopped a crash loop, or an operator): not restarted until released.
    held: str | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    # One of a pool's workers, started (and stopped) by `Supervisor.scale`.
    pool: bool = False

    @property
    def role(self) -> str | None:
        """The agent role it runs (`agents.<role>` in its argv), if it is an agent."""
        if not self.agent:
            return None
        for arg in self.argv:
            if arg.startswith("agents.") and arg.count(".") == 1:
                return arg.removeprefix("agents.")
        return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def status(self) -> ChildStatus:
        return ChildStatus(
            name=self.name,
            agent_id=self.agent_id,
            pid=self.proc.pid if self.running and self.proc else None,
            running=self.running,
            restarts=self.restarts,
            restarted_at=list(self.restarted_at),
            last_exit=self.last_exit,
            role=self.role,
            held=self.held,
        )

    def next_argv(self) -> list[str]:
        if not self.agent:
            return self.argv
        self.agent_id = new_agent_id(self.name)
        return [*self.argv, "--agent-id", self.agent_id]


def agent_argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"agents.{role}", *args]


class Supervisor:
    """Keeps a set of processes running until `shutdown()`.

    A child that exits is restarted after a delay that doubles with each quick crash
    (from `backoff_base_s` up to `backoff_cap_s`) and resets once it stayed up for
    `healthy_after_s`.

    `pools` name the workers it may run more or fewer of (`scale`): a pool
    `<phase>-<capability>` runs children `<pool>-<n>`, each a worker of that phase and
    capability; the autoscaler asks for a number (agents/autoscaler).

    With a `log_dir`, a child's output (stdout and stderr) is appended to
    `<log_dir>/<name>.log`, across restarts; with `on_line` as well, every line is also
    handed to it. Without a `log_dir` the children share this process's stdout and stderr.
    """

    def __init__(
        self,
        children: Sequence[Child],
        env: Mapping[str, str],
        *,
        log_dir: Path | None = None,
        on_line: LineSink | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        healthy_after_s: float = 60.0,
        pools: Sequence[str] = (),
        grace_s: float = 10.0,
    ) -> None:
        self.children = list(children)
        self.pools = frozenset(pools)
        self.grace_s = grace_s
        self._scaling = asyncio.Lock()
        self.env = dict(env)
        self.log_dir = log_dir
        self.on_line = on_line
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.healthy_after_s = healthy_after_s
        self._stop = asyncio.Event()
        self._relays: set[asyncio.Task[None]] = set()

    def log_file(self, child: Child) -> Path | None:
        return self.log_dir / f"{child.name}.log" if self.log_dir is not None else None

    async def start(self) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            await self._spawn(child)
            child.watcher = asyncio.create_task(self._watch(child))

    async def _spawn(self, child: Child) -> None:
        argv = child.next_argv()
        path = self.log_file(child)
        if path is None:
            child.proc = await _exec(argv, self.env)
        else:
            with path.open("ab") as logfile:
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                who = f" as {child.agent_id}" if child.agent_id else ""
                logfile.write(f"--- {stamp} omoi up starts {child.name}{who}\n".encode())
                logfile.flush()
                if self.on_line is None:
                    child.proc = await _exec(argv, self.env, stdout=logfile)
                else:
                    child.proc = await _exec(argv, self.env, stdout=asyncio.subprocess.PIPE)
                    relay = asyncio.create_task(self._relay(child.name, child.proc, path))
                    self._relays.add(relay)
                    relay.add_done_callback(self._relays.discard)
        child.started = time.monotonic()
        log.debug("started %s (pid %d)", child.name, child.proc.pid)

    async def _relay(self, name: str, proc: asyncio.subprocess.Process, path: Path) -> None:
        # Chunks, not readline: a line longer than the stream's limit must not be lost.
        assert proc.stdout is not None
        partial = b""
        with path.open("ab") as logfile:
            while chunk := await proc.stdout.read(_CHUNK):
                logfile.write(chunk)
                logfile.flush()
                *lines, partial = (partial + chunk).split(b"\n")
                if len(partial) >= _CHUNK:
                    lines, partial = [*lines, partial], b""
                for line in lines:
                    self._show(name, line)
            if partial:
                self._show(name, partial)

    def _show(self, name: str, line: bytes) -> None:
        assert self.on_line is not None
        try:
            self.on_line(name, line.decode(errors="replace").rstrip("\r"))
        except Exception:  # a broken sink must not stop the child's output
            log.warning("could not show a line of %s's output", name, exc_info=True)

    async def _watch(self, child: Child) -> None:
        failures = 0
        while not self._stop.is_set():
            assert child.proc is not None
            code = await child.proc.wait()
            child.last_exit = code
            if self._stop.is_set():
                return
            lived = time.monotonic() - child.started
            failures = 0 if lived >= self.healthy_after_s else failures + 1
            delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(failures - 1, 0))
            where = self.log_file(child)
            log.warning(
                "%s exited with %s; restarting in %.1fs%s",
                child.name,
                code,
                delay,
                f" (its log: {where})" if where else "",
            )
            await asyncio.sleep(delay)
            while child.held is not None and not self._stop.is_set():
                await child.released.wait()
            if self._stop.is_set():
                return
            child.restarts += 1
            child.restarted_at.append(datetime.now(UTC))
            await self._spawn(child)

    def restart(self, agent_id: str, reason: str) -> Child | None:
        """Kill the child running as `agent_id` (SIGKILL: a wedged process may not heed a
        SIGTERM); its watcher starts it again as after any exit. None: no such child runs
        here (it may have been restarted already, under a new id)."""
        for child in self.children:
            if child.agent_id == agent_id and child.running and child.proc is not None:
                log.warning("restarting %s (%s): %s", child.name, agent_id, reason)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                return child
        return None

    def hold(self, name: str, reason: str) -> Child | None:
        """Stop child `name` (SIGKILL) and do not restart it until `release`. None: no such
        child here. Holding a held child changes nothing."""
        child = self._child(name)
        if child is None:
            return None
        if child.held is None:
            log.warning("holding %s: %s", name, reason)
            child.held = reason
            child.released.clear()
            if child.running and child.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
        return child

    def release(self, name: str) -> Child | None:
        """Let a held child run again (its watcher starts it)."""
        child = self._child(name)
        if child is not None and child.held is not None:
            log.warning("releasing %s", name)
            child.held = None
            child.released.set()
        return child

    def replicas(self, pool: str) -> list[Child]:
        """The pool's children, oldest first."""
        mine = [c for c in self.children if c.name.rsplit("-", 1)[0] == pool and c.pool]
        return sorted(mine, key=lambda c: int(c.name.rsplit("-", 1)[1]))

    async def scale(self, pool: str, replicas: int) -> int:
        """Run `replicas` workers of `pool`: start the missing ones, stop the newest beyond
        it (SIGTERM: a worker finishes or hands back what it runs). How many run now."""
        if pool not in self.pools:
            raise ValueError(f"no pool {pool!r} here (pools: {', '.join(sorted(self.pools))})")
        phase, capability = pool.split("-", 1)
        async with self._scaling:
            have = self.replicas(pool)
            if self._stop.is_set():
                return len(have)  # shutting down: nothing new starts
            taken = {int(c.name.rsplit("-", 1)[1]) for c in have}
            for _ in range(replicas - len(have)):
                n = next(i for i in range(len(taken) + 1) if i not in taken)
                taken.add(n)
                argv = agent_argv("worker", "--phase", phase, "--capability", capability)
                child = Child(f"{pool}-{n}", argv, agent=True, pool=True)
                self.children.append(child)
                await self._spawn(child)
                child.watcher = asyncio.create_task(self._watch(child))
                log.info("scaled %s up: started %s", pool, child.name)
            for child in reversed(have[replicas:]):
                await self._retire(child)
                log.info("scaled %s down: stopped %s", pool, child.name)
            return len(self.replicas(pool))

    async def _retire(self, child: Child) -> None:
        self.children.remove(child)
        if child.watcher is not None:
            child.watcher.cancel()
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _child(self, name: str) -> Child | None:
        return next((child for child in self.children if child.name == name), None)

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
        await self._drain()

    async def _drain(self) -> None:
        # The children are gone; their last lines are in the pipes, unless a grandchild
        # still holds a pipe open, which must not hold up the shutdown.
        relays = list(self._relays)
        if not relays:
            return
        _, pending = await asyncio.wait(relays, timeout=_DRAIN_S)
        for relay in pending:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)


async def _exec(
    argv: list[str], env: Mapping[str, str], stdout: IO[bytes] | int | None = None
) -> asyncio.subprocess.Process:
    # stderr follows stdout: one log per child, its lines in the order they were written.
    return await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdout=stdout,
        stderr=asyncio.subprocess.STDOUT if stdout is not None else None,
        preexec_fn=detach_from_terminal_and_follow_parent,
    )

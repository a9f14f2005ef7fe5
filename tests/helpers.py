"""Test helpers: wait on events and state with timeouts, never on sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import DeliverPolicy

from agents import workspace as ws
from agents.base import Agent
from agents.branches import task_branch
from agents.settings import Settings
from agents.supervisor import Child, Supervisor
from agents.supervisor_control import SupervisorControl
from bus import Bus
from bus import constants as c
from schemas import Event, TicketState
from schemas.audit import AuditEntry


class EventLog:
    """Every event on the stream (from the start), collected as it arrives."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._sub: Any = None

    async def start(self, subject: str = "omoi.events.>") -> EventLog:
        # Heartbeats every second: after a server restart the feed resumes within seconds.
        self._sub = await self.bus.js.subscribe(
            subject,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=self._on_msg,
            idle_heartbeat=1.0,
        )
        return self

    async def _on_msg(self, msg: Any) -> None:
        async with self._changed:
            self.events.append(Event.model_validate_json(msg.data))
            self._changed.notify_all()

    async def wait(self, match: Callable[[Event], bool], timeout: float = 20.0) -> Event:
        async def first() -> Event:
            async with self._changed:
                while True:
                    for event in self.events:
                        if match(event):
                            return event
                    await self._changed.wait()

        return await asyncio.wait_for(first(), timeout)

    async def wait_type(
        self, ticket_id: str, kind: str, timeout: float = 20.0, **data: Any
    ) -> Event:
        def match(e: Event) -> bool:
            return (
                e.ticket_id == ticket_id
                and e.type == kind
                and all(e.data.get(k) == v or getattr(e, k, None) == v for k, v in data.items())
            )

        return await self.wait(match, timeout)

    def of(self, ticket_id: str, kind: str | None = None) -> list[Event]:
        return [
            e for e in self.events if e.ticket_id == ticket_id and (kind is None or e.type == kind)
        ]

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def wait_until[T](
    probe: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy. For state without an event."""

    async def loop() -> T:
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(interval)

    return await asyncio.wait_for(loop(), timeout)


class Running:
    """Agents running in this event loop, stopped at teardown."""

    def __init__(self) -> None:
        self.agents: list[tuple[Agent, asyncio.Task[None]]] = []

    async def start(self, agent: Agent) -> Agent:
        task = asyncio.create_task(agent.run())
        self.agents.append((agent, task))
        ready = asyncio.create_task(agent.ready.wait())
        await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()  # surface a start-up failure
        assert agent.ready.is_set(), f"{agent.id} did not become ready"
        return agent

    async def stop(self, agent: Agent) -> None:
        for a, task in self.agents:
            if a is agent:
                await agent.shutdown()
                await task

    async def stop_all(self) -> None:
        for agent, task in self.agents:
            await agent.shutdown()
            await asyncio.wait_for(task, 30)


async def submit(
    bus: Bus, payload: dict[str, Any], timeout: float = 10.0, *, trusted: bool = True
) -> dict[str, Any]:
    """Submit as the operator (the trusted subject: shell tasks allowed), or as a plain
    submitter with `trusted=False`."""
    subject = c.TRUSTED_SUBMIT_SUBJECT if trusted else c.SUBMIT_SUBJECT
    reply = await bus.nc.request(subject, json.dumps(payload).encode(), timeout=timeout)
    return dict(json.loads(reply.data))


async def publish_workspace(bus: Bus, ticket_id: str, repo: Path) -> str:
    """Publish a git repository as a ticket's workspace, as a worker would; its head."""
    bundle = repo.parent / f"{repo.name}.bundle"
    ws.bundle(repo, bundle)
    head = ws.bundle_head(bundle)
    name = c.workspace_object(ticket_id)
    headers = {c.HDR_WORKSPACE_HEAD: head, c.HDR_WORKSPACE_BRANCH: task_branch("published")}
    await bus.workspaces.put(
        name, bundle, headers=headers, replacing=await bus.workspaces.info(name)
    )
    return head


async def ticket_finished(bus: Bus, ticket_id: str) -> TicketState | None:
    t = await bus.tickets.value(ticket_id)
    return t if t is not None and t.status != "running" else None


class AgentProcess:
    """An agent run as a real OS process (`python -m agents.<role>`), for kill -9 tests."""

    def __init__(self, role: str, agent_id: str, env: dict[str, str], log_path: Any) -> None:
        self.role = role
        self.agent_id = agent_id
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, bus: Bus, *args: str) -> AgentProcess:
        import sys

        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"agents.{self.role}", "--agent-id", self.agent_id, *args,
                env=self.env, stdout=log, stderr=log,
            )  # fmt: skip
        await wait_until(self._ready_beat(bus), timeout=30)
        return self

    def _ready_beat(self, bus: Bus) -> Callable[[], Awaitable[bool]]:
        # The first beat goes out before the agent subscribes; only a `ready` one says
        # that a request (an intake submission, say) reaches it.
        async def ready() -> bool:
            beat = await bus.heartbeats.value(self.agent_id)
            return beat is not None and beat.ready

        return ready

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def terminate(self, grace: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it has not stopped within `grace`: never leaks."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise


async def stop_all(procs: list[AgentProcess]) -> None:
    """Terminate every process (none is left running), then raise the first failure: an
    agent that did not stop on SIGTERM within its grace is a bug."""
    results = await asyncio.gather(*(p.terminate() for p in procs), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, ProcessLookupError):
            raise result


async def read_pid(path: Any, timeout: float = 20.0) -> int:
    """Wait for a task to write its pid file, and return the pid."""

    async def probe() -> int:
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    return await wait_until(probe, timeout)


def gated(name: str, limit_s: float = 30.0) -> str:
    """A shell command that records its pid in `<name>.pid`, then waits for a `release`
    file in the workspace (the test creates it), failing after `limit_s`."""
    loops = int(limit_s / 0.05)
    return (
        f"echo $$ > {name}.pid; for i in $(seq {loops}); do "
        "[ -f release ] && exit 0; sleep 0.05; done; exit 1"
    )


async def omoi_sql(env: dict[str, str], query: str, timeout: float = 60) -> tuple[int, Any, str]:
    """`omoi sql --json QUERY` as a user runs it: exit code, rows (None unless 0), stderr."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "omoi"), "sql", "--json", query,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    rows = json.loads(out) if proc.returncode == 0 else None
    return proc.returncode, rows, err.decode()


async def audit_entries(bus: Bus, action: str | None = None) -> list[AuditEntry]:
    """Every entry in the audit stream (of `action`), oldest first."""
    info = await bus.js.stream_info(c.AUDIT_STREAM)
    if not info.state.messages:
        return []
    entries = [
        AuditEntry.model_validate_json((await bus.js.get_msg(c.AUDIT_STREAM, seq)).data)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    return [e for e in entries if action is None or e.action == action]


async def stream_holds(bus: Bus, stream: str, n: int) -> bool:
    """Whether `stream` holds exactly `n` messages. Storing a core publish is asynchronous
    and emits no event, so tests poll this with `wait_until`."""
    return (await bus.js.stream_info(stream)).state.messages == n


SYSTEM_DEPS_FIX = "`make test` installs it (deploy/system-deps.sh test, as root)"


def require_tool(present: bool, tool: str, fix: str = SYSTEM_DEPS_FIX) -> None:
    """Fail, never skip, a test whose tool is missing: `make test` installs every one, so a
    skip would only hide that the suite did not run."""
    if not present:
        pytest.fail(f"{tool} is missing: {fix}", pytrace=False)


@contextlib.asynccontextmanager
async def supervising(
    settings: Settings,
    bus: Bus,
    children: Sequence[Child],
    *,
    host: str | None = None,
    **options: Any,
) -> AsyncIterator[Supervisor]:
    """A supervisor running `children` with these settings, serving its control subjects
    on `bus` (as `omoi up` runs one), stopped at the end."""
    env = {**os.environ, **settings.to_env()}
    sup = Supervisor(list(children), env, log_dir=settings.data_dir / "logs", **options)
    control = SupervisorControl(bus, sup, host=host)
    await sup.start()
    await control.start()
    try:
        yield sup
    finally:
        await control.stop()
        await sup.shutdown(grace_s=5)

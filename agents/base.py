"""The lifecycle every agent shares: start, heartbeat, run, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, MutableMapping, Sequence
from typing import Any

from agents.settings import Settings
from agents.version import omoi_version
from bus import Bus, BusError
from bus.consumer import Consuming
from bus.log_context import bind_log_fields
from bus.registry import AgentService
from schemas import AGENTS_TOKEN, Event, EventType, Heartbeat, utcnow
from schemas.registry import AgentCard, AgentStatus


class AgentLog(logging.LoggerAdapter[logging.Logger]):
    """Puts the agent id in every record's `extra`; the formatters (`agents.logs`) show it."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def new_agent_id(role: str) -> str:
    return f"{role}-{socket.gethostname()[:20]}-{uuid.uuid4().hex[:6]}".replace(".", "-")


class Agent:
    """Base class. Subclasses implement `main()`, which returns once `self.stopping` is set.

    `run()` owns the lifecycle; `shutdown()` may be called at any time, from anywhere,
    any number of times (including before `run()` started).
    """

    role = "agent"

    def __init__(self, bus: Bus, settings: Settings, agent_id: str | None = None) -> None:
        self.bus = bus
        self.settings = settings
        self.id = agent_id or new_agent_id(self.role)
        self.log = AgentLog(logging.getLogger(type(self).__module__), {"agent": self.id})
        self.stopping = asyncio.Event()
        # Set by subclasses once they serve their subjects; tests and `omoi up` wait on it.
        self.ready = asyncio.Event()
        self.current_task: str | None = None
        self._started_at = utcnow()
        self._done = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._service: AgentService | None = None

    # Lifecycle

    async def run(self) -> None:
        # Every task this one starts inherits it: lines from `bus` name the agent too.
        bind_log_fields(agent=self.id)
        try:
            await self._beat()
            await self._register()
            await self._emit_agent_event(EventType.AGENT_STARTED)
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop())
            self.log.info("started")
            if not self.stopping.is_set():
                await self.main()
            self.ready.set()
        finally:
            await self._finish()

    async def main(self) -> None:
        raise NotImplementedError

    def request_stop(self) -> None:
        """Ask the agent to stop; returns immediately. Safe from signal handlers."""
        if not self.stopping.is_set():
            self.log.info("stopping")
            self.stopping.set()

    async def shutdown(self) -> None:
        """Stop and wait until the agent has finished."""
        self.request_stop()
        if self._heartbeat_task is None and not self._done.is_set():
            return  # never started
        await self._done.wait()

    async def _finish(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        await self._withdraw()
        # Saying goodbye is worth a moment, not a hang: with NATS gone, the heartbeat
        # expires and the monitor reports the agent stale instead.
        try:
            await asyncio.wait_for(self._say_goodbye(), max(self.settings.shutdown_grace_s, 1.0))
        except Exception:
            self.log.warning("could not deregister (NATS unavailable?)", exc_info=True)
        self.log.info("stopped")
        self._done.set()

    # The service API (bus/registry.py): how `omoi agents`, `nats micro ls` and the
    # gateway find this agent by role, capability and label.

    def card(self) -> AgentCard:
        """What this agent says about itself; fixed for its life (the service metadata)."""
        return AgentCard(
            role=self.role,
            agent_id=self.id,
            omoi_version=omoi_version(),
            host=socket.gethostname(),
            pid=os.getpid(),
        )

    def status(self) -> AgentStatus:
        """What it is doing now; read on every STATS or status request, so it is cheap."""
        return AgentStatus(ready=self.ready.is_set(), current_task=self.current_task)

    async def _register(self) -> None:
        service = AgentService(self.bus, self.card(), self.status)
        try:
            await service.start()
        except BusError:
            # Being found is worth less than the work: the agent runs on unlisted.
            self.log.warning("not registered as a NATS service", exc_info=True)
            return
        self._service = service

    async def _withdraw(self) -> None:
        """Leave the service API first, so no search lists an agent that is going."""
        service, self._service = self._service, None
        if service is None:
            return
        try:
            await asyncio.wait_for(service.stop(), max(self.settings.shutdown_grace_s, 1.0))
        except Exception:
            self.log.warning("could not withdraw its NATS service", exc_info=True)

    async def _say_goodbye(self) -> None:
        await self.bus.heartbeats.delete(self.id)
        await self._emit_agent_event(EventType.AGENT_STOPPED)

    # Heartbeats

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            agent_id=self.id,
            role=self.role,
            current_task=self.current_task,
            status="busy" if self.current_task else "idle",
            ready=self.ready.is_set(),
            host=socket.gethostname(),
            pid=os.getpid(),
            interval_s=self.settings.heartbeat_interval_s,
            started_at=self._started_at,
        )

    async def _beat(self) -> None:
        await self.bus.heartbeats.put(self.id, self.heartbeat())

    async def _heartbeat_loop(self) -> None:
        announced = False  # a beat saying `ready` went out (or was tried)
        while True:
            if announced:
                await asyncio.sleep(self.settings.heartbeat_interval_s)
            else:
                # Beat the moment the agent becomes ready: `omoi up` waits for that beat.
                # It follows the subscriptions on the same connection, so whoever sees
                # it can already reach them.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ready.wait(), self.settings.heartbeat_interval_s)
            announced = self.ready.is_set()
            try:
                await self._beat()
            except Exception:
                self.log.warning("heartbeat failed", exc_info=True)

    async def _emit_agent_event(self, kind: EventType, **data: Any) -> None:
        await self.bus.publish_event(
            Event(
                id=f"{self.id}.{kind.value}",
                type=kind,
                ticket_id=AGENTS_TOKEN,
                agent=self.id,
                data={"role": self.role, **data},
            )
        )

    async def consume(self, *consumers: Consuming, also: Sequence[Awaitable[None]] = ()) -> None:
        """Run `consumers`, and the loops in `also`, until the agent is asked to stop; then
        stop the consumers (each hands back what it has not finished) and give the loops
        the shutdown grace to notice. The agent is ready once every consumer is bound."""
        runs = [asyncio.create_task(consumer.run()) for consumer in consumers]
        loops = [asyncio.ensure_future(loop) for loop in also]
        try:
            if await _started(consumers, runs):
                self.ready.set()
            stop = asyncio.create_task(self.stopping.wait())
            try:
                done, _ = await asyncio.wait([stop, *runs, *loops], return_when="FIRST_COMPLETED")
            finally:
                stop.cancel()
            for task in done:
                failure = None if task is stop or task.cancelled() else task.exception()
                if failure is not None:
                    raise failure
        finally:
            self.request_stop()
            for consumer in consumers:
                consumer.stop()
            await asyncio.gather(*runs, return_exceptions=True)
            if loops:
                _, late = await asyncio.wait(loops, timeout=self.settings.shutdown_grace_s)
                for loop in late:
                    loop.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    async def wait_stopping(self, timeout: float) -> bool:
        """Sleep up to `timeout`, waking early on stop. True if stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout)
        return self.stopping.is_set()


async def _started(consumers: Sequence[Consuming], runs: Sequence[asyncio.Task[None]]) -> bool:
    """Wait until every consumer is bound; False if one of them ended first."""
    waits = [asyncio.create_task(consumer.started.wait()) for consumer in consumers]
    try:
        while not all(consumer.started.is_set() for consumer in consumers):
            await asyncio.wait([*waits, *runs], return_when="FIRST_COMPLETED")
            if any(run.done() for run in runs):
                return False
        return True
    finally:
        for wait in waits:
            wait.cancel()

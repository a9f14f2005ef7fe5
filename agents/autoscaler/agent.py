"""The autoscaler: every few seconds it reads each pool's task consumers (pending and
ack-pending, both lanes, and how long the oldest waiting task has waited), decides
(agents/autoscaler/policy.py) and asks the pools' supervisor to run more or fewer workers
(`omoi.supervisors.<host>.scale`). Each change is an `autoscaler.scaled` event.

It reads counts, never tasks: a look costs one consumer listing and one message read per
pool with a backlog, however many tasks there are. The same consumers are what KEDA's
NATS JetStream scaler reads on Kubernetes (deploy/k8s/), where it takes this role's place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from agents.autoscaler.policy import Backlog, Pool, PoolMemory, ScaleRules, decide, parse_pools
from agents.base import Agent
from agents.settings import Settings
from agents.supervisor_control import this_host
from bus import Bus, BusError, streams
from bus import constants as c
from schemas import AGENTS_TOKEN, Event, EventType, utcnow
from schemas.supervisor import ScaleReply, ScaleRequest

SCALE_TIMEOUT_S = 30.0


def scale_rules(settings: Settings) -> ScaleRules:
    return ScaleRules(
        tasks_per_worker=settings.autoscaler_tasks_per_worker,
        cooldown_s=settings.autoscaler_cooldown_s,
        down_after_s=settings.autoscaler_down_after_s,
        urgent_wait_s=settings.autoscaler_urgent_wait_s,
    )


class Autoscaler(Agent):
    role = "autoscaler"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        agent_id: str | None = None,
        *,
        pools: Sequence[Pool] | None = None,
        rules: ScaleRules | None = None,
        host: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        self.pools = list(pools if pools is not None else parse_pools(settings.autoscaler_pools))
        self.rules = rules or scale_rules(settings)
        self.host = host or settings.autoscaler_host or this_host()
        self.clock = clock
        self.memory = {p.name: PoolMemory() for p in self.pools}
        self._changes = 0

    async def main(self) -> None:
        self.ready.set()
        while not self.stopping.is_set():
            try:
                await self.look()
            except BusError as exc:
                self.log.warning("no look at the backlog this time: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.autoscaler_interval_s)

    async def look(self) -> None:
        backlogs = {
            b.consumer: b for b in await streams.consumer_backlogs(self.bus, [c.TASKS_STREAM])
        }
        for pool in self.pools:
            found = [
                backlogs[name]
                for lane in c.LANES
                if (name := c.task_consumer(pool.phase, pool.capability, lane)) in backlogs
            ]
            backlog = Backlog(
                pending=sum(b.pending for b in found),
                ack_pending=sum(b.ack_pending for b in found),
                oldest_s=await self._oldest_s(found),
            )
            current = await self._scale(pool, None, "")
            if current is None:
                continue
            now = self.clock()
            memory = self.memory[pool.name]
            scaling = decide(pool, backlog, current.replicas, memory, self.rules, now)
            if scaling is None:
                continue
            done = await self._scale(pool, scaling.replicas, scaling.reason)
            if done is None:
                continue
            memory.changed_at, memory.low_since = now, None
            await self._tell(pool, current.replicas, done.replicas, backlog, scaling.reason)

    async def _oldest_s(self, found: list[streams.ConsumerBacklog]) -> float | None:
        ages = []
        for backlog in found:
            waiting = await streams.oldest_waiting(self.bus, backlog)
            if waiting is not None:
                ages.append((utcnow() - waiting.at).total_seconds())
        return max(ages) if ages else None

    async def _scale(self, pool: Pool, replicas: int | None, reason: str) -> ScaleReply | None:
        asked = ScaleRequest(pool=pool.name, replicas=replicas, reason=reason)
        subject = c.supervisor_subject(self.host, c.SCALE_VERB)
        try:
            raw = await self.bus.request(subject, asked.to_json(), SCALE_TIMEOUT_S)
            reply = ScaleReply.model_validate_json(raw)
        except (BusError, ValidationError) as exc:
            self.log.warning("the supervisor of %s did not answer for %s: %s", self.host,
                             pool.name, exc)  # fmt: skip
            return None
        if not reply.ok:
            self.log.warning("the supervisor of %s refused %s: %s", self.host, pool.name,
                             reply.error)  # fmt: skip
            return None
        return reply

    async def _tell(self, pool: Pool, was: int, now: int, backlog: Backlog, reason: str) -> None:
        self._changes += 1
        self.log.info("%s: %d -> %d workers (%s)", pool.name, was, now, reason)
        await self.bus.publish_event(
            Event(
                id=f"{self.id}.scaled.{self._changes}",
                type=EventType.AUTOSCALER_SCALED,
                ticket_id=AGENTS_TOKEN,
                agent=self.id,
                data={
                    "pool": pool.name, "phase": pool.phase, "capability": pool.capability,
                    "host": self.host, "from": was, "to": now, "min": pool.min, "max": pool.max,
                    "pending": backlog.pending, "ack_pending": backlog.ack_pending,
                    "oldest_s": backlog.oldest_s, "reason": reason,
                },
            )
        )  # fmt: skip

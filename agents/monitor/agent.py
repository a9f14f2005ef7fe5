"""The monitor: watches heartbeats and reports agents that went silent (and came back),
and audits the connections the servers refused (heard in their system account)."""

from __future__ import annotations

from datetime import datetime

from agents.base import Agent
from agents.settings import Settings
from bus import Bus
from bus.audit import AuditTrail
from bus.server_events import ServerEvents
from schemas import AGENTS_TOKEN, Event, EventType, Heartbeat, utcnow

MISSED_BEATS = 3


class Monitor(Agent):
    role = "monitor"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        agent_id: str | None = None,
        server_events: ServerEvents | None = None,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        self.stale: dict[str, Heartbeat] = {}
        # None: no system identity here, so refused connections go unaudited (said once).
        self.server_events = server_events
        self.trail = AuditTrail(bus)

    async def main(self) -> None:
        if self.server_events is not None:
            # A client retrying bad credentials is one entry a second.
            await self.server_events.on_refused(lambda entry: self.trail.record(entry, fold=True))
        else:
            self.log.warning(
                "refused NATS connections are not audited: no `system` identity "
                "(OMOI_NATS_SYSTEM_CREDENTIALS, or system.nk in the auth dir)"
            )
        self.ready.set()
        try:
            while not await self.wait_stopping(self.settings.heartbeat_interval_s):
                try:
                    await self.check()
                except Exception:
                    self.log.warning("heartbeat check failed", exc_info=True)
        finally:
            await self.trail.flush()

    async def check(self) -> None:
        now = utcnow()
        for beat in await self.bus.heartbeats.values():
            if beat.is_stale(now, MISSED_BEATS):
                if beat.agent_id not in self.stale:
                    self.stale[beat.agent_id] = beat
                    self.log.warning(
                        "agent %s is stale (last beat %.1fs ago)", beat.agent_id, beat.age_s(now)
                    )
                    await self._report(beat, EventType.AGENT_STALE, now)
            elif self.stale.pop(beat.agent_id, None) is not None:
                await self._report(beat, EventType.AGENT_RECOVERED, now)

    async def _report(self, beat: Heartbeat, kind: EventType, now: datetime) -> None:
        await self.bus.publish_event(
            Event(
                # One event per silence: keyed by the last beat it was silent after.
                id=f"{beat.agent_id}.{kind.value}.{beat.at.timestamp()}",
                type=kind,
                ticket_id=AGENTS_TOKEN,
                agent=beat.agent_id,
                data={
                    "role": beat.role,
                    "last_beat": beat.at.isoformat(),
                    "current_task": beat.current_task,
                    "reported_by": self.id,
                },
            )
        )

"""The monitor: watches heartbeats and reports agents that went silent (and came back),
audits the connections the servers refused (heard in their system account), and reports
anomalies: workers that are slow, failing or costly against their phase's baseline in the
store, backlogs that keep growing, heartbeats that come late (agents/monitor/detection.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Mapping
from datetime import datetime

from agents.base import Agent
from agents.monitor.alert_rules import AlertRules
from agents.monitor.alerting import AlertBook, Signals, conditions
from agents.monitor.detection import DetectionRules, PhaseBaseline, WorkerWindow
from agents.monitor.notify import Notifier
from agents.monitor.runaway import RunningAttempt
from agents.monitor.starved import WaitingTask, waiting_task
from agents.monitor.watch import AnomalyWatch
from agents.monitor.watchdog import CrashLoop, Restart, Restarted, Watchdog
from agents.monitor.workload import StoreReader, Totals, read_totals, read_workload
from agents.settings import Settings
from bus import Bus, streams
from bus import constants as c
from bus.audit import AuditTrail
from bus.errors import BusError, NoAnswer
from bus.server_events import ServerEvents
from schemas import AGENTS_TOKEN, Event, EventType, Heartbeat, utcnow
from schemas.alert import AlertNotice, AlertStatus, Delivery
from schemas.anomaly import Anomaly
from schemas.supervisor import RestartReply, RestartRequest, SupervisorStatus
from store.errors import StoreError

MISSED_BEATS = 3


def detection_rules(settings: Settings) -> DetectionRules:
    return DetectionRules(
        recent_window_s=settings.anomaly_window_s,
        baseline_window_s=settings.anomaly_baseline_s,
        min_samples=settings.anomaly_min_samples,
        starved_s=settings.anomaly_starved_s,
    )


class Monitor(Agent):
    role = "monitor"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        agent_id: str | None = None,
        server_events: ServerEvents | None = None,
        store: StoreReader | None = None,
        rules: DetectionRules | None = None,
        alerts: AlertRules | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        self.stale: dict[str, Heartbeat] = {}
        # None: no system identity here, so refused connections go unaudited (said once).
        self.server_events = server_events
        self.trail = AuditTrail(bus)
        # None: no store on this machine, so only backlogs and heartbeats are judged.
        self.store = store
        self.watch = AnomalyWatch(rules or detection_rules(settings))
        self._store_missing = False
        # None: no alert rules. The notifier (None: notices are events only) sends them.
        self.alerts = alerts
        self.notifier = notifier
        self.book = AlertBook()
        self._beats: dict[str, Heartbeat] = {}
        self.watchdog = Watchdog()

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
        beat_every, judge_every = (
            self.settings.heartbeat_interval_s,
            self.settings.anomaly_interval_s,
        )
        next_beat = next_judge = time.monotonic()
        try:
            while not await self.wait_stopping(
                max(0.0, min(next_beat, next_judge) - time.monotonic())
            ):
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + beat_every
                    await self._guarded(self.check(), "heartbeat check")
                if now >= next_judge:
                    next_judge = now + judge_every
                    await self._guarded(self.judge(), "anomaly check")
        finally:
            await self.trail.flush()
            if self.notifier is not None:
                await self.notifier.close(self.settings.shutdown_grace_s)

    async def _guarded(self, step: Awaitable[None], what: str) -> None:
        try:
            await step
        except Exception:
            self.log.warning("%s failed", what, exc_info=True)

    async def check(self) -> None:
        now = utcnow()
        beats = await self.bus.heartbeats.values()
        self.watch.observe_beats(beats)
        self._beats = {b.agent_id: b for b in beats}
        for beat in beats:
            if beat.is_stale(now, MISSED_BEATS):
                if beat.agent_id not in self.stale:
                    self.stale[beat.agent_id] = beat
                    self.log.warning(
                        "agent %s is stale (last beat %.1fs ago)", beat.agent_id, beat.age_s(now)
                    )
                    await self._report(beat, EventType.AGENT_STALE, now)
            elif self.stale.pop(beat.agent_id, None) is not None:
                await self._report(beat, EventType.AGENT_RECOVERED, now)
        await self._watch_supervisors(beats, now)

    async def _watch_supervisors(self, beats: list[Heartbeat], now: datetime) -> None:
        """The watchdog's round: every host an agent beats from, asked for its
        supervisor's children (a host without one does not answer, at no cost)."""
        statuses = []
        for host in sorted({c.host_token(b.host) for b in beats if b.host}):
            try:
                raw = await self.bus.request(c.supervisor_subject(host, "status"), b"", 2.0)
                statuses.append(SupervisorStatus.model_validate_json(raw))
            except NoAnswer:
                continue
            except (BusError, ValueError) as exc:
                self.log.warning("supervisor of %s did not say its status: %s", host, exc)
        for action in self.watchdog.decide(statuses, {b.agent_id: b for b in beats}, now):
            if isinstance(action, Restart):
                await self._restart(action)
            elif isinstance(action, CrashLoop):
                self.log.warning(
                    "%s on %s is crash looping (%d restarts in %.0fs)",
                    action.child, action.host, action.restarts, action.window_s,
                )  # fmt: skip
                await self._agent_event(
                    EventType.AGENT_CRASH_LOOPING,
                    f"{action.host}.{action.child}.crash_looping.{int(now.timestamp())}",
                    action.agent_id,
                    {"host": action.host, "child": action.child, "role": action.role,
                     "restarts": action.restarts, "window_s": action.window_s,
                     "last_exit": action.last_exit},
                )  # fmt: skip
            elif isinstance(action, Restarted):
                await self._agent_event(
                    EventType.AGENT_RESTARTED,
                    f"{action.host}.{action.child}.restarted.{action.total}",
                    None,
                    {"host": action.host, "child": action.child, "restarts": action.total,
                     "restarts_seen": self.watchdog.restarts_total},
                )  # fmt: skip

    async def _restart(self, action: Restart) -> None:
        asked = RestartRequest(agent_id=action.agent_id, reason=action.reason)
        subject = c.supervisor_subject(action.host, "restart")
        try:
            reply = RestartReply.model_validate_json(
                await self.bus.request(subject, asked.to_json(), 5.0)
            )
        except (BusError, ValueError) as exc:
            reply = RestartReply(ok=False, error=str(exc))
        self.log.warning("asked %s to restart %s (%s): %s", action.host, action.agent_id,
                         action.reason, "done" if reply.ok else reply.error)  # fmt: skip
        await self._agent_event(
            EventType.AGENT_RESTART_REQUESTED,
            f"{action.agent_id}.restart_requested",
            action.agent_id,
            {"host": action.host, "child": action.child, "reason": action.reason,
             "ok": reply.ok, "error": reply.error, "restarts": reply.restarts},
        )  # fmt: skip

    async def _agent_event(
        self, kind: EventType, event_id: str, agent: str | None, data: Mapping[str, object]
    ) -> None:
        await self.bus.publish_event(
            Event(
                id=event_id,
                type=kind,
                ticket_id=AGENTS_TOKEN,
                agent=agent,
                data={**data, "reported_by": self.id},
            )
        )

    async def judge(self) -> None:
        """One anomaly check: sample the backlogs, read the workload, announce changes."""
        now = utcnow()
        backlogs = await streams.consumer_backlogs(self.bus, c.MESSAGE_STREAMS)
        self.watch.observe_backlogs(backlogs, now)
        baselines, windows, totals = await self._workload(now)
        running = await self._running() if baselines else []
        waiting = await self._waiting(backlogs)
        changed = self.watch.judge(now, baselines, windows, running, waiting)
        for anomaly in changed.raised:
            self.log.warning("anomaly: %s", anomaly.summary)
            await self._announce(anomaly, EventType.ANOMALY_DETECTED, now)
            self.watch.activate(anomaly, now)
        for anomaly in changed.resolved:
            self.log.info("anomaly resolved: %s", anomaly.summary)
            await self._announce(anomaly, EventType.ANOMALY_RESOLVED, now)
            self.watch.resolve(anomaly.key)
        if self.alerts is not None:
            await self._alert(self.alerts, totals, now)

    async def _alert(self, rules: AlertRules, totals: Totals | None, now: datetime) -> None:
        """Evaluate the alert rules; tell each notice as an event, then to its routes."""
        latest = {name: depths[-1][1] for name, depths in self.watch.depths.items() if depths}
        signals = Signals(
            anomalies=[a.anomaly for a in self.watch.active.values()],
            queue_depth=latest,
            heartbeat_age_s={a: b.age_s(now) for a, b in self._beats.items()},
            stale_agents=len(self.stale),
            failed_attempts=totals.failed_attempts if totals else None,
            dead_letters=totals.dead_letters if totals else None,
            cost_usd=totals.cost_usd if totals else None,
        )
        for notice in self.book.update(conditions(rules, signals), now):
            level = logging.WARNING if notice.status is AlertStatus.FIRING else logging.INFO
            summaries = "; ".join(a.summary for a in notice.alerts)
            self.log.log(level, "alert %s %s: %s", notice.rule, notice.status.value, summaries)
            await self._publish_notice(notice)
            if self.notifier is not None:
                self.notifier.send(notice, self.record_delivery)

    async def _publish_notice(self, notice: AlertNotice) -> None:
        firing = notice.status is AlertStatus.FIRING
        kind = EventType.ALERT_FIRING if firing else EventType.ALERT_RESOLVED
        await self._agent_event(kind, notice.id, None, notice.model_dump(mode="json"))

    async def record_delivery(self, delivery: Delivery) -> None:
        """One attempt to tell a webhook or a mailbox, as an `alert.delivery` event."""
        target = hashlib.sha256(delivery.target.encode()).hexdigest()[:12]
        event_id = f"{delivery.notice}.{delivery.channel}.{target}.{delivery.attempt}"
        data = delivery.model_dump(mode="json")
        await self._agent_event(EventType.ALERT_DELIVERY, event_id, None, data)

    async def _waiting(self, backlogs: list[streams.ConsumerBacklog]) -> list[WaitingTask]:
        """The oldest task each task consumer holds and has not delivered yet (whether it
        waited too long for its lane is `starved`'s to judge)."""
        out = []
        for b in backlogs:
            if b.stream != c.TASKS_STREAM:
                continue
            found = await streams.oldest_waiting(self.bus, b)
            if found is not None and (w := waiting_task(b.consumer, found.subject, found.at)):
                out.append(w)
        return out

    async def _running(self) -> list[RunningAttempt]:
        """The attempts workers say they run (their beats' `current_task`), as their task
        states tell when each started."""
        out = []
        for beat in self._beats.values():
            if beat.role != "worker" or not beat.current_task:
                continue
            task = await self.bus.tasks.value(beat.current_task)
            if task is None or task.status != "running" or task.started_at is None:
                continue
            out.append(RunningAttempt(task.id, task.attempts, task.phase.value,
                                      task.capability, task.worker, task.started_at))  # fmt: skip
        return out

    async def _workload(
        self, now: datetime
    ) -> tuple[list[PhaseBaseline], list[WorkerWindow], Totals | None]:
        if self.store is None:
            return [], [], None
        store, rules = self.store, self.watch.rules

        def read() -> tuple[list[PhaseBaseline], list[WorkerWindow], Totals]:
            baselines, windows = read_workload(store, now, rules)
            return baselines, windows, read_totals(store, now, rules.recent_window_s)

        try:
            found = await asyncio.to_thread(read)
        except StoreError as exc:
            if not self._store_missing:
                self.log.info("no workload baselines yet (the store: %s)", exc)
            self._store_missing = True
            return [], [], None
        self._store_missing = False
        return found

    async def _announce(self, anomaly: Anomaly, kind: EventType, now: datetime) -> None:
        since = self.watch.since(anomaly.key) or now
        # One detection and one resolution per stretch the anomaly lasts.
        event_id = f"{anomaly.key}.{kind.value}.{since.timestamp()}"
        data = {**anomaly.model_dump(mode="json"), "since": since.isoformat()}
        await self._agent_event(kind, event_id, anomaly.agent, data)

    async def _report(self, beat: Heartbeat, kind: EventType, now: datetime) -> None:
        # One event per silence: keyed by the last beat it was silent after.
        event_id = f"{beat.agent_id}.{kind.value}.{beat.at.timestamp()}"
        data = {"role": beat.role, "last_beat": beat.at.isoformat(),
                "current_task": beat.current_task}  # fmt: skip
        await self._agent_event(kind, event_id, beat.agent_id, data)

"""What the monitor remembers between checks to judge what it cannot read from the store:
each agent's heartbeat gaps, and each consumer's backlog over time. And which findings
are active, so each is announced once and resolved once.

It only keeps samples; deciding is `detection`'s, announcing is the monitor's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agents.monitor import detection
from agents.monitor.detection import Changes, DetectionRules, PhaseBaseline, WorkerWindow
from agents.monitor.runaway import RunningAttempt, runaway_anomalies, runaway_judged
from agents.monitor.starved import WaitingTask, starved_anomalies, starved_key
from bus.streams import ConsumerBacklog
from schemas import Heartbeat
from schemas.anomaly import Anomaly

# How many samples the baselines of gaps and backlog changes keep (per agent, per consumer).
HISTORY = 200


@dataclass
class Active:
    anomaly: Anomaly
    since: datetime
    seen: datetime  # when it was last found


@dataclass
class AnomalyWatch:
    rules: DetectionRules
    last_beat: dict[str, datetime] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    gaps: dict[str, deque[float]] = field(default_factory=dict)
    depths: dict[str, deque[tuple[datetime, int]]] = field(default_factory=dict)
    deltas: dict[str, deque[int]] = field(default_factory=dict)
    active: dict[str, Active] = field(default_factory=dict)

    def observe_beats(self, beats: Iterable[Heartbeat]) -> None:
        """A gap for each agent that beat since the last look; agents gone are forgotten."""
        seen = set()
        for beat in beats:
            seen.add(beat.agent_id)
            self.roles[beat.agent_id] = beat.role
            last = self.last_beat.get(beat.agent_id)
            if last is not None and beat.at > last:
                gaps = self.gaps.setdefault(beat.agent_id, deque(maxlen=HISTORY))
                gaps.append((beat.at - last).total_seconds())
            if last is None or beat.at > last:
                self.last_beat[beat.agent_id] = beat.at
        for gone in set(self.last_beat) - seen:
            for table in (self.last_beat, self.roles, self.gaps):
                table.pop(gone, None)

    def observe_backlogs(self, backlogs: Iterable[ConsumerBacklog], now: datetime) -> None:
        for b in backlogs:
            name = f"{b.stream}/{b.consumer}"
            depths = self.depths.setdefault(name, deque(maxlen=self.rules.queue_samples + 1))
            if depths:
                self.deltas.setdefault(name, deque(maxlen=HISTORY)).append(
                    b.pending - depths[-1][1]
                )
            depths.append((now, b.pending))

    def judge(
        self,
        now: datetime,
        baselines: Sequence[PhaseBaseline] = (),
        windows: Sequence[WorkerWindow] = (),
        running: Sequence[RunningAttempt] = (),
        waiting: Sequence[WaitingTask] = (),
    ) -> Changes:
        """What changed: findings not active yet, and active ones that ended. The
        monitor marks each `activate`d or `resolve`d once it has announced it, so one it
        failed to announce is announced at the next check."""
        rules = self.rules
        found = [
            *detection.workload_anomalies(baselines, windows, rules),
            *detection.queue_anomalies(self.depths, self._past_deltas(), rules),
            *detection.heartbeat_anomalies(self.gaps, self.roles, rules),
            *runaway_anomalies(running, baselines, now, rules),
            *starved_anomalies(waiting, now, rules),
        ]
        judged = (
            detection.workload_judged(baselines, windows, rules)
            | detection.queue_judged(self.depths, rules)
            | detection.heartbeat_judged(self.gaps, rules)
            | runaway_judged(running)
            # A task that was taken is not seen again, and ends a window later.
            | {starved_key(w.task_id) for w in waiting}
        )
        for anomaly in found:
            if anomaly.key in self.active:
                self.active[anomaly.key].anomaly = anomaly
                self.active[anomaly.key].seen = now

        def unseen(key: str) -> bool:
            return (now - self.active[key].seen).total_seconds() >= rules.recent_window_s

        active = {k: a.anomaly for k, a in self.active.items()}
        return detection.changes(active, found, judged, unseen)

    def activate(self, anomaly: Anomaly, now: datetime) -> None:
        self.active[anomaly.key] = Active(anomaly, now, now)

    def since(self, key: str) -> datetime | None:
        entry = self.active.get(key)
        return entry.since if entry else None

    def resolve(self, key: str) -> None:
        self.active.pop(key, None)

    def _past_deltas(self) -> dict[str, list[int]]:
        """Each consumer's usual change, the window being judged left out (so a steady
        climb is compared with what came before it, not with itself)."""
        recent = self.rules.queue_samples
        return {k: list(v)[:-recent] for k, v in self.deltas.items()}

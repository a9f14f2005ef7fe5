"""The watchdog: agents on every host that run under a supervisor (`omoi up`), judged
from their supervisor's status and their heartbeats. Pure decisions; the monitor asks
the supervisors and acts.

- A child that runs but whose agent's heartbeat went stale is wedged (a blocked loop,
  a hung call): its supervisor is asked to restart it.
- A child that died is restarted by its own supervisor; the watchdog counts it.
- A child restarted `crash_loop_restarts` times within `crash_loop_window_s` is crash
  looping, which restarting will not fix: that goes to the guardian (an event).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas import Heartbeat
from schemas.supervisor import SupervisorStatus


@dataclass(frozen=True)
class WatchdogRules:
    missed_beats: int = 3
    crash_loop_restarts: int = 3
    crash_loop_window_s: float = 300.0
    # After asking for a restart of an agent id, how long before asking again.
    restart_grace_s: float = 30.0


@dataclass(frozen=True)
class Restart:
    host: str
    child: str
    agent_id: str
    reason: str


@dataclass(frozen=True)
class CrashLoop:
    host: str
    child: str
    agent_id: str | None
    restarts: int
    window_s: float
    last_exit: int | None
    role: str | None = None


@dataclass(frozen=True)
class Restarted:
    """Restarts a supervisor made since the last look (crashes and requests alike)."""

    host: str
    child: str
    count: int
    total: int


Action = Restart | CrashLoop | Restarted


@dataclass
class Watchdog:
    rules: WatchdogRules = field(default_factory=WatchdogRules)
    asked: dict[str, datetime] = field(default_factory=dict)  # agent id -> when
    looping: set[tuple[str, str]] = field(default_factory=set)
    seen_restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    restarts_total: int = 0

    def decide(
        self,
        statuses: Iterable[SupervisorStatus],
        beats: Mapping[str, Heartbeat],
        now: datetime,
    ) -> list[Action]:
        actions: list[Action] = []
        window = timedelta(seconds=self.rules.crash_loop_window_s)
        for status in statuses:
            for child in status.children:
                where = (status.host, child.name)
                before = self.seen_restarts.get(where)
                self.seen_restarts[where] = child.restarts
                if before is not None and child.restarts > before:
                    self.restarts_total += child.restarts - before
                    actions.append(Restarted(status.host, child.name, child.restarts - before,
                                             child.restarts))  # fmt: skip
                recent = [t for t in child.restarted_at if now - t <= window]
                if len(recent) >= self.rules.crash_loop_restarts:
                    if where not in self.looping:
                        self.looping.add(where)
                        actions.append(CrashLoop(status.host, child.name, child.agent_id,
                                                 len(recent), self.rules.crash_loop_window_s,
                                                 child.last_exit, child.role))  # fmt: skip
                    continue  # restarting a crash loop again helps nobody
                self.looping.discard(where)
                beat = beats.get(child.agent_id or "")
                if not child.running or child.agent_id is None or beat is None:
                    continue
                if not beat.is_stale(now, self.rules.missed_beats):
                    continue
                asked = self.asked.get(child.agent_id)
                if asked is not None and now - asked < timedelta(
                    seconds=self.rules.restart_grace_s
                ):
                    continue
                self.asked[child.agent_id] = now
                actions.append(Restart(status.host, child.name, child.agent_id,
                                       f"wedged: no heartbeat for {beat.age_s(now):.0f}s while "
                                       f"its process {child.pid} runs"))  # fmt: skip
        # Forget what was asked long ago (those ids are gone after their restart).
        old = now - timedelta(seconds=10 * self.rules.restart_grace_s)
        self.asked = {a: t for a, t in self.asked.items() if t > old}
        return actions

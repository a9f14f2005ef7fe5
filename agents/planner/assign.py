"""Best-fit assignment: which worker a queued task is meant for, and why.

Tasks still travel through the shared pull consumer of their (phase, capability), so a
worker that dies strands nothing. The planner names the best worker in the task
(`assigned`); other workers leave it to that one for `ASSIGN_GRACE_S`, after which anyone
that can take it does. A worker never takes a task whose `requires` labels it lacks.

The score of each candidate (a live worker serving the task's phase and capability, with
every label the task requires), highest wins, ties to the lower agent id:

    score = 2.0 * success + 1.0 * speed - 1.0 * load - 0.5 * cost

- `success`: the worker's success rate per attempt on this (phase, capability), smoothed
  with two successes it is credited up front, (succeeded + 2) / (attempts + 2): 1 with no
  history, so a worker nobody has tried yet gets tried (a worker that fails half its
  attempts scores 0.5 and falls behind it);
- `speed`: the median run time of all candidates over this worker's, capped at 2 (1 when
  either is unknown); run times under a second count as a second, so quick tasks are
  told apart by nothing but noise;
- `load`: tasks assigned to it and not finished, over its slots;
- `cost`: its mean cost per task over the candidates' mean (0 when unknown).

A worker is named only when it stands out: when some candidate's score without `load`
(its quality) trails the best by `MARGIN` or more. Then the least loaded of those within
`MARGIN` of the best is named. When all are about as good, none is: pull delivery already
gives the task to whichever is free first, with no deferral.

The history comes from the outcome events the planner reads anyway (`task.succeeded`,
`task.retrying`, `task.failed`), a rolling window per worker and kind of task; it is the
same data the store records. Each choice with more than one candidate, or with
requirements, is a `task.assigned` event carrying every candidate's breakdown.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas import Event, EventType, Heartbeat, TaskState, utcnow

WINDOW = 50
REFRESH_S = 1.0
WEIGHTS = {"success": 2.0, "speed": 1.0, "load": -1.0, "cost": -0.5}
MARGIN = 0.25
FLOOR_S = 1.0


@dataclass
class History:
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    costs: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    @property
    def success(self) -> float:
        return (sum(self.outcomes) + 2) / (len(self.outcomes) + 2)

    @property
    def median_s(self) -> float | None:
        return max(statistics.median(self.durations), FLOOR_S) if self.durations else None

    @property
    def mean_cost(self) -> float | None:
        return statistics.fmean(self.costs) if self.costs else None


@dataclass(frozen=True)
class Candidate:
    agent_id: str
    score: float
    parts: dict[str, float]

    @property
    def quality(self) -> float:
        return self.score - WEIGHTS["load"] * self.parts["load"]


def pick(ranked: list[Candidate]) -> Candidate | None:
    """The candidate to name, if one stands out (see the module's docstring)."""
    if not ranked:
        return None
    best = max(c.quality for c in ranked)
    close = [c for c in ranked if best - c.quality < MARGIN]
    if len(close) == len(ranked) and len(ranked) > 1:
        return None
    return min(close, key=lambda c: (c.parts["load"], -c.score, c.agent_id))


def can_take(beat: Heartbeat, task: TaskState) -> bool:
    return (
        task.phase.value in beat.phases
        and task.capability in beat.capabilities
        and set(task.requires) <= set(beat.labels)
    )


def rank(
    task: TaskState,
    beats: Iterable[Heartbeat],
    history: dict[tuple[str, str, str], History],
    in_flight: dict[str, int],
) -> list[Candidate]:
    """Every worker that can take `task`, best first."""
    able = [b for b in beats if can_take(b, task)]
    kind = (task.phase.value, task.capability)
    own = {b.agent_id: history.get((b.agent_id, *kind), History()) for b in able}
    medians = [m for h in own.values() if (m := h.median_s) is not None]
    costs = [c for h in own.values() if (c := h.mean_cost) is not None]
    overall_s = statistics.median(medians) if medians else None
    overall_cost = statistics.fmean(costs) if costs else None
    out = []
    for beat in able:
        h = own[beat.agent_id]
        median = h.median_s
        speed = min(overall_s / median, 2.0) if overall_s and median else 1.0
        cost = (h.mean_cost or 0.0) / overall_cost if overall_cost else 0.0
        parts = {
            "match": 1.0,
            "success": round(h.success, 4),
            "speed": round(speed, 4),
            "load": round(in_flight.get(beat.agent_id, 0) / max(beat.slots, 1), 4),
            "cost": round(cost, 4),
        }
        score = sum(WEIGHTS[k] * parts[k] for k in WEIGHTS)
        out.append(Candidate(beat.agent_id, round(score, 4), parts))
    return sorted(out, key=lambda c: (-c.score, c.agent_id))


class Assigner:
    """The planner's view of the workers: who is alive (heartbeats, re-read at most once a
    second), how each did lately, and what it has been given."""

    def __init__(self) -> None:
        self.beats: list[Heartbeat] = []
        self.read_at = 0.0
        self.history: dict[tuple[str, str, str], History] = {}
        self.in_flight: dict[str, int] = {}
        self._holders: dict[str, str] = {}  # task id -> the worker it was given to

    def stale(self) -> bool:
        return time.monotonic() - self.read_at > REFRESH_S

    def refresh(self, beats: Iterable[Heartbeat]) -> None:
        now = utcnow()
        self.beats = [
            b for b in beats if b.role == "worker" and not b.is_stale(now) and not b.quarantined
        ]
        self.read_at = time.monotonic()

    def choose(self, task: TaskState) -> tuple[list[Candidate], Candidate | None] | None:
        """The ranking for `task` and the worker to name; None when there is nothing to
        name or explain (one candidate, or all about as good, and no requirements)."""
        ranked = rank(task, self.beats, self.history, self.in_flight)
        chosen = pick(ranked)
        if chosen is None and not task.requires:
            return None
        if len(ranked) == 1 and not task.requires:
            return None
        return ranked, chosen

    def given(self, task_id: str, agent_id: str) -> None:
        self._release(task_id)
        self._holders[task_id] = agent_id
        self.in_flight[agent_id] = self.in_flight.get(agent_id, 0) + 1

    def _release(self, task_id: str) -> None:
        holder = self._holders.pop(task_id, None)
        if holder is not None:
            self.in_flight[holder] = max(self.in_flight.get(holder, 1) - 1, 0)

    def observe(self, event: Event) -> None:
        """Learn from an outcome: who ran what kind of task, how it went, how long."""
        if event.type not in OUTCOMES or not event.agent or event.task is None:
            return
        kind = (event.agent, str(event.data.get("phase")), str(event.data.get("capability")))
        h = self.history.setdefault(kind, History())
        ok = event.type is EventType.TASK_SUCCEEDED
        h.outcomes.append(ok)
        if ok and isinstance(duration := event.data.get("duration_s"), int | float):
            h.durations.append(float(duration))
        usage = event.data.get("usage")
        if isinstance(usage, dict) and isinstance(cost := usage.get("cost_usd"), int | float):
            h.costs.append(float(cost))
        if event.type is not EventType.TASK_RETRYING:
            self._release(f"{event.ticket_id}.{event.task}")


OUTCOMES = frozenset({EventType.TASK_SUCCEEDED, EventType.TASK_FAILED, EventType.TASK_RETRYING})

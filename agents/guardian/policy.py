"""What the guardian does about a finding: pure functions from what it knows to decisions.

Its authority (docs/architecture.md, "Guardian"):
- on its own, reversible and contained, or a word only: quarantine a worker whose
  attempts fail far more often than its phase's (`anomaly.detected`, failure_rate);
  have the supervisor of a crash-looping worker hold it (`agent.crash_looping`); pause
  a ticket whose task is poison and cancel that task; tell a coding agent that keeps
  running the same command to step back (`task.progress`: rules decide it is stuck, a
  model may word the advice); raise the priority of a ticket whose task starved in the
  normal lane to `high` (`anomaly.detected`, starved); approve a discovery the planner
  held for its estimate when that is within its own limit (`discovery.held`);
- proposed, for an operator to approve: quarantining a worker that is only slow or costly
  (it still finishes its work), holding an agent that is no worker (a planner, say) or
  whose role it cannot tell, and anything that would leave one of the worker's phase and
  capability pairs with nobody to take it; a held discovery that opens a phase, or whose
  estimate is over its limit.
Which kinds it may apply alone is a setting (`OMOI_GUARDIAN_AUTONOMOUS`); the rest it
proposes too.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas import Heartbeat, TaskState
from schemas.anomaly import Anomaly, AnomalyKind
from schemas.common import PRIORITIES
from schemas.discovery import DiscoveryState
from schemas.guardian import REVERSIBLE, Intervention, InterventionKind, InterventionStatus

# Findings that say a worker is broken, and those that say it is merely worse.
BROKEN = frozenset({AnomalyKind.FAILURE_RATE})
WORSE = frozenset({AnomalyKind.RUN_TIME, AnomalyKind.COST})


@dataclass(frozen=True)
class GuardianRules:
    # A task that failed on this many different workers is poison, not unlucky.
    poison_workers: int = 3
    # A running agent whose last this many progress reports ran the same command and
    # changed no file is stuck.
    stuck_steps: int = 4
    # The kinds it applies on its own authority; any other it proposes.
    autonomous: frozenset[InterventionKind] = frozenset(InterventionKind)
    # A held discovery estimated at most this it approves alone.
    discovery_usd: float = 5.0


@dataclass(frozen=True)
class Decision:
    intervention: Intervention
    # Whether the guardian applies it now (its own authority), or only proposes it.
    apply: bool


def intervention_id(kind: InterventionKind, target: str, trigger: str) -> str:
    """Deterministic: the same finding about the same target is one intervention."""
    digest = hashlib.sha256(trigger.encode()).hexdigest()[:12]
    return f"{kind.value}.{target}.{digest}"


@dataclass(frozen=True)
class Fleet:
    """The workers as their heartbeats tell them, at one moment."""

    beats: Mapping[str, Heartbeat]
    now: datetime

    def role(self, agent_id: str) -> str | None:
        beat = self.beats.get(agent_id)
        return beat.role if beat is not None else None

    def quarantined(self, agent_id: str) -> bool:
        beat = self.beats.get(agent_id)
        return beat is not None and beat.quarantined is not None

    def others_cover(self, agent_id: str) -> bool:
        """Whether every phase and capability pair the worker takes has another live,
        ready worker that is not quarantined."""
        beat = self.beats.get(agent_id)
        if beat is None:
            return False
        others = [
            b
            for b in self.beats.values()
            if b.agent_id != agent_id
            and b.role == "worker"
            and b.ready
            and b.quarantined is None
            and not b.is_stale(self.now)
        ]
        return all(
            any(phase in b.phases and cap in b.capabilities for b in others)
            for phase in beat.phases
            for cap in beat.capabilities
        )


def _intervention(
    kind: InterventionKind,
    target: str,
    trigger: str,
    reason: str,
    evidence: Iterable[str],
    decided_by: str,
    autonomous: bool,
) -> Intervention:
    return Intervention(
        id=intervention_id(kind, target, trigger),
        kind=kind,
        target=target,
        status=InterventionStatus.PROPOSED,
        reason=reason,
        trigger=trigger,
        evidence=list(evidence),
        reversible=kind in REVERSIBLE,
        autonomous=autonomous,
        decided_by=decided_by,
    )


def _take_work_away(
    kind: InterventionKind,
    target: str,
    agent_id: str,
    role: str | None,
    trigger: str,
    reason: str,
    evidence: Iterable[str],
    *,
    broken: bool,
    fleet: Fleet,
    rules: GuardianRules,
    decided_by: str,
) -> list[Decision]:
    """Quarantine a worker or hold an agent: on its own authority only for a broken worker
    whose work others can take."""
    worker = role == "worker"
    alone = broken and kind in rules.autonomous and worker and fleet.others_cover(agent_id)
    if alone or not worker:
        why = reason
    elif broken and agent_id not in fleet.beats:
        why = f"{reason}; proposed: no heartbeat says what work it takes"
    elif broken:
        why = f"{reason}; proposed: no other worker would take its work"
    else:
        why = reason
    iv = _intervention(kind, target, trigger, why, evidence, decided_by, alone)
    return [Decision(iv, apply=alone)]


def on_anomaly(
    event_id: str, anomaly: Anomaly, fleet: Fleet, rules: GuardianRules, decided_by: str
) -> list[Decision]:
    if anomaly.kind is AnomalyKind.RUNAWAY and anomaly.task is not None:
        return [_cancel_runaway(event_id, anomaly, rules, decided_by)]
    if anomaly.kind is AnomalyKind.STARVED and anomaly.task is not None:
        return [_raise_priority(event_id, anomaly, rules, decided_by)]
    agent = anomaly.agent
    if agent is None or anomaly.kind not in BROKEN | WORSE or fleet.quarantined(agent):
        return []
    role = fleet.role(agent)
    if role not in ("worker", None):
        return []  # a planner or validator has no tasks to take away
    return _take_work_away(
        InterventionKind.QUARANTINE_WORKER,
        agent,
        agent,
        role,
        event_id,
        anomaly.summary,
        [f"anomaly {anomaly.key}", *anomaly.evidence[:20]],
        broken=anomaly.kind in BROKEN,
        fleet=fleet,
        rules=rules,
        decided_by=decided_by,
    )


def _cancel_runaway(
    event_id: str, anomaly: Anomaly, rules: GuardianRules, decided_by: str
) -> Decision:
    """An attempt running away is cancelled: its retries, if any, start over."""
    kind = InterventionKind.CANCEL_TASK
    assert anomaly.task is not None
    alone = kind in rules.autonomous
    evidence = [f"anomaly {anomaly.key}", *anomaly.evidence]
    iv = _intervention(kind, anomaly.task, event_id, f"running away: {anomaly.summary}",
                       evidence, decided_by, alone)  # fmt: skip
    return Decision(iv, apply=alone)


def _raise_priority(
    event_id: str, anomaly: Anomaly, rules: GuardianRules, decided_by: str
) -> Decision:
    """A task starved in the normal lane (urgent work keeps every worker busy): its ticket
    goes to `high`, the urgent lane, where it is next in line. Aging, so that no ticket
    waits for ever; never `critical`, which is an operator's word."""
    kind = InterventionKind.RAISE_PRIORITY
    assert anomaly.task is not None
    ticket_id = anomaly.task.partition(".")[0]
    alone = kind in rules.autonomous
    evidence = [f"anomaly {anomaly.key}", *anomaly.evidence]
    iv = _intervention(kind, ticket_id, event_id, f"starved: {anomaly.summary}", evidence,
                       decided_by, alone)  # fmt: skip
    was = anomaly.priority if anomaly.priority in PRIORITIES else "normal"
    iv = iv.model_copy(update={"priority": "high", "previous_priority": was})
    return Decision(iv, apply=alone)


@dataclass(frozen=True)
class CrashLoop:
    """What `agent.crash_looping` says: whose supervisor restarts which child how often."""

    host: str
    child: str
    agent_id: str | None
    role: str | None
    restarts: int
    window_s: float
    last_exit: int | None = None


def on_crash_loop(
    event_id: str, loop: CrashLoop, fleet: Fleet, rules: GuardianRules, decided_by: str
) -> list[Decision]:
    """Hold the child: restarting it again helps nobody, and each start of a worker takes a
    task only to lose it."""
    reason = (
        f"crash looping: {loop.restarts} restarts in {loop.window_s:.0f}s "
        f"(last exit {loop.last_exit})"
    )
    role = loop.role or (fleet.role(loop.agent_id) if loop.agent_id else None)
    return _take_work_away(
        InterventionKind.HOLD_AGENT,
        f"{loop.host}.{loop.child}",
        loop.agent_id or "",
        role,
        event_id,
        reason,
        [f"agent.crash_looping {event_id}", f"{loop.child} on {loop.host} ran as {loop.agent_id}"],
        broken=True,
        fleet=fleet,
        rules=rules,
        decided_by=decided_by,
    )


def poison_workers(task: TaskState) -> list[str]:
    """The different workers the task's attempts failed on, in order."""
    return list(dict.fromkeys(e.worker for e in task.errors if e.worker is not None))


def on_failure(task: TaskState, rules: GuardianRules, decided_by: str) -> list[Decision]:
    """A task failed again: poison once it failed on `poison_workers` different ones.
    Its ticket is paused first (reversible: nothing else of it moves on), then the task
    is cancelled; an operator resumes the ticket, or sends it back, when they have looked."""
    workers = poison_workers(task)
    if task.status.terminal or len(workers) < rules.poison_workers:
        return []
    trigger = f"poison {task.id} g{task.generation}"
    reason = f"poison task: failed on {len(workers)} workers ({', '.join(workers)})"
    evidence = [f"{task.id}#{e.attempt} on {e.worker}: {e.category}: {e.message}"[:300]
                for e in task.errors]  # fmt: skip
    out = []
    for kind, target in (
        (InterventionKind.PAUSE_TICKET, task.ticket_id),
        (InterventionKind.CANCEL_TASK, task.id),
    ):
        alone = kind in rules.autonomous
        iv = _intervention(kind, target, trigger, reason, evidence, decided_by, alone)
        out.append(Decision(iv, apply=alone))
    return out


@dataclass(frozen=True)
class Step:
    """One `task.progress` report of a running agent."""

    tool_calls: int
    last_command: str | None
    files: tuple[str, ...]


def stuck_on(steps: Sequence[Step], rules: GuardianRules) -> str | None:
    """The command a running agent keeps repeating, changing no file, over its last
    `stuck_steps` reports (each with more tool calls than the one before); else None."""
    recent = list(steps[-rules.stuck_steps :])
    if len(recent) < rules.stuck_steps:
        return None
    first = recent[0]
    if first.last_command is None:
        return None
    repeating = all(s.last_command == first.last_command and s.files == first.files for s in recent)
    moving = all(b.tool_calls > a.tool_calls for a, b in itertools.pairwise(recent))
    return first.last_command if repeating and moving else None


def steering(command: str, steps: Sequence[Step]) -> str:
    """The rules' own advice, when no model words it."""
    return (
        f"The guardian sees you ran `{command[:200]}` {len(steps)} times in a row with no "
        "file changed. Stop repeating it: read its output, think about why it fails, and "
        "try a different approach (or finish and say what blocks you)."
    )


def stuck_trigger(task_id: str, attempt: int, command: str) -> str:
    """One steering per command an attempt is stuck on."""
    return f"stuck {task_id}#{attempt} {command}"


def on_stuck(
    task_id: str,
    attempt: int,
    worker: str,
    command: str,
    steps: Sequence[Step],
    message: str,
    rules: GuardianRules,
    decided_by: str,
) -> Decision:
    kind = InterventionKind.STEER_AGENT
    trigger = stuck_trigger(task_id, attempt, command)
    evidence = [f"{s.tool_calls} tool calls, last `{s.last_command}`" for s in steps]
    reason = f"stuck: ran `{command[:200]}` {len(steps)} reports in a row, no file changed"
    alone = kind in rules.autonomous
    iv = _intervention(kind, task_id, trigger, reason, evidence, decided_by, alone)
    return Decision(iv.model_copy(update={"message": message, "worker": worker}), apply=alone)


def on_held_discovery(
    trigger: str, held: DiscoveryState, rules: GuardianRules, decided_by: str
) -> list[Decision]:
    """Approve a discovery held only for its cost when the cost is within the guardian's
    limit; propose approving any other (an operator decides: `omoi guardian approve`)."""
    kind = InterventionKind.APPROVE_DISCOVERY
    estimate = held.estimate_usd or 0.0
    evidence = [f"discovery {held.id} from task {held.from_task}: {held.title}", held.reason]
    if held.held_for == "phase":
        why = "it opens a phase: an operator's call"
    elif estimate > rules.discovery_usd:
        why = f"its estimate ${estimate:.2f} is over the guardian's ${rules.discovery_usd:.2f}"
    else:
        alone = kind in rules.autonomous
        reason = f"its estimate ${estimate:.2f} is within the guardian's ${rules.discovery_usd:.2f}"
        iv = _intervention(kind, held.id, trigger, reason, evidence, decided_by, alone)
        return [Decision(iv, apply=alone)]
    iv = _intervention(kind, held.id, trigger, why, evidence, decided_by, False)
    return [Decision(iv, apply=False)]

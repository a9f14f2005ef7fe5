"""The guardian's decisions, as pure functions of a finding and the fleet."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.guardian.policy import (
    CrashLoop,
    Fleet,
    GuardianRules,
    Step,
    intervention_id,
    on_anomaly,
    on_crash_loop,
    on_failure,
    on_held_discovery,
    on_stuck,
    poison_workers,
    steering,
    stuck_on,
    stuck_trigger,
)
from schemas import Heartbeat, Phase, TaskState, TaskStatus, utcnow
from schemas.anomaly import Anomaly, AnomalyKind
from schemas.discovery import DiscoveryState, DiscoveryStatus
from schemas.guardian import InterventionKind, InterventionStatus
from schemas.task import AttemptError

NOW = utcnow()
RULES = GuardianRules()


def beat(agent: str, role: str = "worker", **kw: object) -> Heartbeat:
    fields: dict[str, object] = {
        "agent_id": agent, "role": role, "phases": ["implementation"],
        "capabilities": ["shell"], "ready": True, "interval_s": 1.0, "at": NOW,
    }  # fmt: skip
    fields.update(kw)
    return Heartbeat.model_validate(fields)


def fleet(*beats: Heartbeat) -> Fleet:
    return Fleet({b.agent_id: b for b in beats}, NOW)


def anomaly(kind: AnomalyKind, agent: str | None = "w-bad") -> Anomaly:
    return Anomaly(
        kind=kind, key=f"{kind}.{agent}", summary=f"{agent} is {kind}", agent=agent,
        observed=1.0, baseline=0.1, score=9.0, threshold=6.0, samples=10,
        baseline_samples=100, window_s=300, evidence=["T.a#1", "T.b#1"],
    )  # fmt: skip


def test_a_failing_worker_others_cover_is_quarantined_on_its_own_authority() -> None:
    [decision] = on_anomaly(
        "ev-1", anomaly(AnomalyKind.FAILURE_RATE), fleet(beat("w-bad"), beat("w-good")),
        RULES, "guardian-1",
    )  # fmt: skip
    iv = decision.intervention
    assert decision.apply and iv.autonomous
    assert (iv.kind, iv.target, iv.status) == (
        InterventionKind.QUARANTINE_WORKER,
        "w-bad",
        InterventionStatus.PROPOSED,
    )
    assert iv.reversible and iv.trigger == "ev-1" and "T.a#1" in iv.evidence
    assert iv.id == intervention_id(InterventionKind.QUARANTINE_WORKER, "w-bad", "ev-1")


@pytest.mark.parametrize(
    "others",
    [
        [],  # alone
        [beat("w-2", phases=["testing"])],  # another phase only
        [beat("w-2", ready=False)],
        [beat("w-2", quarantined="quarantine_worker.w-2.x")],
        [beat("w-2", at=NOW - timedelta(seconds=60))],  # stale
    ],
)
def test_quarantining_the_last_worker_of_its_kind_is_only_proposed(
    others: list[Heartbeat],
) -> None:
    [decision] = on_anomaly(
        "ev-1", anomaly(AnomalyKind.FAILURE_RATE), fleet(beat("w-bad"), *others), RULES, "g"
    )
    assert not decision.apply and not decision.intervention.autonomous
    assert "no other worker" in decision.intervention.reason


def test_slow_or_costly_is_proposed_and_queues_or_heartbeats_are_not_its_business() -> None:
    workers = fleet(beat("w-bad"), beat("w-good"))
    for kind in (AnomalyKind.RUN_TIME, AnomalyKind.COST):
        [decision] = on_anomaly("ev", anomaly(kind), workers, RULES, "g")
        assert not decision.apply
    for kind in (AnomalyKind.QUEUE_GROWTH, AnomalyKind.HEARTBEAT_GAP):
        assert on_anomaly("ev", anomaly(kind), workers, RULES, "g") == []
    assert on_anomaly("ev", anomaly(AnomalyKind.FAILURE_RATE, None), workers, RULES, "g") == []


def test_an_already_quarantined_worker_or_a_non_worker_gets_nothing_new() -> None:
    held = beat("w-bad", quarantined="x")
    assert on_anomaly("e", anomaly(AnomalyKind.FAILURE_RATE), fleet(held), RULES, "g") == []
    planner = fleet(beat("w-bad", role="planner"), beat("w-good"))
    assert on_anomaly("e", anomaly(AnomalyKind.FAILURE_RATE), planner, RULES, "g") == []


def loop(agent: str | None, role: str | None = "worker") -> CrashLoop:
    return CrashLoop("host-1", "worker-2", agent, role, restarts=4, window_s=300, last_exit=2)


def test_a_crash_looping_worker_is_held_by_its_supervisor() -> None:
    workers = fleet(beat("w-bad"), beat("w-2"))
    [known] = on_crash_loop("e", loop("w-bad"), workers, RULES, "g")
    iv = known.intervention
    assert known.apply and (iv.kind, iv.target) == (InterventionKind.HOLD_AGENT, "host-1.worker-2")
    assert "4 restarts in 300s (last exit 2)" in iv.reason and iv.reversible
    # The role from the heartbeat when the supervisor could not tell it.
    [by_beat] = on_crash_loop("e", loop("w-bad", role=None), workers, RULES, "g")
    assert by_beat.apply


@pytest.mark.parametrize(
    ("crash", "why"),
    [
        (loop("w-never-beat"), "no heartbeat says what work it takes"),
        (loop(None, role=None), ""),  # not even an agent id
        (loop("p-1", role="planner"), ""),  # holding the planner stops everything
    ],
)
def test_holding_what_it_cannot_judge_is_only_proposed(crash: CrashLoop, why: str) -> None:
    [decision] = on_crash_loop("e", crash, fleet(beat("w-2")), RULES, "g")
    assert not decision.apply and why in decision.intervention.reason


def test_autonomy_is_a_setting() -> None:
    timid = GuardianRules(autonomous=frozenset())
    workers = fleet(beat("w-bad"), beat("w-good"))
    [decision] = on_anomaly("ev", anomaly(AnomalyKind.FAILURE_RATE), workers, timid, "g")
    assert not decision.apply


def task(workers: list[str], status: TaskStatus = TaskStatus.QUEUED) -> TaskState:
    return TaskState(
        id="T.a", ticket_id="T", name="a", phase=Phase.IMPLEMENTATION, status=status,
        attempts=len(workers), max_retries=9,
        errors=[AttemptError(attempt=i + 1, category="exit_code", message="exit 1", worker=w)
                for i, w in enumerate(workers)],
    )  # fmt: skip


def test_a_task_failing_on_enough_different_workers_pauses_its_ticket_then_is_cancelled() -> None:
    assert poison_workers(task(["w1", "w1", "w2", "w1"])) == ["w1", "w2"]
    assert on_failure(task(["w1", "w1", "w2", "w2"]), RULES, "g") == []
    pause, cancel = on_failure(task(["w1", "w2", "w1", "w3"]), RULES, "g")
    assert (pause.intervention.kind, pause.intervention.target) == (
        InterventionKind.PAUSE_TICKET,
        "T",
    )
    assert (cancel.intervention.kind, cancel.intervention.target) == (
        InterventionKind.CANCEL_TASK,
        "T.a",
    )
    assert pause.apply and cancel.apply
    assert pause.intervention.reversible and not cancel.intervention.reversible
    assert len(cancel.intervention.evidence) == 4
    # The same failure read twice is the same intervention: ids from the task, not the event.
    again, _ = on_failure(task(["w1", "w2", "w1", "w3", "w2"]), RULES, "g")
    assert again.intervention.id == pause.intervention.id
    assert on_failure(task(["w1", "w2", "w3"], TaskStatus.FAILED), RULES, "g") == []


def steps(*commands: str | None, files: tuple[str, ...] = ()) -> list[Step]:
    return [Step(tool_calls=i + 1, last_command=cmd, files=files) for i, cmd in enumerate(commands)]


def test_an_agent_repeating_one_command_and_changing_nothing_is_stuck() -> None:
    assert stuck_on(steps("make", "make", "make", "make"), RULES) == "make"
    assert stuck_on(steps("ls", "make", "make", "make", "make"), RULES) == "make"
    assert stuck_on(steps("make", "make", "make"), RULES) is None  # not long enough yet
    assert stuck_on(steps("make", "make", "make test", "make"), RULES) is None
    assert stuck_on(steps(None, None, None, None), RULES) is None  # editing files, say
    # A report with no new tool call is the same step told twice, not another try.
    same = [Step(3, "make", ()), Step(3, "make", ()), Step(4, "make", ()), Step(5, "make", ())]
    assert stuck_on(same, RULES) is None
    changing = [Step(i, "make", (f"f{i}",)) for i in range(1, 5)]
    assert stuck_on(changing, RULES) is None


def test_a_stuck_agent_is_steered_once_per_command_it_is_stuck_on() -> None:
    trail = steps("make", "make", "make", "make")
    decision = on_stuck("T.a", 2, "w-1", "make", trail, "Try reading the error.", RULES, "g")
    iv = decision.intervention
    assert decision.apply and iv.kind is InterventionKind.STEER_AGENT and not iv.reversible
    assert (iv.target, iv.worker, iv.message) == ("T.a", "w-1", "Try reading the error.")
    assert iv.id == intervention_id(
        InterventionKind.STEER_AGENT, "T.a", stuck_trigger("T.a", 2, "make")
    )
    assert "ran `make` 4 times" in steering("make", trail)


def held(held_for: str, estimate: float | None) -> DiscoveryState:
    return DiscoveryState.model_validate({
        "id": "T1.code.0-1-2", "from_task": "code", "kind": "bug", "title": "Cache never expires",
        "status": DiscoveryStatus.HELD, "reason": "held", "held_for": held_for,
        "estimate_usd": estimate,
    })  # fmt: skip


def test_a_held_discovery_is_approved_within_the_guardians_limit_and_proposed_beyond() -> None:
    (cheap,) = on_held_discovery("ev-1", held("estimate", 2.5), RULES, "g-1")
    assert cheap.apply and cheap.intervention.autonomous
    iv = cheap.intervention
    assert (iv.kind, iv.target) == (InterventionKind.APPROVE_DISCOVERY, "T1.code.0-1-2")
    assert not iv.reversible and "within the guardian's $5.00" in iv.reason
    (dear,) = on_held_discovery("ev-1", held("estimate", 5.01), RULES, "g-1")
    assert not dear.apply and "over the guardian's $5.00" in dear.intervention.reason
    (phase,) = on_held_discovery("ev-1", held("phase", None), RULES, "g-1")
    assert not phase.apply and "opens a phase" in phase.intervention.reason
    assert phase.intervention.status is InterventionStatus.PROPOSED
    # Not among its autonomous kinds: even a cheap one is only proposed.
    rules = GuardianRules(autonomous=frozenset({InterventionKind.PAUSE_TICKET}))
    (asked,) = on_held_discovery("ev-1", held("estimate", 0.5), rules, "g-1")
    assert not asked.apply and not asked.intervention.autonomous
    # One finding, one intervention.
    again = on_held_discovery("ev-1", held("estimate", 2.5), RULES, "g-1")[0].intervention
    assert again.id == iv.id

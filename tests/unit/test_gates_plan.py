"""Phase gates from the planner's side: `plan` waiting at gates, and the pure gate helpers."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.planner.gates import (
    KEEP_VERDICTS,
    apply_verdict,
    build_request,
    fix_task,
    mark_pending,
    needs_rerun,
)
from agents.planner.merges import head_commit
from agents.planner.reconcile import plan
from schemas import Phase, TaskResult, TaskState, TaskStatus, TicketState
from schemas.gate import CheckKind, CheckSpec, GateSpec, GateVerdict
from schemas.ticket import GateState, GateStatus

P, S, G = Phase, TaskStatus, GateStatus
T0 = datetime(2024, 1, 1, tzinfo=UTC)
CHECK = CheckSpec(kind=CheckKind.DIFF)


def spec(fix_phase: Phase | None = None, fix_capability: str = "agent") -> GateSpec:
    return GateSpec(checks=[CHECK], fix_phase=fix_phase, fix_capability=fix_capability)


def ticket(
    phase: Phase = P.REQUIREMENTS,
    specs: dict[Phase, GateSpec] | None = None,
    gates: dict[Phase, GateState] | None = None,
    max_gate_attempts: int = 3,
) -> TicketState:
    return TicketState(
        id="T1",
        title="Add a thing",
        description="Please add the thing.",
        phase=phase,
        gate_specs=specs or {},
        gates=gates or {},
        max_gate_attempts=max_gate_attempts,
        tasks=[],
    )


def task(
    name: str,
    phase: Phase,
    status: TaskStatus = S.BLOCKED,
    *deps: str,
    commit: str | None = None,
    finished: int | None = None,
    acceptance: tuple[str, ...] = (),
    instructions: str | None = None,
    origin: str | None = None,
) -> TaskState:
    return TaskState(
        id=f"T1.{name}",
        ticket_id="T1",
        name=name,
        phase=phase,
        status=status,
        depends_on=[*deps],
        capability="agent",
        instructions=instructions or f"do {name}",
        acceptance=list(acceptance),
        origin=origin,
        result=TaskResult(exit_code=0, commit=commit) if commit or finished is not None else None,
        finished_at=None if finished is None else T0 + timedelta(seconds=finished),
    )


def tasks(*items: TaskState) -> dict[str, TaskState]:
    return {t.name: t for t in items}


def verdict(
    phase: Phase, attempt: int, passed: bool, feedback: str = "unit tests: 2 failed"
) -> GateVerdict:
    return GateVerdict(
        ticket_id="T1", phase=phase, attempt=attempt, passed=passed, feedback=feedback
    )


def pending(attempts: int = 1, failures: int | None = None) -> GateState:
    # By default every earlier request of this gate failed.
    failed = attempts - 1 if failures is None else failures
    return GateState(attempts=attempts, failures=failed, status=G.PENDING, commit="c1")


# plan() at a gate


def test_finished_gated_phase_requests_its_gate() -> None:
    t = ticket(specs={P.REQUIREMENTS: spec()})
    result = plan(t, tasks(task("r", P.REQUIREMENTS, S.SUCCEEDED), task("d", P.DESIGN)))
    assert result.request_gate is P.REQUIREMENTS
    assert result.transitions == []
    assert result.queue == []
    assert result.finish is None
    assert not result.empty


def test_pending_gate_waits() -> None:
    t = ticket(specs={P.REQUIREMENTS: spec()}, gates={P.REQUIREMENTS: pending()})
    result = plan(t, tasks(task("r", P.REQUIREMENTS, S.SUCCEEDED), task("d", P.DESIGN)))
    assert result.empty
    assert result.request_gate is None


@pytest.mark.parametrize("status", [G.PASSED, G.OVERRIDDEN])
def test_open_gate_lets_the_phase_move_on(status: GateStatus) -> None:
    t = ticket(
        specs={P.REQUIREMENTS: spec()},
        gates={P.REQUIREMENTS: GateState(attempts=1, status=status)},
    )
    result = plan(t, tasks(task("r", P.REQUIREMENTS, S.SUCCEEDED), task("d", P.DESIGN)))
    assert [(s.from_, s.to) for s in result.transitions] == [(P.REQUIREMENTS, P.DESIGN)]
    reason = result.transitions[0].reason
    assert "gate" in reason and status.value in reason
    assert result.queue == ["d"]
    assert result.request_gate is None


def test_failed_gate_does_not_transition() -> None:
    t = ticket(
        specs={P.REQUIREMENTS: spec()},
        gates={P.REQUIREMENTS: GateState(attempts=3, status=G.FAILED)},
    )
    result = plan(t, tasks(task("r", P.REQUIREMENTS, S.SUCCEEDED), task("d", P.DESIGN)))
    assert result.transitions == []
    assert result.request_gate is None
    assert result.queue == []


def test_phase_without_a_gate_spec_transitions_as_before() -> None:
    t = ticket(specs={P.TESTING: spec()})
    result = plan(t, tasks(task("r", P.REQUIREMENTS, S.SUCCEEDED), task("d", P.DESIGN)))
    assert [(s.from_, s.to, s.reason) for s in result.transitions] == [
        (P.REQUIREMENTS, P.DESIGN, "requirements complete")
    ]
    assert result.queue == ["d"]
    assert result.request_gate is None


def test_walks_through_ungated_phases_and_stops_at_a_gated_one() -> None:
    t = ticket(specs={P.IMPLEMENTATION: spec()})
    state = tasks(
        task("r", P.REQUIREMENTS, S.SUCCEEDED),
        task("i", P.IMPLEMENTATION, S.SUCCEEDED),
        task("t", P.TESTING, S.BLOCKED, "i"),
    )
    result = plan(t, state)
    assert [(s.from_, s.to) for s in result.transitions] == [
        (P.REQUIREMENTS, P.DESIGN),
        (P.DESIGN, P.IMPLEMENTATION),
    ]
    assert result.request_gate is P.IMPLEMENTATION
    assert result.queue == []
    assert result.finish is None


# head_commit


def test_head_commit_is_the_latest_finished_succeeded_commit() -> None:
    state = tasks(
        task("r", P.REQUIREMENTS, S.SUCCEEDED, commit="c-r", finished=1),
        task("i", P.IMPLEMENTATION, S.SUCCEEDED, commit="c-i", finished=3),
        task("d", P.DESIGN, S.SUCCEEDED, commit="c-d", finished=2),
        task("x", P.TESTING, S.FAILED, commit="c-x", finished=9),
    )
    assert head_commit(state) == "c-i"
    assert head_commit(state, before=P.IMPLEMENTATION) == "c-d"
    assert head_commit(state, before=P.DESIGN) == "c-r"
    assert head_commit(state, before=P.REQUIREMENTS) is None


def test_head_commit_is_the_last_published_one_whatever_order_successes_came_in() -> None:
    # Two parallel tasks: "a" published first but recorded its success last.
    state = tasks(
        task("a", P.IMPLEMENTATION, S.SUCCEEDED, commit="c-a", finished=5),
        task("b", P.IMPLEMENTATION, S.SUCCEEDED, commit="c-b", finished=4),
    )
    assert state["a"].result is not None and state["b"].result is not None
    state["a"].result.workspace_revision = 7
    state["b"].result.workspace_revision = 9
    assert head_commit(state) == "c-b"


def test_head_commit_is_none_without_commits() -> None:
    assert head_commit({}) is None
    state = tasks(task("r", P.REQUIREMENTS, S.SUCCEEDED, finished=1), task("d", P.DESIGN))
    assert head_commit(state) is None


# mark_pending / apply_verdict


def test_mark_pending_counts_attempts() -> None:
    t = ticket(specs={P.TESTING: spec()})
    mark_pending(t, P.TESTING, "c1")
    assert t.gates[P.TESTING] == GateState(attempts=1, status=G.PENDING, commit="c1")
    t.gates[P.TESTING].status = G.NONE
    mark_pending(t, P.TESTING, "c2")
    assert (t.gates[P.TESTING].attempts, t.gates[P.TESTING].commit) == (2, "c2")
    assert t.gates[P.TESTING].status is G.PENDING


@pytest.mark.parametrize(
    ("gate", "attempt"),
    [(pending(2), 1), (pending(1), 2), (GateState(attempts=1, status=G.PASSED), 1), (None, 1)],
)
def test_stale_verdict_is_ignored(gate: GateState | None, attempt: int) -> None:
    t = ticket(P.TESTING, specs={P.TESTING: spec()}, gates={P.TESTING: gate} if gate else {})
    assert apply_verdict(t, verdict(P.TESTING, attempt, True), None) is None


def test_passed_verdict_opens_the_gate() -> None:
    t = ticket(P.TESTING, specs={P.TESTING: spec()}, gates={P.TESTING: pending()})
    v = verdict(P.TESTING, 1, True, feedback="")
    after = apply_verdict(t, v, None)
    assert after is not None
    assert after.gates[P.TESTING].status is G.PASSED
    assert after.gates[P.TESTING].verdicts == [v]
    assert after.phase is P.TESTING


def test_failed_verdict_with_fix_in_the_same_phase() -> None:
    t = ticket(P.DESIGN, specs={P.DESIGN: spec()}, gates={P.DESIGN: pending()})
    t.tasks = ["d"]
    v = verdict(P.DESIGN, 1, False)
    fix = fix_task(t, tasks(task("d", P.DESIGN, S.SUCCEEDED)), v)
    assert fix is not None
    after = apply_verdict(t, v, fix)
    assert after is not None
    assert after.gates[P.DESIGN].status is G.NONE
    assert after.gates[P.DESIGN].verdicts == [v]
    assert after.tasks == ["d", "fix-design-1"]
    assert after.phase is P.DESIGN
    assert after.phase_history == []


def test_failed_testing_gate_sends_the_ticket_back_to_implementation() -> None:
    gates = {
        P.DESIGN: GateState(attempts=1, status=G.PASSED),
        P.IMPLEMENTATION: GateState(attempts=1, status=G.PASSED),
        P.TESTING: pending(),
    }
    specs = {P.DESIGN: spec(), P.IMPLEMENTATION: spec(), P.TESTING: spec(P.IMPLEMENTATION)}
    t = ticket(P.TESTING, specs=specs, gates=gates)
    v = verdict(P.TESTING, 1, False)
    fix = fix_task(t, tasks(task("t", P.TESTING, S.SUCCEEDED)), v)
    assert fix is not None and fix.phase is P.IMPLEMENTATION
    after = apply_verdict(t, v, fix)
    assert after is not None
    assert after.phase is P.IMPLEMENTATION
    [step] = after.phase_history
    assert (step.from_, step.to) == (P.TESTING, P.IMPLEMENTATION)
    assert "testing gate failed" in step.reason
    assert after.gates[P.IMPLEMENTATION].status is G.NONE
    assert after.gates[P.TESTING].status is G.NONE
    assert after.gates[P.DESIGN].status is G.PASSED
    assert fix.name in after.tasks


def test_failed_verdict_without_fix_blocks_the_ticket() -> None:
    t = ticket(P.TESTING, specs={P.TESTING: spec()}, gates={P.TESTING: pending(3)})
    v = verdict(P.TESTING, 3, False, feedback="unit tests: 2 failed\nmore detail")
    after = apply_verdict(t, v, None)
    assert after is not None
    assert after.phase is P.BLOCKED
    assert after.blocked_from is P.TESTING
    assert after.gates[P.TESTING].status is G.FAILED
    assert after.reason is not None
    assert "testing" in after.reason and "3 times" in after.reason
    assert "unit tests: 2 failed" in after.reason
    assert "more detail" not in after.reason
    [step] = after.phase_history
    assert (step.from_, step.to, step.reason) == (P.TESTING, P.BLOCKED, after.reason)


def test_verdicts_are_capped() -> None:
    old = [verdict(P.TESTING, n, False, feedback=f"old {n}") for n in range(1, KEEP_VERDICTS + 3)]
    gate = GateState(attempts=len(old) + 1, status=G.PENDING, verdicts=old)
    t = ticket(P.TESTING, specs={P.TESTING: spec()}, gates={P.TESTING: gate})
    v = verdict(P.TESTING, len(old) + 1, True)
    after = apply_verdict(t, v, None)
    assert after is not None
    kept = after.gates[P.TESTING].verdicts
    assert len(kept) == KEEP_VERDICTS
    assert kept[-1] == v
    assert kept[:-1] == old[-(KEEP_VERDICTS - 1) :]


# fix_task


def test_no_fix_for_a_passed_verdict_or_without_attempts_left() -> None:
    state = tasks(task("t", P.TESTING, S.SUCCEEDED))

    def at(failures: int) -> TicketState:
        gates = {P.TESTING: pending(failures + 1, failures)}
        return ticket(P.TESTING, specs={P.TESTING: spec()}, gates=gates, max_gate_attempts=2)

    assert fix_task(at(0), state, verdict(P.TESTING, 1, True)) is None
    assert fix_task(at(1), state, verdict(P.TESTING, 2, False)) is None
    assert fix_task(at(2), state, verdict(P.TESTING, 3, False)) is None
    assert fix_task(at(0), state, verdict(P.TESTING, 1, False)) is not None


def test_fix_task_carries_feedback_and_the_original_instructions() -> None:
    t = ticket(P.TESTING, specs={P.TESTING: spec(P.IMPLEMENTATION, "shell")})
    state = tasks(
        task("t", P.TESTING, S.SUCCEEDED, instructions="Run the suite", acceptance=("green",)),
        task("i", P.IMPLEMENTATION, S.SUCCEEDED, instructions="Write the code"),
    )
    fix = fix_task(t, state, verdict(P.TESTING, 2, False, feedback="test_foo: AssertionError"))
    assert fix is not None
    assert fix.name == "fix-testing-2"
    assert fix.id == "T1.fix-testing-2"
    assert fix.phase is P.IMPLEMENTATION
    assert fix.capability == "shell"
    assert fix.origin == "gate:testing:2"
    assert fix.status is S.BLOCKED
    assert fix.instructions is not None
    assert "test_foo: AssertionError" in fix.instructions
    assert "Run the suite" in fix.instructions
    assert "Write the code" not in fix.instructions
    assert fix.acceptance == ["green"]


def test_fix_task_defaults_to_the_gate_phase_and_agent_capability() -> None:
    t = ticket(P.DESIGN, specs={P.DESIGN: GateSpec(checks=[CHECK])})
    fix = fix_task(t, tasks(task("d", P.DESIGN, S.SUCCEEDED)), verdict(P.DESIGN, 1, False))
    assert fix is not None
    assert (fix.name, fix.phase, fix.capability) == ("fix-design-1", P.DESIGN, "agent")
    assert fix.origin == "gate:design:1"


def test_passed_requests_do_not_use_up_fix_attempts() -> None:
    specs = {P.IMPLEMENTATION: spec(), P.TESTING: spec(P.IMPLEMENTATION)}
    t = ticket(P.IMPLEMENTATION, specs=specs)
    state = tasks(task("i", P.IMPLEMENTATION, S.SUCCEEDED), task("t", P.TESTING, S.SUCCEEDED))
    for attempt in (1, 2):
        # Implementation passes its gate; testing fails and sends a fix back.
        mark_pending(t, P.IMPLEMENTATION, f"c{attempt}")
        assert apply_verdict(t, verdict(P.IMPLEMENTATION, attempt, True), None) is not None
        t.phase = P.TESTING
        mark_pending(t, P.TESTING, f"c{attempt}")
        failed = verdict(P.TESTING, attempt, False)
        fix = fix_task(t, state, failed)
        assert fix is not None
        assert apply_verdict(t, failed, fix) is not None
        assert t.phase is P.IMPLEMENTATION
    # The implementation gate now fails for the first time.
    mark_pending(t, P.IMPLEMENTATION, "c3")
    first_failure = verdict(P.IMPLEMENTATION, t.gates[P.IMPLEMENTATION].attempts, False)
    assert fix_task(t, state, first_failure) is not None


# needs_rerun


@pytest.mark.parametrize(
    ("phase", "status", "expected"),
    [
        (P.REQUIREMENTS, S.SUCCEEDED, False),
        (P.IMPLEMENTATION, S.SUCCEEDED, False),  # the fix's own phase
        (P.TESTING, S.SUCCEEDED, True),
        (P.TESTING, S.FAILED, True),
        (P.TESTING, S.BLOCKED, False),  # already waiting to run
        (P.DEPLOYMENT, S.SUCCEEDED, False),  # after the gate
    ],
)
def test_needs_rerun(phase: Phase, status: TaskStatus, expected: bool) -> None:
    assert needs_rerun(task("x", phase, status), P.IMPLEMENTATION, P.TESTING) is expected


def test_fix_in_the_gate_phase_reruns_nothing() -> None:
    for phase in (P.DESIGN, P.IMPLEMENTATION, P.TESTING):
        assert not needs_rerun(task("x", phase, S.SUCCEEDED), P.TESTING, P.TESTING)


# build_request


def test_build_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    specs = {P.TESTING: spec(P.IMPLEMENTATION)}
    t = ticket(P.TESTING, specs=specs)
    mark_pending(t, P.TESTING, "c-head")
    state = tasks(
        task("d", P.DESIGN, S.SUCCEEDED, commit="c-d", finished=1, acceptance=("doc",)),
        task("i", P.IMPLEMENTATION, S.SUCCEEDED, commit="c-i", finished=2),
        task("t1", P.TESTING, S.SUCCEEDED, commit="c-t1", finished=3, acceptance=("a", "b")),
        task("t2", P.TESTING, S.SUCCEEDED, commit="c-t2", finished=4, acceptance=("b", "c")),
    )
    request = build_request(t, state, P.TESTING)
    assert request.ticket_id == "T1"
    assert request.phase is P.TESTING
    assert request.attempt == 1
    assert request.base_commit == "c-i"
    assert request.commit == "c-head"
    assert request.acceptance == ["a", "b", "c"]
    assert request.spec == specs[P.TESTING]
    assert request.workspace is None  # the validator takes the published workspace
    assert (request.title, request.description) == ("Add a thing", "Please add the thing.")


def test_build_request_for_the_first_phase_has_no_base(tmp_path: Path) -> None:
    t = ticket(specs={P.REQUIREMENTS: spec()})
    mark_pending(t, P.REQUIREMENTS, None)
    state = tasks(task("r", P.REQUIREMENTS, S.SUCCEEDED, commit="c-r", finished=1))
    request = build_request(t, state, P.REQUIREMENTS)
    assert request.base_commit is None
    assert request.commit is None
    assert request.acceptance == []

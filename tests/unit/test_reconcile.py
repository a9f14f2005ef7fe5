"""`plan`: what a ticket needs next, decided from its state alone."""

from typing import Any

import pytest

from agents.planner.reconcile import Plan, plan
from schemas import Phase, TaskState, TaskStatus, TicketState, TicketStatus
from schemas.lock import ResourceClaim

P, S = Phase, TaskStatus


def ticket(
    phase: Phase = P.REQUIREMENTS, status: TicketStatus = TicketStatus.RUNNING
) -> TicketState:
    return TicketState(id="T1", title="t", phase=phase, status=status)


def task(name: str, phase: Phase, status: TaskStatus = S.BLOCKED, *deps: str) -> TaskState:
    return TaskState(
        id=f"T1.{name}", ticket_id="T1", name=name, phase=phase, status=status, depends_on=[*deps]
    )


def tasks(*items: TaskState) -> dict[str, TaskState]:
    return {t.name: t for t in items}


def steps(result: Plan) -> list[tuple[Phase | None, Phase, str]]:
    return [(t.from_, t.to, t.reason) for t in result.transitions]


def comparable(result: Plan) -> dict[str, Any]:
    """Everything in a plan except the transitions' wall-clock timestamps."""
    return {
        "skip": result.skip,
        "queue": result.queue,
        "transitions": steps(result),
        "finish": result.finish,
        "reason": result.reason,
    }


def test_queues_ready_tasks_of_the_current_phase_only() -> None:
    state = tasks(
        task("r1", P.REQUIREMENTS),
        task("r2", P.REQUIREMENTS),
        task("r3", P.REQUIREMENTS, S.BLOCKED, "r1"),
        task("d", P.DESIGN),
        task("i", P.IMPLEMENTATION),
    )
    result = plan(ticket(), state)
    assert result.queue == ["r1", "r2"]
    assert result.transitions == []
    assert result.skip == {}
    assert result.finish is None
    assert not result.empty


@pytest.mark.parametrize("status", [S.QUEUED, S.RUNNING])
def test_nothing_to_do_while_the_phase_is_in_flight(status: TaskStatus) -> None:
    state = tasks(task("r", P.REQUIREMENTS, status), task("d", P.DESIGN, S.BLOCKED, "r"))
    result = plan(ticket(), state)
    assert result.empty
    assert comparable(result) == comparable(Plan())


def test_completed_phase_advances_and_queues_the_next() -> None:
    state = tasks(
        task("r", P.REQUIREMENTS, S.SUCCEEDED),
        task("d", P.DESIGN, S.BLOCKED, "r"),
        task("i", P.IMPLEMENTATION, S.BLOCKED, "d"),
    )
    result = plan(ticket(), state)
    assert steps(result) == [(P.REQUIREMENTS, P.DESIGN, "requirements complete")]
    assert result.queue == ["d"]
    assert result.finish is None


def test_passes_through_empty_phases() -> None:
    state = tasks(task("i", P.IMPLEMENTATION), task("t", P.TESTING, S.BLOCKED, "i"))
    result = plan(ticket(), state)
    assert steps(result) == [
        (P.REQUIREMENTS, P.DESIGN, "requirements has no tasks"),
        (P.DESIGN, P.IMPLEMENTATION, "design has no tasks"),
    ]
    assert result.queue == ["i"]
    assert result.finish is None


def test_finishes_done_after_deployment() -> None:
    state = tasks(
        task("r", P.REQUIREMENTS, S.SUCCEEDED),
        task("ship", P.DEPLOYMENT, S.SUCCEEDED, "r"),
    )
    result = plan(ticket(P.DEPLOYMENT), state)
    assert steps(result) == [(P.DEPLOYMENT, P.DONE, "deployment complete")]
    assert result.queue == []
    assert result.finish is TicketStatus.DONE
    assert result.reason == "all phases complete"


def test_ticket_without_tasks_walks_every_phase_to_done() -> None:
    result = plan(ticket(), {})
    assert [(a, b) for a, b, _ in steps(result)] == [
        (P.REQUIREMENTS, P.DESIGN),
        (P.DESIGN, P.IMPLEMENTATION),
        (P.IMPLEMENTATION, P.TESTING),
        (P.TESTING, P.DEPLOYMENT),
        (P.DEPLOYMENT, P.DONE),
    ]
    assert all(reason.endswith("has no tasks") for _, _, reason in steps(result))
    assert result.finish is TicketStatus.DONE


@pytest.mark.parametrize("bad", [S.FAILED, S.CANCELLED])
def test_failure_skips_pending_tasks_and_waits_for_running_ones(bad: TaskStatus) -> None:
    state = tasks(
        task("a", P.REQUIREMENTS, bad),
        task("b", P.REQUIREMENTS, S.RUNNING),
        task("c", P.REQUIREMENTS, S.QUEUED),
        task("d", P.DESIGN, S.BLOCKED, "a"),
        task("e", P.REQUIREMENTS, S.SUCCEEDED),
    )
    why = "task a failed or was cancelled"
    result = plan(ticket(), state)
    assert result.skip == {"c": why, "d": why}
    assert result.queue == []
    assert result.transitions == []
    assert result.finish is None

    state["b"] = task("b", P.REQUIREMENTS, S.SUCCEEDED)
    result = plan(ticket(), state)
    assert result.skip == {"c": why, "d": why}
    assert result.finish is TicketStatus.FAILED
    assert result.reason == why


def test_failure_reason_names_every_failed_task_sorted() -> None:
    state = tasks(
        task("zeta", P.REQUIREMENTS, S.CANCELLED),
        task("alpha", P.REQUIREMENTS, S.FAILED),
        task("next", P.DESIGN),
    )
    result = plan(ticket(), state)
    assert result.reason == "task alpha, zeta failed or was cancelled"
    assert result.skip == {"next": result.reason}
    assert result.finish is TicketStatus.FAILED


@pytest.mark.parametrize(
    "ticket_state",
    [
        ticket(P.BLOCKED),
        ticket(P.REQUIREMENTS, TicketStatus.DONE),
        ticket(P.REQUIREMENTS, TicketStatus.FAILED),
        ticket(P.DESIGN, TicketStatus.CANCELLED),
    ],
)
def test_blocked_or_terminal_tickets_get_an_empty_plan(ticket_state: TicketState) -> None:
    state = tasks(task("r", P.REQUIREMENTS), task("d", P.DESIGN), task("x", P.DESIGN, S.FAILED))
    assert plan(ticket_state, state).empty
    assert plan(ticket_state, {}).empty


@pytest.mark.parametrize(
    ("dep_status", "ready"),
    [
        (S.SUCCEEDED, True),
        (S.SKIPPED, True),
        (S.BLOCKED, False),
        (S.QUEUED, False),
        (S.RUNNING, False),
    ],
)
def test_dependency_satisfied_when_succeeded_or_skipped(
    dep_status: TaskStatus, ready: bool
) -> None:
    state = tasks(task("a", P.DESIGN, dep_status), task("b", P.DESIGN, S.BLOCKED, "a"))
    result = plan(ticket(P.DESIGN), state)
    assert ("b" in result.queue) is ready
    assert result.transitions == []


def test_plan_is_deterministic_and_does_not_touch_its_input() -> None:
    state = tasks(
        task("r", P.REQUIREMENTS, S.SUCCEEDED),
        task("d1", P.DESIGN, S.BLOCKED, "r"),
        task("d2", P.DESIGN, S.BLOCKED, "r"),
        task("d3", P.DESIGN, S.BLOCKED, "d1"),
    )
    before = {k: v.model_dump() for k, v in state.items()}
    t = ticket()
    first, second = plan(t, state), plan(t, state)
    assert comparable(first) == comparable(second)
    assert first.queue == ["d1", "d2"]
    assert {k: v.model_dump() for k, v in state.items()} == before
    assert t.phase is P.REQUIREMENTS


def test_continue_skips_only_dependents_and_lets_independent_work_finish() -> None:
    going_on = ticket().model_copy(update={"on_failure": "continue"})
    state = tasks(
        task("a", P.REQUIREMENTS, S.FAILED),
        task("b", P.REQUIREMENTS, S.RUNNING),
        task("c", P.REQUIREMENTS, S.QUEUED),  # independent, waiting for its retry
        task("d", P.REQUIREMENTS, S.BLOCKED, "a"),
        task("e", P.REQUIREMENTS, S.BLOCKED, "d"),  # through another dependent
        task("f", P.REQUIREMENTS, S.BLOCKED, "b"),
        task("g", P.DESIGN, S.BLOCKED, "a"),
    )
    result = plan(going_on, state)
    assert result.skip == {
        "d": "depends on task a, which failed",
        "e": "depends on task a, which failed",
        "g": "depends on task a, which failed",
    }
    assert result.queue == [] and result.finish is None

    for name in "deg":
        state[name] = state[name].model_copy(update={"status": S.SKIPPED})
    state["b"] = state["b"].model_copy(update={"status": S.SUCCEEDED})
    result = plan(going_on, state)
    assert result.queue == ["f"]  # its own dependency succeeded: it runs
    assert result.finish is None

    state["c"] = state["c"].model_copy(update={"status": S.SUCCEEDED})
    state["f"] = state["f"].model_copy(update={"status": S.SUCCEEDED})
    result = plan(going_on, state)
    assert result.transitions == [] and result.queue == []
    assert result.finish is TicketStatus.FAILED
    assert result.reason == "task a failed or was cancelled"


def test_tasks_whose_resources_conflict_are_not_queued_together() -> None:
    def claiming(name: str, status: TaskStatus, *resources: str) -> TaskState:
        return task(name, P.IMPLEMENTATION, status).model_copy(
            update={"resources": [ResourceClaim.model_validate(r) for r in resources]}
        )

    state = tasks(
        claiming("running", S.RUNNING, "db:migrations"),
        claiming("same-db", S.BLOCKED, "db:migrations"),
        claiming("api", S.BLOCKED, "src/api/**"),
        claiming("api-file", S.BLOCKED, "src/api/v1.py"),
        claiming("docs", S.BLOCKED, "shared:docs/*.md"),
        claiming("docs-too", S.BLOCKED, "shared:docs/*.md"),
        claiming("free", S.BLOCKED),
    )
    result = plan(ticket(P.IMPLEMENTATION), state)
    assert result.queue == ["api", "docs", "docs-too", "free"]

"""The task-graph validator and the ticket phase state machine."""

import itertools
from typing import Any

import pytest

from agents.errors import InvalidTicket, TransitionError
from agents.planner.graph import dependents, find_cycle, validate_graph
from agents.planner.phases import allowed_targets, check_transition, next_phase
from schemas import Phase, TaskSpec

P = Phase


def spec(name: str, phase: Phase = P.REQUIREMENTS, *deps: str, **kw: Any) -> TaskSpec:
    kw.setdefault("command", "true")
    return TaskSpec(name=name, phase=phase, depends_on=list(deps), **kw)


def graph_error(specs: list[TaskSpec]) -> InvalidTicket:
    with pytest.raises(InvalidTicket) as info:
        validate_graph(specs)
    return info.value


# validate_graph


def test_valid_graph_across_phases_passes() -> None:
    specs = [
        spec("req"),
        spec("design", P.DESIGN, "req"),
        spec("code", P.IMPLEMENTATION, "design", "req"),
        spec("docs", P.IMPLEMENTATION, "code"),
        spec("test", P.TESTING, "code", "docs"),
        spec("ship", P.DEPLOYMENT, "test"),
        spec("review", P.DESIGN, capability="review", command=None),
    ]
    assert validate_graph(specs) is None
    assert validate_graph([]) is None


def test_duplicate_names_are_rejected() -> None:
    err = graph_error([spec("a"), spec("b"), spec("a", P.DESIGN)])
    assert err.category == "invalid_graph"
    assert err.message == "duplicate task name 'a'"


def test_unknown_dependency_is_rejected() -> None:
    err = graph_error([spec("a"), spec("b", P.REQUIREMENTS, "a", "ghost")])
    assert err.category == "invalid_graph"
    assert err.message == "task 'b' depends on unknown task 'ghost'"


def test_dependency_on_a_later_phase_is_rejected() -> None:
    err = graph_error([spec("a", P.REQUIREMENTS, "b"), spec("b", P.TESTING)])
    assert err.category == "invalid_graph"
    assert "task 'a' (requirements) depends on 'b' from a later phase (testing)" == err.message


@pytest.mark.parametrize("command", [None, "", "   \n\t"])
def test_shell_task_needs_a_command(command: str | None) -> None:
    err = graph_error([spec("a", command=command)])
    assert err.category == "invalid_graph"
    assert err.message == "shell task 'a' has no command"


@pytest.mark.parametrize("phase", [P.DONE, P.BLOCKED])
def test_tasks_must_belong_to_a_work_phase(phase: Phase) -> None:
    err = graph_error([spec("a", phase)])
    assert err.category == "invalid_graph"
    assert f"has phase {phase.value!r}" in err.message


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([spec("a", P.REQUIREMENTS, "b"), spec("b", P.REQUIREMENTS, "a")], "a -> b -> a"),
        ([spec("a", P.REQUIREMENTS, "a")], "a -> a"),
        (
            [
                spec("x"),
                spec("a", P.DESIGN, "c"),
                spec("b", P.DESIGN, "a"),
                spec("c", P.DESIGN, "b"),
            ],
            "a -> c -> b -> a",
        ),
    ],
)
def test_cycles_are_rejected_with_the_path(specs: list[TaskSpec], message: str) -> None:
    err = graph_error(specs)
    assert err.category == "dependency_cycle"
    assert err.message == "dependency cycle: " + message


def test_find_cycle_none_for_dags_and_unknown_names() -> None:
    diamond = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert find_cycle(diamond) is None
    assert find_cycle({}) is None
    assert find_cycle({"a": ["missing"]}) is None


def test_find_cycle_returns_a_closed_path_of_real_edges() -> None:
    deps = {"ok": [], "a": ["ok", "b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    cycle = find_cycle(deps)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    for src, dst in itertools.pairwise(cycle):
        assert dst in deps[src]


def test_dependents_are_transitive_and_exclude_unrelated() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": ["c", "a"], "e": [], "f": ["e"]}
    assert dependents(deps, "a") == {"b", "c", "d"}
    assert dependents(deps, "c") == {"d"}
    assert dependents(deps, "d") == set()
    assert dependents(deps, "e") == {"f"}


# phases


def test_next_phase_walks_forward_one_step() -> None:
    chain = [P.REQUIREMENTS]
    while chain[-1] is not P.DONE:
        chain.append(next_phase(chain[-1]))
    assert chain == [P.REQUIREMENTS, P.DESIGN, P.IMPLEMENTATION, P.TESTING, P.DEPLOYMENT, P.DONE]


@pytest.mark.parametrize("phase", [P.DONE, P.BLOCKED])
def test_next_phase_of_done_or_blocked_is_an_error(phase: Phase) -> None:
    with pytest.raises(TransitionError, match="has no next phase"):
        next_phase(phase)


@pytest.mark.parametrize(
    ("current", "targets"),
    [
        (P.REQUIREMENTS, {P.DESIGN, P.BLOCKED}),
        (P.DESIGN, {P.IMPLEMENTATION, P.BLOCKED}),
        (P.IMPLEMENTATION, {P.TESTING, P.BLOCKED}),
        (P.TESTING, {P.DEPLOYMENT, P.IMPLEMENTATION, P.BLOCKED}),
        (P.DEPLOYMENT, {P.DONE, P.BLOCKED}),
        (P.DONE, set()),
        (P.BLOCKED, set()),
    ],
)
def test_allowed_targets(current: Phase, targets: set[Phase]) -> None:
    assert allowed_targets(current) == targets
    for target in Phase:
        if target in targets:
            check_transition(current, target)
        else:
            with pytest.raises(TransitionError):
                check_transition(current, target)


@pytest.mark.parametrize("origin", [P.REQUIREMENTS, P.TESTING, P.DEPLOYMENT])
def test_blocked_returns_to_its_phase_or_moves_past_it(origin: Phase) -> None:
    after = next_phase(origin)
    assert allowed_targets(P.BLOCKED, origin) == {origin, after}
    check_transition(P.BLOCKED, origin, blocked_from=origin)
    check_transition(P.BLOCKED, after, blocked_from=origin)
    other = P.IMPLEMENTATION if origin is P.REQUIREMENTS else P.REQUIREMENTS
    with pytest.raises(TransitionError, match=f"cannot move from blocked to {other.value}"):
        check_transition(P.BLOCKED, other, blocked_from=origin)


@pytest.mark.parametrize(
    ("current", "target", "blocked_from", "message"),
    [
        (P.REQUIREMENTS, P.IMPLEMENTATION, None, "from requirements to implementation"),
        (P.DESIGN, P.REQUIREMENTS, None, "from design to requirements"),
        (P.TESTING, P.DONE, None, "from testing to done"),
        (P.DONE, P.REQUIREMENTS, P.DESIGN, "from done to requirements"),
        (P.BLOCKED, P.DESIGN, None, "from blocked to design"),
    ],
)
def test_refused_transition_lists_allowed_targets(
    current: Phase, target: Phase, blocked_from: Phase | None, message: str
) -> None:
    with pytest.raises(TransitionError) as info:
        check_transition(current, target, blocked_from)
    allowed = sorted(p.value for p in allowed_targets(current, blocked_from))
    expected = ", ".join(allowed) or "none"
    assert str(info.value) == f"cannot move {message} (allowed: {expected})"


def test_refused_transition_message_examples() -> None:
    with pytest.raises(TransitionError, match=r"\(allowed: blocked, design\)$"):
        check_transition(P.REQUIREMENTS, P.TESTING)
    with pytest.raises(TransitionError, match=r"\(allowed: blocked, deployment, implementation\)"):
        check_transition(P.TESTING, P.DESIGN)
    with pytest.raises(TransitionError, match=r"\(allowed: none\)$"):
        check_transition(P.DONE, P.BLOCKED)

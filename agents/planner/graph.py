"""Validate a ticket's task graph: unique names, known dependencies, phase order, no cycles."""

from __future__ import annotations

from collections.abc import Sequence

from agents.errors import InvalidTicket
from schemas import WORK_PHASES, TaskSpec


def validate_graph(tasks: Sequence[TaskSpec]) -> None:
    by_name: dict[str, TaskSpec] = {}
    for task in tasks:
        if task.name in by_name:
            raise InvalidTicket(f"duplicate task name {task.name!r}", "invalid_graph")
        by_name[task.name] = task
    order = {phase: i for i, phase in enumerate(WORK_PHASES)}
    for task in tasks:
        if task.phase not in order:
            raise InvalidTicket(
                f"task {task.name!r} has phase {task.phase.value!r}; tasks belong to one of "
                + ", ".join(p.value for p in WORK_PHASES),
                "invalid_graph",
            )
        _check_payload(task)
        if task.split is not None and task.split.over not in task.depends_on:
            raise InvalidTicket(
                f"task {task.name!r} splits over {task.split.over!r}, which must be one of "
                "its dependencies",
                "invalid_graph",
            )
        for dep in task.depends_on:
            if dep not in by_name:
                raise InvalidTicket(
                    f"task {task.name!r} depends on unknown task {dep!r}", "invalid_graph"
                )
            if order[by_name[dep].phase] > order[task.phase]:
                raise InvalidTicket(
                    f"task {task.name!r} ({task.phase.value}) depends on {dep!r} "
                    f"from a later phase ({by_name[dep].phase.value})",
                    "invalid_graph",
                )
    cycle = find_cycle({t.name: t.depends_on for t in tasks})
    if cycle:
        raise InvalidTicket("dependency cycle: " + " -> ".join(cycle), "dependency_cycle")


def _check_payload(task: TaskSpec) -> None:
    """A task must carry what its executor needs: a command, or an agent's prompt."""
    if task.capability == "shell" and not (task.command or "").strip():
        raise InvalidTicket(f"shell task {task.name!r} has no command", "invalid_graph")
    if task.capability == "agent" and not (task.instructions or "").strip():
        raise InvalidTicket(f"agent task {task.name!r} has no instructions", "invalid_graph")


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a closed path (first name repeated last), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in deps.get(node, []):
            if color.get(dep, black) == grey:
                return [*stack[stack.index(dep) :], dep]
            if color.get(dep) == white and (found := visit(dep)):
                return found
        stack.pop()
        color[node] = black
        return None

    for node in deps:
        if color[node] == white and (found := visit(node)):
            return found
    return None


def dependents(deps: dict[str, list[str]], root: str) -> set[str]:
    """Every task that depends on `root`, directly or transitively."""
    out: set[str] = set()
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for name, its_deps in deps.items():
            if current in its_deps and name not in out:
                out.add(name)
                frontier.append(name)
    return out

"""Where a git ticket's branches start and where they come together, decided from state.

Each task's branch starts from its base (`TaskState.base`), which the planner names
when it queues the task:
- a task with dependencies in its own phase starts from their commits, merged (a join);
- any other task starts from the head of the phases before it.
A phase's head is the commit of its one leaf: the task no other task of the phase depends
on. When a phase ends with several leaves, the planner adds a merge task that depends on
all of them, so every phase hands one commit on (and its gate checks that commit).

A merge that conflicts fails its task with `merge_conflict`. Under the ticket's
`on_conflict: resolve` the planner then adds a resolution task: an agent task that
starts with the conflict in its working tree and the hunks in its prompt, and whose
commit is the merge. The conflicted task runs again on top of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from agents.planner.phases import phase_index
from schemas import ErrorCategory, Phase, TaskState, TaskStatus
from schemas.task import MERGE_ORIGIN, RESOLVE_ORIGIN, task_key
from schemas.ticket import TicketState

# Resolutions tried for one task before its conflict is its failure.
MAX_RESOLUTIONS = 3
RESOLVER_CAPABILITY = "agent"


def _commit(task: TaskState) -> str | None:
    if task.status is not TaskStatus.SUCCEEDED or task.result is None:
        return None
    return task.result.commit


def leaves(tasks: Mapping[str, TaskState], phase: Phase) -> list[TaskState]:
    """The phase's succeeded tasks with a commit that no other such task depends on."""
    done = [t for t in tasks.values() if t.phase is phase and _commit(t)]
    depended = {d for t in done for d in t.depends_on}
    return sorted((t for t in done if t.name not in depended), key=lambda t: t.name)


def head_before(tasks: Mapping[str, TaskState], phase: Phase | None) -> list[str]:
    """The commits a task starts from when nothing in its own phase comes first: the
    leaves of the latest phase before `phase` (every phase, if None) that committed."""
    phases = sorted(
        {t.phase for t in tasks.values() if _commit(t)},
        key=phase_index,
        reverse=True,
    )
    for earlier in phases:
        if phase is None or phase_index(earlier) < phase_index(phase):
            return [c for t in leaves(tasks, earlier) if (c := _commit(t))]
    return []


def base_of(task: TaskState, tasks: Mapping[str, TaskState]) -> list[str]:
    """What `task`'s branch starts from, by the rules above."""
    joined = [
        c
        for name in task.depends_on
        if (dep := tasks.get(name)) is not None and dep.phase is task.phase and (c := _commit(dep))
    ]
    return joined or head_before(tasks, task.phase)


def phase_merge(
    ticket: TicketState, tasks: Mapping[str, TaskState], phase: Phase
) -> TaskState | None:
    """The task that merges a finished phase's leaves, if it has more than one."""
    ends = leaves(tasks, phase)
    if len({_commit(t) for t in ends}) < 2:
        return None
    runs = sum(1 for t in tasks.values() if t.is_merge and t.phase is phase)
    name = f"merge-{phase.value}" + (f"-{runs + 1}" if runs else "")
    return TaskState(
        id=task_key(ticket.id, name),
        ticket_id=ticket.id,
        name=name,
        phase=phase,
        # Served by whoever ran the work; a merge needs git only, never the executor.
        capability=ends[0].capability,
        depends_on=[t.name for t in ends],
        max_retries=2,
        origin=f"{MERGE_ORIGIN}{phase.value}",
    )


def conflicted(task: TaskState) -> bool:
    return (
        task.status is TaskStatus.FAILED
        and task.error is not None
        and task.error.category == ErrorCategory.MERGE_CONFLICT
    )


def resolution(
    ticket: TicketState, tasks: Mapping[str, TaskState], task: TaskState
) -> TaskState | None:
    """The task that resolves `task`'s merge conflict, or None when the ticket says a
    conflict fails, or enough resolutions were tried."""
    if ticket.on_conflict != "resolve" or task.resolves is not None:
        return None
    tried = [t for t in tasks.values() if t.resolves == task.name]
    if len(tried) >= MAX_RESOLUTIONS:
        return None
    # Named by the conflicted run (its generation), so deciding again after a crash
    # names the same task.
    suffix = f"-g{task.generation}" if task.generation else ""
    name = f"resolve-{task.name}{suffix}"
    if len(name) > 64:
        digest = hashlib.sha256(task.name.encode()).hexdigest()[:16]
        name = f"resolve-{digest}{suffix}"
    detail = task.error.message if task.error is not None else "a merge conflict"
    return TaskState(
        id=task_key(ticket.id, name),
        ticket_id=ticket.id,
        name=name,
        phase=task.phase,
        capability=RESOLVER_CAPABILITY,
        # The same base as the conflicted task: its merge is the work.
        depends_on=[d for d in task.depends_on if d in tasks and not tasks[d].resolves],
        instructions=resolve_instructions(task, detail),
        max_retries=1,
        origin=f"{RESOLVE_ORIGIN}{task.name}",
    )


def resolve_instructions(task: TaskState, detail: str) -> str:
    return (
        f"Task {task.name} of this ticket could not start: the branches it builds on "
        "conflict. The merge is in progress in your working directory, and git has "
        "marked each conflict in the files with <<<<<<<, ======= and >>>>>>>. Resolve "
        "every conflict so that the work of both sides is kept, remove the markers, and "
        "leave the files as they should be; do not commit, Omoi commits the merge.\n\n"
        f"## The conflict\n\n{detail}"
    )


def head_commit(tasks: Mapping[str, TaskState], before: Phase | None = None) -> str | None:
    """The commit holding the work of every phase before `before` (of all, if None): the
    head of the latest phase that committed. Should that phase have several leaves (an
    operator moved it on before its merge), the last one published."""
    heads = head_before(tasks, before)
    if len(heads) < 2:
        return heads[0] if heads else None
    published = [t for t in tasks.values() if _commit(t) in heads]
    latest = max(published, key=lambda t: (t.result.workspace_revision or 0) if t.result else 0)
    return _commit(latest)

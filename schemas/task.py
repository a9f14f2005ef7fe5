"""Task specs (what a user asks for), task state (what the KV bucket holds) and dispatches."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.common import (
    ErrorInfo,
    Identifier,
    Phase,
    Priority,
    StrictWireModel,
    WireModel,
    utcnow,
)
from schemas.lock import ResourceClaim
from schemas.usage import Budget, Usage

# Capabilities name consumers and subject tokens; worker labels follow the same rule.
CAPABILITY_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
Capability = Annotated[str, StringConstraints(pattern=CAPABILITY_PATTERN)]
# What a worker has and a task may require: `gpu`, `python`, or kind:value, `model:gpt-4o`.
LABEL_PATTERN = r"^[a-z][a-z0-9_-]{0,31}(:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"
Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]


MERGE_ORIGIN = "merge:"
RESOLVE_ORIGIN = "resolve:"
# A split task once its subtasks exist ("split:<count>"), and each subtask ("item:<i>").
SPLIT_ORIGIN = "split:"
ITEM_ORIGIN = "item:"


class TaskStatus(StrEnum):
    BLOCKED = "blocked"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATUSES


TERMINAL_TASK_STATUSES = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.SKIPPED}
)


class ErrorCategory(StrEnum):
    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    INVALID_SPEC = "invalid_spec"
    WORKER_LOST = "worker_lost"
    EXECUTOR_ERROR = "executor_error"
    CANCELLED = "cancelled"
    BUDGET = "budget"
    WORKSPACE = "workspace"
    MERGE_CONFLICT = "merge_conflict"
    MISSING_BRANCH = "missing_branch"


Criterion = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


MAX_SPLIT = 100


class SplitSpec(StrictWireModel):
    """Fan a task out over a list an earlier task produced: one subtask per item, made
    when that task has succeeded. Its output's last line that is a JSON list (or its
    summary, if that is one) is the list; more than `max` items fail the task."""

    over: Identifier
    max: int = Field(default=20, ge=1, le=MAX_SPLIT)


class TaskSpec(StrictWireModel):
    """One node of a ticket's task graph, as submitted."""

    name: Identifier
    phase: Phase
    capability: Capability = "shell"
    command: str | None = Field(default=None, max_length=20_000)
    # The prompt of an `agent` task: what the coding agent is asked to do.
    instructions: str | None = Field(default=None, max_length=50_000)
    acceptance: list[Criterion] = Field(default_factory=list, max_length=30)
    depends_on: list[Identifier] = Field(default_factory=list)
    timeout_s: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    max_retries: int = Field(default=3, ge=0, le=50)
    budget: Budget | None = None
    # What it uses, locked while it runs: no two conflicting claims run at once.
    resources: list[ResourceClaim] = Field(default_factory=list, max_length=50)
    # Labels the worker that runs it must have (best-fit assignment, agents/planner/assign.py).
    requires: list[Label] = Field(default_factory=list, max_length=20)
    split: SplitSpec | None = None
    # Gets its dependencies' results (`OMOI_JOINED`, and in an agent's prompt).
    join: bool = False
    # A barrier: tasks naming the same sync group start only once all of them can.
    sync: Identifier | None = None
    # Plugin tools (agents/tools, entry points `omoi.tools`) a coding agent gets.
    tools: list[Identifier] = Field(default_factory=list, max_length=20)


class AttemptError(WireModel):
    attempt: int
    category: str
    message: str
    # The worker the attempt failed on (a task failing on worker after worker is poison).
    worker: str | None = None
    at: datetime = Field(default_factory=utcnow)


class Handoff(WireModel):
    """A running agent gave its task to another capability or agent, with its context."""

    to_capability: str | None = None
    to_agent: str | None = None
    context: str = ""
    by: str | None = None  # the worker whose agent handed it off
    at: datetime = Field(default_factory=utcnow)


class TaskResult(WireModel):
    exit_code: int | None = None
    output_tail: str = ""
    duration_s: float = 0.0
    # The workspace commit that holds this task's work.
    commit: str | None = None
    # The `omoi_workspaces` object revision that published `commit`. Revisions only grow
    # and each published head descends from the last, so the highest names the head.
    workspace_revision: int | None = None
    # What the task says it did (an agent's final message), for the next phases.
    summary: str = ""
    files: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    # Set instead of a success when the agent handed the task on.
    handoff: Handoff | None = None


class TaskState(WireModel):
    """The current state of one task, kept in the `omoi_tasks` bucket under `<ticket>.<name>`."""

    id: str
    ticket_id: str
    name: str
    phase: Phase
    capability: str = "shell"
    command: str | None = None
    instructions: str | None = None
    acceptance: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    timeout_s: float = 600.0
    max_retries: int = 3
    budget: Budget | None = None
    resources: list[ResourceClaim] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    split: SplitSpec | None = None
    join: bool = False
    sync: str | None = None
    tools: list[str] = Field(default_factory=list)
    # A split's subtask: its item (a JSON value; a string as itself).
    item: str | None = None
    # The last handoff, and the worker the task is meant for (others leave it to that
    # one for a grace period, then anyone may take it: nothing waits on a dead worker).
    handoff: Handoff | None = None
    assigned: str | None = None
    assigned_at: datetime | None = None
    # Set on tasks the planner adds itself: "gate:testing:1" for a gate fix,
    # "merge:implementation" for a phase's merge, "resolve:<task>" for a conflict's
    # resolution.
    origin: str | None = None
    # The commits this task's branch starts from, merged (git tickets): its dependencies'
    # commits in its phase, or the previous phases' head. Set when it is queued; empty
    # means the workspace's start.
    base: list[str] = Field(default_factory=list)
    # Spent by every attempt so far; a ticket's budget is checked against the sum.
    usage: Usage = Field(default_factory=Usage)
    status: TaskStatus = TaskStatus.BLOCKED
    # Its ticket's priority when it was last queued: the lane its dispatch waits in.
    priority: Priority = "normal"
    attempts: int = 0
    # Bumped when a ticket moves back to a phase and the task must run again; dispatches
    # of an older generation are stale and dropped.
    generation: int = 0
    error: AttemptError | None = None
    errors: list[AttemptError] = Field(default_factory=list)
    result: TaskResult | None = None
    worker: str | None = None
    # Which stream message (and which delivery of it) holds the current claim, so a
    # redelivery after a crash can be told apart from a duplicate dispatch.
    msg_seq: int | None = None
    delivery: int = 0
    reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_spec(cls, ticket_id: str, spec: TaskSpec) -> TaskState:
        return cls(
            id=task_key(ticket_id, spec.name),
            ticket_id=ticket_id,
            name=spec.name,
            phase=spec.phase,
            capability=spec.capability,
            command=spec.command,
            instructions=spec.instructions,
            acceptance=list(spec.acceptance),
            depends_on=list(spec.depends_on),
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            budget=spec.budget,
            resources=list(spec.resources),
            requires=list(spec.requires),
            split=spec.split,
            join=spec.join,
            sync=spec.sync,
            tools=list(spec.tools),
        )

    @property
    def is_merge(self) -> bool:
        """A phase's merge, or a split task once fanned out: its work is only its base
        (what it merges), nothing to execute."""
        return (self.origin or "").startswith((MERGE_ORIGIN, SPLIT_ORIGIN))

    @property
    def fanned_out(self) -> bool:
        return (self.origin or "").startswith(SPLIT_ORIGIN)

    @property
    def resolves(self) -> str | None:
        """The task whose merge conflict this task resolves."""
        origin = self.origin or ""
        return origin[len(RESOLVE_ORIGIN) :] if origin.startswith(RESOLVE_ORIGIN) else None

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def record_lost(self, message: str) -> None:
        """Note that the current attempt was lost with its worker or its message."""
        lost = AttemptError(
            attempt=self.attempts, category=ErrorCategory.WORKER_LOST, message=message
        )
        self.errors.append(lost)
        self.error = lost

    def error_info(self) -> ErrorInfo | None:
        if self.error is None:
            return None
        return ErrorInfo(category=self.error.category, message=self.error.message)


class TaskDispatch(WireModel):
    """The work message on `omoi.tasks.<phase>.<capability>`.

    The ids say which task; `state` and `revision` are the task as it was queued and its
    KV revision, a hint that lets a worker claim it without reading it first (the claim
    is a compare-and-set on that revision, so a stale hint costs a read, nothing more).
    """

    ticket_id: str
    task: str
    generation: int = 0
    revision: int | None = None
    state: TaskState | None = None

    @property
    def key(self) -> str:
        return task_key(self.ticket_id, self.task)


def task_key(ticket_id: str, name: str) -> str:
    return f"{ticket_id}.{name}"


def split_task_key(key: str) -> tuple[str, str]:
    ticket_id, sep, name = key.partition(".")
    if not sep or not ticket_id or not name:
        raise ValueError(f"task id must look like <ticket_id>.<task_name>, got {key!r}")
    return ticket_id, name

"""Decide whether a delivered dispatch may run, from the task's state alone.

JetStream delivers at least once, and a dispatch can be published twice (a planner that
crashed and re-dispatched). The task records which stream message and which delivery
of it holds the claim, which tells the cases apart:
- the task already finished: drop the message (and re-announce the outcome);
- the dispatch is for an older generation of the task: drop it;
- another message holds the claim: a duplicate dispatch, drop it;
- the same message, a later delivery, while "running": the previous worker died, run
  it again (counting the lost attempt);
- the same message, an older delivery: a stale copy someone else now owns, leave it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from schemas import TaskDispatch, TaskState, TaskStatus, utcnow


class Verdict(StrEnum):
    RUN = "run"
    DROP = "drop"
    ABANDON = "abandon"
    EXHAUSTED = "exhausted"
    # Meant for another worker, which has a while to take it first.
    DEFER = "defer"


# How long a task assigned to one worker is left to it before any worker may take it:
# an assignee that died or never comes strands nothing.
ASSIGN_GRACE_S = 15.0


@dataclass(frozen=True)
class Receipt:
    """Which stream message a worker received (`seq`), and which delivery of it (`number`)."""

    seq: int
    number: int


def judge(
    task: TaskState,
    dispatch: TaskDispatch,
    delivery: Receipt,
    worker: str | None = None,
    labels: Sequence[str] = (),
) -> Verdict:
    if task.status.terminal or task.status is TaskStatus.BLOCKED:
        return Verdict.DROP
    if dispatch.generation != task.generation:
        return Verdict.DROP
    if task.msg_seq is not None and task.msg_seq != delivery.seq:
        return Verdict.DROP
    if task.msg_seq == delivery.seq and delivery.number <= task.delivery:
        return Verdict.ABANDON
    if task.attempts >= task.max_attempts:
        return Verdict.EXHAUSTED
    if worker is not None and task.status is TaskStatus.QUEUED:
        # A worker without a label the task requires never takes it; one it is not meant
        # for leaves it to that one for a while.
        if not set(task.requires) <= set(labels) or assigned_elsewhere(task, worker):
            return Verdict.DEFER
    return Verdict.RUN


def assigned_elsewhere(task: TaskState, worker: str) -> bool:
    if task.assigned is None or task.assigned == worker or task.assigned_at is None:
        return False
    return (utcnow() - task.assigned_at).total_seconds() < ASSIGN_GRACE_S


def claimed(task: TaskState, worker: str, delivery: Receipt) -> TaskState:
    """The task as it looks once `worker` starts a new attempt under `delivery`."""
    now = utcnow()
    if task.status is TaskStatus.RUNNING:
        task.record_lost(f"worker {task.worker} stopped responding; message redelivered")
    task.status = TaskStatus.RUNNING
    task.attempts += 1
    task.worker = worker
    task.msg_seq = delivery.seq
    task.delivery = delivery.number
    task.started_at = task.updated_at = now
    task.next_attempt_at = None
    return task


def exhausted(task: TaskState) -> TaskState:
    task.record_lost(f"no attempts left after worker {task.worker} was lost")
    task.status = TaskStatus.FAILED
    task.finished_at = task.updated_at = utcnow()
    return task

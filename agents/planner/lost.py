"""No state without its message: find work whose message is missing, and restore it.

The planner writes state first and publishes second (a task becomes `queued`, then its
dispatch goes out; a gate becomes pending, then its request goes out), and a crash or a
failed publish can fall between the two. So it checks the rule itself, in every sweep:

- every queued or running task has its dispatch in `OMOI_TASKS`;
- every pending gate has its request in `OMOI_GATES`;
- every pending delivery has its request in `OMOI_DELIVERIES`.

Each dispatch and gate request has its own subject, so one look at a stream's subjects
tells what is there. Work that broke the rule for longer than `grace` is restored: a
task is queued again by compare-and-set against the state that was judged lost (if it
changed meanwhile, it was not lost) and dispatched under a new message id; a gate
request is published again. A duplicate that slips through costs nothing: a worker
drops a dispatch whose task another message holds, and a verdict is applied once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bus import Versioned
from bus import constants as c
from schemas import Phase, TaskState, TaskStatus
from schemas.delivery import DeliveryStatus
from schemas.ticket import GateStatus, TicketState

# States that promise a message in the stream.
_PROMISED = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})


@dataclass
class Lost:
    tasks: list[Versioned[TaskState]] = field(default_factory=list)
    gates: list[Phase] = field(default_factory=list)
    delivery: bool = False

    @property
    def empty(self) -> bool:
        return not self.tasks and not self.gates and not self.delivery


def find_lost(
    ticket: TicketState,
    tasks: Iterable[Versioned[TaskState]],
    task_subjects: Collection[str],
    gate_subjects: Collection[str],
    delivery_subjects: Collection[str] = (),
    *,
    before: datetime,
) -> Lost:
    """What of `ticket` should have a message and has had none since before `before`.

    `task_subjects`, `gate_subjects` and `delivery_subjects` are the subjects holding
    messages now; `before`
    is when they were read minus a grace, so a write whose publish is merely in flight
    is left alone.
    """
    lost = Lost()
    for found in tasks:
        task = found.value
        if task.status not in _PROMISED or task.updated_at >= before:
            continue
        own = c.task_subject(task.phase, task.capability, task.ticket_id, task.name, task.priority)
        if own not in task_subjects:
            lost.tasks.append(found)
    if ticket.updated_at < before:
        for phase, gate in ticket.gates.items():
            if (
                gate.status is GateStatus.PENDING
                and c.gate_subject(phase.value, ticket.id) not in gate_subjects
            ):
                lost.gates.append(phase)
        lost.delivery = (
            ticket.delivery is not None
            and ticket.delivery.status is DeliveryStatus.PENDING
            and c.delivery_subject(ticket.id) not in delivery_subjects
        )
    return lost


def requeued(task: TaskState, judged: TaskState, now: datetime) -> TaskState | None:
    """`task` queued again for a new message, if it is still what was judged lost."""
    if task.status is not judged.status or task.updated_at != judged.updated_at:
        return None
    if task.status is TaskStatus.RUNNING:
        task.record_lost(f"the message of worker {task.worker}'s attempt was lost")
    task.status = TaskStatus.QUEUED
    task.reason = "its message was lost; queued again"
    task.worker = None
    task.msg_seq = None
    task.delivery = 0
    task.next_attempt_at = None
    task.updated_at = now
    return task

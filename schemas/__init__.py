"""Pydantic models for everything that travels on the bus or sits in a KV bucket."""

from schemas.command import (
    CancelTask,
    CancelTicket,
    DeliverTicket,
    MoveTicket,
    PauseTicket,
    PullRequestUpdate,
    Reply,
    ResumeTicket,
    SetPriority,
)
from schemas.common import WORK_PHASES, ErrorInfo, Phase, utcnow
from schemas.event import AGENTS_TOKEN, Event, EventType
from schemas.heartbeat import Heartbeat
from schemas.task import (
    AttemptError,
    ErrorCategory,
    TaskDispatch,
    TaskResult,
    TaskSpec,
    TaskState,
    TaskStatus,
    split_task_key,
    task_key,
)
from schemas.ticket import PhaseTransition, TicketState, TicketStatus, TicketSubmission

__all__ = [
    "AGENTS_TOKEN",
    "WORK_PHASES",
    "AttemptError",
    "CancelTask",
    "CancelTicket",
    "DeliverTicket",
    "ErrorCategory",
    "ErrorInfo",
    "Event",
    "EventType",
    "Heartbeat",
    "MoveTicket",
    "PauseTicket",
    "Phase",
    "PhaseTransition",
    "PullRequestUpdate",
    "Reply",
    "ResumeTicket",
    "SetPriority",
    "TaskDispatch",
    "TaskResult",
    "TaskSpec",
    "TaskState",
    "TaskStatus",
    "TicketState",
    "TicketStatus",
    "TicketSubmission",
    "split_task_key",
    "task_key",
    "utcnow",
]

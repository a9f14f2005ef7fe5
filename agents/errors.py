"""The agents package's exceptions. Task failures carry their retry decision."""

from __future__ import annotations

from schemas import ErrorCategory
from schemas.usage import Usage


class AgentError(Exception):
    """Root of everything the agents package raises."""


class SettingsError(AgentError):
    """Settings that cannot be used: a bad value, an unreadable or too open secret file.
    Entry points print its message and exit; it never names a secret's value."""


class AlertRulesError(AgentError):
    """An alert rule file that cannot be used; the message names the file, the line and
    why. The monitor does not start with one."""


class InterventionError(AgentError):
    """A guardian intervention that could not be applied or undone (the planner said
    no, or it cannot be undone); the message says why."""


class InvalidTicket(AgentError):
    """A submission that can never become a ticket (bad JSON, schema, graph)."""

    def __init__(self, message: str, category: str = "invalid_ticket") -> None:
        super().__init__(message)
        self.message = message
        self.category = category


class TransitionError(AgentError):
    """A phase transition the state machine does not allow."""


class CommandError(AgentError):
    """An operator command that cannot be carried out."""

    def __init__(self, message: str, category: str = "invalid_command") -> None:
        super().__init__(message)
        self.message = message
        self.category = category


class TaskFailure(AgentError):
    """A task attempt failed. `retryable` says whether another attempt may help."""

    retryable = True
    category: str = ErrorCategory.EXECUTOR_ERROR

    def __init__(
        self, message: str, *, category: str | None = None, usage: Usage | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        # What the failed attempt spent (an agent's tokens and dollars), if anything.
        self.usage = usage
        if category is not None:
            self.category = category


class TransientFailure(TaskFailure):
    category = ErrorCategory.EXIT_CODE


class TaskTimeout(TransientFailure):
    category = ErrorCategory.TIMEOUT


class PermanentFailure(TaskFailure):
    retryable = False
    category = ErrorCategory.INVALID_SPEC


class TaskCancelled(TaskFailure):
    retryable = False
    category = ErrorCategory.CANCELLED

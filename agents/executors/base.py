"""The executor interface: how a worker carries out one attempt of a task."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from schemas import TaskResult, TaskState
from schemas.discovery import Discovery
from schemas.ticket import TicketState
from schemas.usage import Budget

# Publishes a `task.progress` event for the running attempt.
ProgressReporter = Callable[[dict[str, Any]], Awaitable[None]]


class TeamLink(Protocol):
    """A running task's line to the other agents (`agents.worker.team`)."""

    async def send(self, to: str, text: str) -> None: ...

    async def ask(self, to: str, question: str, timeout_s: float) -> str | None: ...

    def listen(self, listener: Callable[[str, str], Awaitable[None]]) -> Callable[[], None]: ...

    async def discover(self, n: int, found: Discovery) -> None: ...

    async def call(self, call_id: str, tool: str, op: str, args: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class ExecutionContext:
    workspace: Path
    attempt: int
    env: dict[str, str] = field(default_factory=dict)
    ticket: TicketState | None = None
    report: ProgressReporter | None = None
    # What is left of the ticket's budget; an executor that spends money stays inside it.
    budget: Budget | None = None
    # A `join` task's dependencies' results, by task (a split's, by subtask).
    joined: dict[str, str] = field(default_factory=dict)
    team: TeamLink | None = None
    # What similar past tasks taught (agents/memory.py), for a coding agent's prompt.
    recalled: str = ""


class Executor(Protocol):
    """Runs a task attempt.

    Returns a `TaskResult` on success; raises an `agents.errors.TaskFailure` subclass on
    failure (its class says whether a retry may help). When the calling asyncio task is
    cancelled, it must stop all the work it started and clean up before re-raising.
    """

    capability: str
    # Whether it reads the ticket's changing state (`ctx.ticket.context`); if not, the
    # worker may hand it a cached ticket.
    reads_ticket_state: bool

    async def run(self, task: TaskState, ctx: ExecutionContext) -> TaskResult: ...

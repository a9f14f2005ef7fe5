"""The executor interface: how a worker carries out one attempt of a task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from schemas import TaskResult, TaskState


@dataclass(frozen=True)
class ExecutionContext:
    workspace: Path
    attempt: int
    env: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    """Runs a task attempt.

    Returns a `TaskResult` on success; raises an `agents.errors.TaskFailure` subclass on
    failure (its class says whether a retry may help). When the calling asyncio task is
    cancelled, it must stop all the work it started and clean up before re-raising.
    """

    capability: str

    async def run(self, task: TaskState, ctx: ExecutionContext) -> TaskResult: ...

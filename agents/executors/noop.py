"""`noop`: succeeds at once. Built for benchmarks, so they measure Omoi's own cost per task
(planning, KV, claims, events) rather than process spawning; no workflow uses it."""

from __future__ import annotations

from agents.executors.base import ExecutionContext
from schemas import TaskResult, TaskState


class NoopExecutor:
    capability = "noop"
    reads_ticket_state = False

    async def run(self, task: TaskState, ctx: ExecutionContext) -> TaskResult:
        return TaskResult(exit_code=0)

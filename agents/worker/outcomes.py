"""Recording an attempt's outcome: the compare-and-set that ends a claim, and its event.

Every write checks that the claim is still this worker's (not cancelled, reset or taken
over after a stall), and starts from the claim's own write, so usually no read is needed.
What the message should become (ack, retry later, leave it) travels out as an exception
to `bus.settle`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from agents import workspace
from agents.errors import TaskFailure, TransientFailure
from agents.events import task_event
from agents.memory import learned
from agents.redact import Redactor
from agents.settings import Settings
from agents.ticket_spans import record_task
from agents.worker.leases import Busy, Lease, Leases
from agents.workspace_sync import WorkspaceSync
from bus import Abandon, Bus, BusError, Retry, Versioned
from schemas import (
    AttemptError,
    ErrorCategory,
    Event,
    EventType,
    TaskResult,
    TaskState,
    TaskStatus,
    utcnow,
)
from schemas.task import Handoff

Interrupt = Literal["cancelled", "handback"]
# How soon a task whose resources are held is offered again.
LOCK_WAIT_S = 0.5
# Retry jitter from a generator of its own (see bus/retry.py).
_JITTER = random.Random()


@dataclass
class Outcome:
    result: TaskResult | None = None
    failure: TaskFailure | None = None
    interrupted: Interrupt | None = None
    # The resource locks the attempt held: its work is committed only if it still does.
    leases: list[Lease] = field(default_factory=list)


class OutcomeRecorder:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        worker_id: str,
        log: logging.LoggerAdapter[logging.Logger],
        workspaces: WorkspaceSync,
        redactor: Redactor,
        leases: Leases,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.worker_id = worker_id
        self.log = log
        self.workspaces = workspaces
        self.redactor = redactor
        self.leases = leases

    def is_mine(self, claim: TaskState, t: TaskState) -> bool:
        """Whether `t` is still the attempt this worker claimed (not cancelled, reset, taken)."""
        return (
            t.status is TaskStatus.RUNNING
            and t.worker == self.worker_id
            and t.generation == claim.generation
            and t.msg_seq == claim.msg_seq
            and t.attempts == claim.attempts
        )

    async def still_mine(self, claim: TaskState) -> bool:
        current = await self.bus.tasks.value(claim.id)
        return current is not None and self.is_mine(claim, current)

    async def record(self, claimed: Versioned[TaskState], outcome: Outcome) -> None:
        """Write the attempt's outcome, if the claim is still ours, and announce it.

        The claim's own write is where the compare-and-set starts from: usually nothing
        else touched the task since, and then no read is needed.
        """
        claim = claimed.value
        outcome = self.redacted(outcome)
        if outcome.interrupted == "cancelled":
            self.log.info("%s stopped: cancelled or superseded", claim.id)
            await self.superseded(claim)
        elif outcome.interrupted == "handback":
            await self.hand_back(claim)
        elif outcome.result is not None:
            await self.succeed(claimed, outcome.result, outcome.leases)
        else:
            await self.fail(claimed, outcome.failure or TransientFailure("no outcome"))

    def redacted(self, outcome: Outcome) -> Outcome:
        """The outcome without known secrets: its output and messages go to the task's
        state, its events and the logs."""
        if not self.redactor:
            return outcome
        if outcome.result is not None:
            clean = self.redactor.data(outcome.result.model_dump(mode="json"))
            outcome.result = TaskResult.model_validate(clean)
        if outcome.failure is not None:
            outcome.failure.message = self.redactor.text(outcome.failure.message)
        return outcome

    async def hand_back(self, claim: TaskState) -> None:
        def unclaim(t: TaskState) -> TaskState | None:
            if not self.is_mine(claim, t):
                return None
            t.status = TaskStatus.QUEUED
            t.attempts -= 1  # an interrupted attempt is not a failed one
            t.worker = None
            t.updated_at = utcnow()
            return t

        await self.bus.tasks.update(claim.id, unclaim)
        raise Retry("worker shutting down; task handed back")

    async def wait_for_locks(self, claim: TaskState, busy: Busy) -> None:
        """The task's resources are held by others: hand it back to run later, the attempt
        not counted."""

        def unclaim(t: TaskState) -> TaskState | None:
            if not self.is_mine(claim, t):
                return None
            t.status = TaskStatus.QUEUED
            t.attempts -= 1
            t.worker = None
            t.reason = f"waiting for a lock: {busy.describe()}"
            t.updated_at = utcnow()
            return t

        await self.bus.tasks.update(claim.id, unclaim)
        self.log.info("%s waits: %s", claim.id, busy.describe())
        raise Retry(f"waiting for a lock: {busy.describe()}", delay=LOCK_WAIT_S)

    async def succeed(
        self, claimed: Versioned[TaskState], result: TaskResult, leases: list[Lease]
    ) -> None:
        claim = claimed.value
        if result.handoff is not None:
            await self.hand_off(claimed, result, result.handoff)
            return
        lost = await self.leases.lost(leases)
        if lost:
            # Fencing: another attempt may hold these now; this one's work must not land.
            names = ", ".join(f"{lease.key} (token {lease.token})" for lease in lost)
            failure = TransientFailure(
                f"lost its lease on {names} while running; its work is not committed",
                category=ErrorCategory.WORKSPACE,
            )
            await self.fail(claimed, failure)
            return
        first_line = (result.summary.strip().splitlines() or [""])[0][:72]
        message = f"{claim.name}: {first_line or claim.phase.value}\n\nomoi task {claim.id}"
        try:
            # Published before the success is written, so whatever follows it sees the work.
            published = await self.workspaces.publish(claim, message)
        except workspace.WorkspaceError as exc:
            failure = TransientFailure(exc.args[0], category=ErrorCategory.WORKSPACE)
            await self.fail(claimed, failure)
            return
        if published is not None:
            result.commit = published.commit
            result.files = result.files or published.files
            result.workspace_revision = published.revision

        def succeed(t: TaskState) -> TaskState | None:
            if not self.is_mine(claim, t):
                return None
            t.status = TaskStatus.SUCCEEDED
            t.result = result
            if result.usage is not None:
                t.usage = t.usage + result.usage
            t.finished_at = t.updated_at = utcnow()
            return t

        done = await self.bus.tasks.update_versioned(claim.id, succeed, known=claimed)
        if done is None:
            await self.superseded(claim)
        else:
            record_task(done.value)
            await self.emit(
                done.value,
                EventType.TASK_SUCCEEDED,
                done.revision,
                duration_s=result.duration_s,
                exit_code=result.exit_code,
                output_tail=result.output_tail[-1000:],
                commit=result.commit,
                files=result.files[:100],
                usage=result.usage.model_dump() if result.usage else None,
            )
            await self.remember(done.value)

    async def remember(self, task: TaskState) -> None:
        """A coding task's lesson, for the memory (agents/memory.py). Its outcome is
        recorded already: a lesson that cannot be published is only logged."""
        if task.capability != "agent":
            return
        try:
            lesson = learned(task, await self.bus.tickets.value(task.ticket_id))
            if lesson is not None:
                await self.bus.publish_event(
                    Event(
                        id=f"{lesson.id}.{EventType.MEMORY_RECORDED.value}",
                        type=EventType.MEMORY_RECORDED,
                        ticket_id=task.ticket_id,
                        task=task.name,
                        agent=self.worker_id,
                        data=lesson.model_dump(mode="json"),
                    )
                )
        except BusError as exc:
            self.log.warning("the lesson of %s was not recorded: %r", task.id, exc)

    async def hand_off(
        self, claimed: Versioned[TaskState], result: TaskResult, handoff: Handoff
    ) -> None:
        """The agent gave the task on: its work so far is committed on the task's branch
        (the next holder starts from it), and the task waits for the planner to queue it
        for its new capability or agent."""
        claim = claimed.value
        target = handoff.to_agent or f"capability {handoff.to_capability}"
        try:
            published = await self.workspaces.publish(
                claim, f"{claim.name}: handed off to {target}"
            )
        except workspace.WorkspaceError as exc:
            await self.fail(
                claimed, TransientFailure(exc.args[0], category=ErrorCategory.WORKSPACE)
            )
            return
        now = utcnow()
        given = handoff.model_copy(update={"by": self.worker_id, "at": now})

        def handed(t: TaskState) -> TaskState | None:
            if not self.is_mine(claim, t):
                return None
            t.status = TaskStatus.BLOCKED
            t.generation += 1  # its dispatch is spent; the planner queues it anew
            t.attempts = 0
            t.capability = handoff.to_capability or t.capability
            t.instructions = (
                f"{(t.instructions or t.name).rstrip()}\n\n## Handed over by {self.worker_id}"
                f"\n\n{handoff.context.strip()}"
            )
            t.handoff = given
            t.assigned, t.assigned_at = (
                (handoff.to_agent, now) if handoff.to_agent else (None, None)
            )
            if published is not None:
                t.base = [published.commit]
            if result.usage is not None:
                t.usage = t.usage + result.usage
            t.worker, t.msg_seq, t.delivery = None, None, 0
            t.reason = f"handed off to {target}"
            t.updated_at = now
            return t

        done = await self.bus.tasks.update_versioned(claim.id, handed, known=claimed)
        if done is None:
            await self.superseded(claim)
            return
        await self.bus.publish_event(
            task_event(
                claim, EventType.TASK_HANDED_OFF, self.worker_id,
                to_capability=handoff.to_capability, to_agent=handoff.to_agent,
                context=handoff.context[:2000], revision=done.revision,
                commit=published.commit if published is not None else None,
            )
        )  # fmt: skip

    async def fail(self, claimed: Versioned[TaskState], failure: TaskFailure) -> None:
        claim = claimed.value
        now = utcnow()
        error = AttemptError(
            attempt=claim.attempts,
            category=failure.category,
            message=failure.message,
            worker=self.worker_id,
        )
        retry = failure.retryable and claim.attempts < claim.max_attempts
        delay = self.settings.retry_delay(claim.attempts, _JITTER.random()) if retry else 0.0

        def fail(t: TaskState) -> TaskState | None:
            if not self.is_mine(claim, t):
                return None
            t.errors.append(error)
            t.error = error
            if failure.usage is not None:
                t.usage = t.usage + failure.usage
            t.updated_at = now
            if retry:
                t.status = TaskStatus.QUEUED
                t.next_attempt_at = now + timedelta(seconds=delay)
            else:
                t.status = TaskStatus.FAILED
                t.finished_at = now
            return t

        written = await self.bus.tasks.update_versioned(claim.id, fail, known=claimed)
        if written is None:
            await self.superseded(claim)
            return
        updated, revision = written.value, written.revision
        info = {"category": error.category, "message": error.message}
        usage = failure.usage.model_dump() if failure.usage else None
        if retry:
            self.log.info("%s attempt %d failed, retry in %.2fs", claim.id, claim.attempts, delay)
            await self.emit(
                updated,
                EventType.TASK_RETRYING,
                revision,
                error=info,
                delay_s=round(delay, 3),
                usage=usage,
            )
            raise Retry(error.message, delay)
        self.log.info("%s failed: %s", claim.id, error.message)
        record_task(updated)
        await self.emit(updated, EventType.TASK_FAILED, revision, error=info, usage=usage)

    async def superseded(self, claim: TaskState) -> None:
        """Our claim is gone. Ack only if the task no longer needs this message.

        If another delivery of the same message took the task over (this worker stalled
        past the ack wait), acking would delete the message under the new owner.
        """
        current = await self.bus.tasks.value(claim.id)
        if current is None or current.status.terminal or current.generation != claim.generation:
            return
        raise Abandon()

    async def reannounce(self, key: str) -> None:
        """Publish a finished task's outcome again (same event id, so deduplicated).

        Covers a worker that died between recording an outcome and announcing it.
        """
        found = await self.bus.tasks.get(key)
        if found is None:
            return
        task = found.value
        if task.status is TaskStatus.SUCCEEDED:
            await self.emit(task, EventType.TASK_SUCCEEDED, found.revision)
        elif task.status is TaskStatus.FAILED and task.worker is not None:
            await self.emit(task, EventType.TASK_FAILED, found.revision, error=task.error_info())

    async def emit(
        self, task: TaskState, kind: EventType, revision: int | None = None, **data: object
    ) -> None:
        """Announce `task`; `revision` is the KV revision of the state announced (the
        planner waits for its state mirror to reach it before reconciling)."""
        payload = {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in data.items()}
        if revision is not None:
            payload["revision"] = revision
        await self.bus.publish_event(task_event(task, kind, self.worker_id, **payload))

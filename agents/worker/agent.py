"""The worker: pulls tasks for its phases and capabilities and runs them, `concurrency`
at a time (one by default: a coding agent wants the machine to itself)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from nats.aio.msg import Msg
from pydantic import ValidationError

from agents import workspace
from agents.base import Agent
from agents.errors import PermanentFailure, TaskFailure, TransientFailure
from agents.events import task_event
from agents.executors import ExecutionContext, Executor, ShellExecutor
from agents.executors.agent import AgentExecutor
from agents.executors.noop import NoopExecutor
from agents.settings import Settings
from agents.worker.claim import Delivery, Verdict, claimed, exhausted, judge
from bus import Abandon, Bus, MultiFetcher, Reject, Retry, Versioned, settle
from bus import constants as c
from bus.batch import BatchPuller
from bus.constants import CONTROL_CANCEL_PREFIX
from bus.settle import DeadLetter
from schemas import (
    AttemptError,
    EventType,
    Heartbeat,
    TaskDispatch,
    TaskResult,
    TaskState,
    TaskStatus,
    utcnow,
)
from schemas.ticket import TicketState
from schemas.usage import Budget, Usage

Interrupt = Literal["cancelled", "handback"]

# Outcomes being recorded while the next task already runs (see `Worker.main`).
RECORDING_AHEAD = 16
TICKET_CACHE = 256
# Verdicts that write the task: without a written value, the task is gone.
WRITES = frozenset({Verdict.RUN, Verdict.EXHAUSTED})


@dataclass
class Attempt:
    """A task this worker is executing, and whether it was asked to stop."""

    interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    reason: Interrupt = "cancelled"

    def stop(self, reason: Interrupt) -> None:
        self.reason = reason
        self.interrupt.set()


@dataclass
class Outcome:
    result: TaskResult | None = None
    failure: TaskFailure | None = None
    interrupted: Interrupt | None = None


def default_executors(settings: Settings, env: Mapping[str, str]) -> dict[str, Executor]:
    return {
        "shell": ShellExecutor(env),
        "agent": AgentExecutor(settings, env),
        "noop": NoopExecutor(),
    }


class Worker(Agent):
    role = "worker"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        phases: Sequence[str],
        capabilities: Sequence[str],
        executors: Mapping[str, Executor],
        agent_id: str | None = None,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        self.phases = list(phases)
        self.capabilities = list(capabilities)
        self.executors = dict(executors)
        self.concurrency = settings.worker_concurrency
        self._attempts: dict[str, Attempt] = {}  # running tasks by task id
        self._grace_timer: asyncio.TimerHandle | None = None
        self._tickets: dict[str, TicketState] = {}
        self._in_use = 0
        self._slot_freed = asyncio.Event()

    def heartbeat(self) -> Heartbeat:
        beat = super().heartbeat()
        beat.phases = self.phases
        beat.capabilities = self.capabilities
        return beat

    # Lifecycle

    def request_stop(self) -> None:
        super().request_stop()
        self._slot_freed.set()
        if self._attempts and self._grace_timer is None:
            # Let the tasks in hand finish, but not forever: then hand them back.
            self._grace_timer = asyncio.get_running_loop().call_later(
                self.settings.shutdown_grace_s, self._interrupt_all, "handback"
            )

    def _interrupt_all(self, reason: Interrupt) -> None:
        for attempt in self._attempts.values():
            attempt.stop(reason)

    async def main(self) -> None:
        topology = self.settings.topology()
        subs = [
            await self.bus.pull_tasks(phase, capability, topology)
            for phase in self.phases
            for capability in self.capabilities
        ]
        fetcher = MultiFetcher(subs, poll_s=self.settings.fetch_poll_s)
        puller = await self._batch_puller(len(subs))
        control = await self.bus.serve(f"{CONTROL_CANCEL_PREFIX}.>", self._on_control)
        dead_letter = self.bus.dead_letterer("tasks")
        # Up to `concurrency` tasks execute at once. Recording an outcome (a compare-and-
        # set, an event, the ack) overlaps fetching and starting the next task, for up to
        # RECORDING_AHEAD tasks more.
        recording = asyncio.Semaphore(self.concurrency + RECORDING_AHEAD)
        jobs: set[asyncio.Task[None]] = set()
        self.ready.set()
        try:
            while not self.stopping.is_set():
                if self._in_use >= self.concurrency:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                try:
                    msgs = await self._fetch(fetcher, puller)
                except Exception:
                    self.log.warning("fetching tasks failed", exc_info=True)
                    await self.wait_stopping(1.0)
                    continue
                for msg in msgs:
                    if self.stopping.is_set():
                        await msg.nak()
                        continue
                    await recording.acquire()
                    self._in_use += 1
                    job = asyncio.create_task(self._settle(msg, dead_letter))
                    jobs.add(job)
                    job.add_done_callback(jobs.discard)
                    job.add_done_callback(lambda _: recording.release())
        finally:
            if jobs:
                await asyncio.gather(*jobs, return_exceptions=True)
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await fetcher.close()
            if puller is not None:
                await puller.stop()
            with contextlib.suppress(Exception):
                await control.unsubscribe()
            for pull in subs:
                with contextlib.suppress(Exception):
                    await pull.unsubscribe()

    async def _batch_puller(self, consumers: int) -> BatchPuller | None:
        """With several slots on one consumer, pull for all free slots in one request and
        start on the first task that arrives rather than waiting for a full batch."""
        if consumers != 1 or self.concurrency == 1:
            return None
        durable = c.task_consumer(self.phases[0], self.capabilities[0])
        return await BatchPuller(self.bus.nc, c.TASKS_STREAM, durable).start()

    async def _fetch(self, fetcher: MultiFetcher, puller: BatchPuller | None) -> list[Msg]:
        free = self.concurrency - self._in_use
        if puller is not None:
            return await puller.next_batch(free, self.settings.fetch_poll_s)
        return await fetcher.next_batch(free)

    async def _settle(self, msg: Msg, dead_letter: DeadLetter) -> None:
        """Settle one message, freeing its execution slot as soon as execution is over."""
        freed = False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                self._in_use -= 1
                self._slot_freed.set()

        try:
            await settle(msg, lambda m: self._handle(m, free), dead_letter)
        finally:
            free()

    async def _on_control(self, msg: Msg) -> None:
        ticket_task = msg.subject[len(CONTROL_CANCEL_PREFIX) + 1 :]
        attempt = self._attempts.get(ticket_task)
        if attempt is not None:
            self.log.info("cancel requested for %s", ticket_task)
            attempt.stop("cancelled")

    # One message

    async def _handle(self, msg: Msg, free: Callable[[], None]) -> None:
        try:
            dispatch = TaskDispatch.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Reject(f"not a task dispatch: {exc}", "invalid_dispatch") from exc
        meta = msg.metadata
        delivery = Delivery(seq=meta.sequence.stream, number=meta.num_delivered or 1)
        verdict: Verdict | None = None

        def claim(t: TaskState) -> TaskState | None:
            nonlocal verdict
            verdict = judge(t, dispatch, delivery)
            if verdict is Verdict.RUN:
                return claimed(t, self.id, delivery)
            if verdict is Verdict.EXHAUSTED:
                return exhausted(t)
            return None

        snapshot = None
        if dispatch.state is not None and dispatch.revision is not None:
            snapshot = Versioned(dispatch.state, dispatch.revision)
        claim_written = await self.bus.tasks.update_versioned(dispatch.key, claim, known=snapshot)
        if verdict is None or (claim_written is None and verdict in WRITES):
            raise Reject(f"no task {dispatch.key!r}", "unknown_task")
        if verdict is Verdict.ABANDON:
            raise Abandon()
        if verdict is Verdict.DROP:
            await self._reannounce(dispatch.key)
            return
        assert claim_written is not None
        task = claim_written.value
        if verdict is Verdict.EXHAUSTED:
            await self._emit(
                task, EventType.TASK_FAILED, claim_written.revision, error=task.error_info()
            )
            return

        self.log.debug("running %s attempt %d", task.id, task.attempts)
        # Stamped with the claim's time, as `task.queued` is with the time the task became
        # ready: both events then measure the transition, not the round trip after it.
        started_event = task_event(task, EventType.TASK_STARTED, self.id, worker=self.id)
        started = await self.bus.publish_event_async(
            started_event.model_copy(update={"at": task.started_at or started_event.at})
        )
        try:
            try:
                outcome = await self._execute(task, msg)
            finally:
                free()
            await self._record(claim_written, outcome)
        finally:
            await self.bus.confirm(started)

    async def _execute(self, task: TaskState, msg: Msg) -> Outcome:
        try:
            executor, ctx = await self._prepare(task)
        except TaskFailure as exc:
            return Outcome(failure=exc)
        attempt = Attempt()
        self._attempts[task.id] = attempt
        self.current_task = task.id
        run = asyncio.create_task(executor.run(task, ctx))
        await asyncio.sleep(0)  # a quick executor (noop) is done here, without a poll
        # Keep the message alive well inside the ack wait, and look at the task's state
        # as often, in case a cancel broadcast was missed.
        tick = max(0.2, min(self.settings.ack_wait_s / 3, 5.0))
        try:
            while not run.done():
                interrupted = asyncio.create_task(attempt.interrupt.wait())
                await asyncio.wait({run, interrupted}, timeout=tick, return_when="FIRST_COMPLETED")
                interrupted.cancel()
                if run.done():
                    break
                if not attempt.interrupt.is_set():
                    await msg.in_progress()
                    if not await self._still_mine(task):
                        attempt.stop("cancelled")
                if attempt.interrupt.is_set():
                    run.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await run
                    return Outcome(interrupted=attempt.reason)
            try:
                return Outcome(result=run.result())
            except TaskFailure as exc:
                return Outcome(failure=exc)
            except Exception as exc:
                self.log.exception("executor crashed on %s", task.id)
                return Outcome(failure=TransientFailure(repr(exc), category="executor_error"))
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run
            del self._attempts[task.id]
            self.current_task = next(iter(self._attempts), None)

    async def _prepare(self, task: TaskState) -> tuple[Executor, ExecutionContext]:
        """The attempt's executor and context, with the ticket's workspace ready."""
        executor = self.executors.get(task.capability)
        if executor is None:
            raise PermanentFailure(f"no executor for {task.capability!r}")
        ticket = await self._ticket(task.ticket_id, fresh=executor.reads_ticket_state)
        ws = self.settings.workspaces_dir / task.ticket_id
        try:
            if ticket is not None and ticket.versioned:
                await asyncio.to_thread(workspace.ensure, ws, ticket.repository)
            else:
                ws.mkdir(parents=True, exist_ok=True)
        except workspace.WorkspaceError as exc:
            raise TransientFailure(exc.args[0], category="workspace") from exc
        return executor, ExecutionContext(
            workspace=ws,
            attempt=task.attempts,
            env={
                "OMOI_TICKET_ID": task.ticket_id,
                "OMOI_TICKET_TITLE": ticket.title if ticket else "",
                "OMOI_TICKET_DESCRIPTION": ticket.description if ticket else "",
                "OMOI_TASK": task.name,
                "OMOI_PHASE": task.phase.value,
                "OMOI_ATTEMPT": str(task.attempts),
            },
            ticket=ticket,
            report=self._reporter(task),
            budget=await self._ticket_budget_left(ticket),
        )

    async def _ticket(self, ticket_id: str, *, fresh: bool) -> TicketState | None:
        """The task's ticket.

        Most executors need only what never changes after submission (title,
        description, repository, budget), so that is cached; one that reads the ticket's
        changing state (the context earlier phases handed over) gets a fresh read.
        """
        if not fresh and (cached := self._tickets.get(ticket_id)) is not None:
            return cached
        ticket = await self.bus.tickets.value(ticket_id)
        if ticket is not None:
            self._tickets[ticket_id] = ticket
            if len(self._tickets) > TICKET_CACHE:
                del self._tickets[next(iter(self._tickets))]
        return ticket

    def _is_mine(self, claim: TaskState, t: TaskState) -> bool:
        """Whether `t` is still the attempt this worker claimed (not cancelled, reset, taken)."""
        return (
            t.status is TaskStatus.RUNNING
            and t.worker == self.id
            and t.generation == claim.generation
            and t.msg_seq == claim.msg_seq
            and t.attempts == claim.attempts
        )

    async def _still_mine(self, claim: TaskState) -> bool:
        current = await self.bus.tasks.value(claim.id)
        return current is not None and self._is_mine(claim, current)

    async def _record(self, claimed: Versioned[TaskState], outcome: Outcome) -> None:
        """Write the attempt's outcome, if the claim is still ours, and announce it.

        The claim's own write is where the compare-and-set starts from: usually nothing
        else touched the task since, and then no read is needed.
        """
        claim = claimed.value
        if outcome.interrupted == "cancelled":
            self.log.info("%s stopped: cancelled or superseded", claim.id)
            await self._superseded(claim)
        elif outcome.interrupted == "handback":
            await self._hand_back(claim)
        elif outcome.result is not None:
            await self._succeed(claimed, outcome.result)
        else:
            await self._fail(claimed, outcome.failure or TransientFailure("no outcome"))

    async def _hand_back(self, claim: TaskState) -> None:
        def hand_back(t: TaskState) -> TaskState | None:
            if not self._is_mine(claim, t):
                return None
            t.status = TaskStatus.QUEUED
            t.attempts -= 1  # an interrupted attempt is not a failed one
            t.worker = None
            t.updated_at = utcnow()
            return t

        await self.bus.tasks.update(claim.id, hand_back)
        raise Retry("worker shutting down; task handed back")

    async def _succeed(self, claimed: Versioned[TaskState], result: TaskResult) -> None:
        claim = claimed.value
        ws = self.settings.workspaces_dir / claim.ticket_id
        first_line = (result.summary.strip().splitlines() or [""])[0][:72]
        message = f"{claim.name}: {first_line or claim.phase.value}\n\nomoi task {claim.id}"
        try:
            if workspace.is_versioned(ws):
                result.commit, changed = await asyncio.to_thread(workspace.commit, ws, message)
                result.files = result.files or changed
        except workspace.WorkspaceError as exc:
            await self._fail(claimed, TransientFailure(exc.args[0], category="workspace"))
            return

        def succeed(t: TaskState) -> TaskState | None:
            if not self._is_mine(claim, t):
                return None
            t.status = TaskStatus.SUCCEEDED
            t.result = result
            if result.usage is not None:
                t.usage = t.usage + result.usage
            t.finished_at = t.updated_at = utcnow()
            return t

        done = await self.bus.tasks.update_versioned(claim.id, succeed, known=claimed)
        if done is None:
            await self._superseded(claim)
        else:
            await self._emit(
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

    async def _fail(self, claimed: Versioned[TaskState], failure: TaskFailure) -> None:
        claim = claimed.value
        now = utcnow()
        error = AttemptError(
            attempt=claim.attempts, category=failure.category, message=failure.message
        )
        retry = failure.retryable and claim.attempts < claim.max_attempts
        delay = self.settings.retry_delay(claim.attempts, random.random()) if retry else 0.0

        def fail(t: TaskState) -> TaskState | None:
            if not self._is_mine(claim, t):
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
            await self._superseded(claim)
            return
        updated, revision = written.value, written.revision
        info = {"category": error.category, "message": error.message}
        usage = failure.usage.model_dump() if failure.usage else None
        if retry:
            self.log.info("%s attempt %d failed, retry in %.2fs", claim.id, claim.attempts, delay)
            await self._emit(
                updated,
                EventType.TASK_RETRYING,
                revision,
                error=info,
                delay_s=round(delay, 3),
                usage=usage,
            )
            raise Retry(error.message, delay)
        self.log.info("%s failed: %s", claim.id, error.message)
        await self._emit(updated, EventType.TASK_FAILED, revision, error=info, usage=usage)

    async def _superseded(self, claim: TaskState) -> None:
        """Our claim is gone. Ack only if the task no longer needs this message.

        If another delivery of the same message took the task over (this worker stalled
        past the ack wait), acking would delete the message under the new owner.
        """
        current = await self.bus.tasks.value(claim.id)
        if current is None or current.status.terminal or current.generation != claim.generation:
            return
        raise Abandon()

    async def _reannounce(self, key: str) -> None:
        """Publish a finished task's outcome again (same event id, so deduplicated).

        Covers a worker that died between recording an outcome and announcing it.
        """
        found = await self.bus.tasks.get(key)
        if found is None:
            return
        task = found.value
        if task.status is TaskStatus.SUCCEEDED:
            await self._emit(task, EventType.TASK_SUCCEEDED, found.revision)
        elif task.status is TaskStatus.FAILED and task.worker is not None:
            await self._emit(task, EventType.TASK_FAILED, found.revision, error=task.error_info())

    def _reporter(self, task: TaskState) -> Callable[[dict[str, Any]], Awaitable[None]]:
        count = 0

        async def report(progress: dict[str, Any]) -> None:
            nonlocal count
            count += 1
            base = task_event(task, EventType.TASK_PROGRESS, self.id, **progress)
            await self.bus.publish_event(base.model_copy(update={"id": f"{base.id}.{count}"}))

        return report

    async def _ticket_budget_left(self, ticket: TicketState | None) -> Budget | None:
        """The ticket's budget minus what all its tasks' attempts have spent so far."""
        if ticket is None:
            return None
        budget = (ticket.budget or Budget()).tightest(self.settings.ticket_budget())
        if budget == Budget():
            return None
        spent = Usage()
        for name in ticket.tasks:
            other = await self.bus.tasks.value(f"{ticket.id}.{name}")
            if other is not None:
                spent = spent + other.usage
        return budget.remaining(spent)

    async def _emit(
        self, task: TaskState, kind: EventType, revision: int | None = None, **data: object
    ) -> None:
        """Announce `task`; `revision` is the KV revision of the state announced (the
        planner waits for its state mirror to reach it before reconciling)."""
        payload = {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in data.items()}
        if revision is not None:
            payload["revision"] = revision
        await self.bus.publish_event(task_event(task, kind, self.id, **payload))

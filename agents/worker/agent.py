"""The worker: pulls tasks for its phases and capabilities and runs them, `concurrency`
at a time (one by default: a coding agent wants the machine to itself)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
from agents.worker.outcomes import Interrupt, Outcome, OutcomeRecorder
from bus import Abandon, Bus, MultiFetcher, Reject, Versioned, settle
from bus import constants as c
from bus.batch import BatchPuller
from bus.constants import CONTROL_CANCEL_PREFIX
from bus.settle import DeadLetter
from schemas import (
    EventType,
    Heartbeat,
    TaskDispatch,
    TaskState,
)
from schemas.ticket import TicketState
from schemas.usage import Budget, Usage

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
        self.outcomes = OutcomeRecorder(bus, settings, self.id, self.log)
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
            await self.outcomes.reannounce(dispatch.key)
            return
        assert claim_written is not None
        task = claim_written.value
        if verdict is Verdict.EXHAUSTED:
            await self.outcomes.emit(
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
            await self.outcomes.record(claim_written, outcome)
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
                    if not await self.outcomes.still_mine(task):
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

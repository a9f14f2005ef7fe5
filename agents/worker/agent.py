"""The worker: pulls tasks for its phases and capabilities and runs them, `concurrency`
at a time (one by default: a coding agent wants the machine to itself)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span
from pydantic import ValidationError

from agents import memory, workspace
from agents.base import Agent
from agents.branches import MergeConflict, MissingBase
from agents.errors import PermanentFailure, TaskFailure, TransientFailure
from agents.events import conflict_event, task_event
from agents.executors import ExecutionContext, Executor, ShellExecutor
from agents.executors.agent import AgentExecutor
from agents.executors.noop import NoopExecutor
from agents.llm.client import ModelClient, ModelConfig
from agents.redact import Redactor
from agents.settings import Settings
from agents.spans import mark_failed, work_span
from agents.worker.claim import Receipt, Verdict, claimed, exhausted, judge
from agents.worker.joins import joined_results
from agents.worker.leases import Busy, Lease, Leases
from agents.worker.outcomes import Interrupt, Outcome, OutcomeRecorder
from agents.worker.team import TaskTeam, Team
from agents.workspace_sync import WorkspaceSync
from bus import (
    Abandon,
    Bucket,
    Bus,
    BusError,
    Consumer,
    Delivery,
    Reject,
    Request,
    Retry,
    Source,
    Versioned,
)
from bus import constants as c
from bus.constants import CONTROL_CANCEL_PREFIX
from bus.trace_context import bind_ticket, task_span_id
from schemas import (
    ErrorCategory,
    EventType,
    Heartbeat,
    TaskDispatch,
    TaskResult,
    TaskState,
)
from schemas.guardian import Quarantine
from schemas.registry import AgentCard, AgentStatus
from schemas.ticket import TicketState
from schemas.usage import Budget, Usage

# Outcomes being recorded while the next task already runs (see `Worker.main`).
RECORDING_AHEAD = 16
TICKET_CACHE = 256
MERGE_ONLY = NoopExecutor()
# How soon a task meant for another worker is offered again.
DEFER_S = 0.1
# Failures from input that can never work: the dispatch is dead-lettered with the reason too.
DEAD_LETTERED = frozenset({ErrorCategory.MISSING_BRANCH})
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
    """`env` is the worker's own environment; the executors hand tasks only the part
    agents/task_env.py allows."""
    return {
        "shell": ShellExecutor(env, settings),
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
        redactor: Redactor | None = None,
        agent_id: str | None = None,
        model: ModelClient | None = None,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        self.phases = list(phases)
        self.capabilities = list(capabilities)
        self.executors = dict(executors)
        self.concurrency = settings.worker_concurrency
        self.labels = list(settings.worker_labels)
        self.workspaces = WorkspaceSync(bus, settings.workspaces_dir)
        self.redactor = redactor if redactor is not None else Redactor.from_settings(settings)
        self.leases = Leases(bus, self.id, settings.lock_ttl_s)
        self.outcomes = OutcomeRecorder(
            bus, settings, self.id, self.log, self.workspaces, self.redactor, self.leases
        )
        self._attempts: dict[str, Attempt] = {}  # running tasks by task id
        # Tasks whose dispatch this process is handling, from before the claim to the
        # outcome: set when that handling ends.
        self._handling: dict[str, asyncio.Event] = {}
        self._running: dict[str, TaskState] = {}
        self._tickets: dict[str, TicketState] = {}
        # The intervention that quarantined it, while it lasts (agents/guardian).
        self.quarantined: str | None = None
        if model is None and (config := ModelConfig.from_settings(settings)) is not None:
            model = ModelClient(config)
        self.team = Team(bus, self.id, capabilities, model, lambda: list(self._running.values()))

    def heartbeat(self) -> Heartbeat:
        beat = super().heartbeat()
        beat.quarantined = self.quarantined
        beat.phases = self.phases
        beat.capabilities = self.capabilities
        beat.labels = self.labels
        beat.slots = self.concurrency
        return beat

    def card(self) -> AgentCard:
        update = {
            "phases": self.phases,
            "capabilities": self.capabilities,
            "labels": self.labels,
            "slots": self.concurrency,
        }
        return super().card().model_copy(update=update)

    def status(self) -> AgentStatus:
        tasks = sorted(self._attempts)
        update = {"running": len(tasks), "slots": self.concurrency, "tasks": tasks}
        return super().status().model_copy(update=update)

    # Lifecycle

    async def main(self) -> None:
        topology = self.settings.topology()
        sources = [
            Source(
                c.TASKS_STREAM,
                await self.bus.ensure_task_consumer(phase, cap, topology, lane),
                rank=c.lane_rank(lane),
            )
            for lane in c.LANES
            for phase in self.phases
            for cap in self.capabilities
        ]
        control = await self.bus.serve(f"{CONTROL_CANCEL_PREFIX}.>", self._on_control)
        await self.team.start()
        consumer = Consumer(
            self.bus,
            sources,
            self._handle,
            dead_letter=self.bus.dead_letterer("tasks"),
            name=f"tasks for {self.id}",
            slots=self.concurrency,
            # Recording an outcome (a compare-and-set, an event, the ack) overlaps
            # fetching and running the next task, for up to RECORDING_AHEAD tasks more.
            max_in_flight=self.concurrency + RECORDING_AHEAD,
            poll_s=self.settings.fetch_poll_s,
            grace_s=self.settings.shutdown_grace_s,
            keep_alive_s=self.keep_alive_s,
            logger=self.log,
        )
        quarantine = await self.bus.bucket(c.QUARANTINE_BUCKET, Quarantine)
        # A worker restarted while quarantined (a crash looper) takes not even one task.
        await self._check_quarantine(quarantine, consumer)
        try:
            await self.consume(consumer, also=[self._quarantine_loop(quarantine, consumer)])
        finally:
            await self.team.stop()
            await control.unsubscribe()

    async def _quarantine_loop(self, quarantine: Bucket[Quarantine], consumer: Consumer) -> None:
        """Looked at once a heartbeat: being quarantined is not a matter of milliseconds,
        and a read survives what a watch would have to re-establish."""
        while not await self.wait_stopping(self.settings.heartbeat_interval_s):
            try:
                await self._check_quarantine(quarantine, consumer)
            except BusError as exc:
                self.log.warning("could not read the quarantine: %s", exc)

    async def _check_quarantine(self, quarantine: Bucket[Quarantine], consumer: Consumer) -> None:
        held = await quarantine.value(self.id)
        if held is not None and not consumer.paused:
            self.log.warning("quarantined (%s): taking no new task", held.reason)
            consumer.pause()
        elif held is None and consumer.paused:
            self.log.info("quarantine lifted: taking tasks again")
            consumer.resume()
        self.quarantined = held.intervention if held is not None else None

    @property
    def keep_alive_s(self) -> float:
        """How often a running task's message is kept alive and its state looked at (in
        case a cancel broadcast was missed): well inside the ack wait."""
        return max(0.2, min(self.settings.ack_wait_s / 3, 5.0))

    async def _on_control(self, request: Request) -> None:
        ticket_task = request.subject[len(CONTROL_CANCEL_PREFIX) + 1 :]
        attempt = self._attempts.get(ticket_task)
        if attempt is not None:
            self.log.info("cancel requested for %s", ticket_task)
            attempt.stop("cancelled")
        return None

    # One message

    async def _handle(self, delivery: Delivery) -> None:
        try:
            dispatch = TaskDispatch.model_validate_json(delivery.data)
        except ValidationError as exc:
            raise Reject(f"not a task dispatch: {exc}", "invalid_dispatch") from exc
        bind_ticket(dispatch.ticket_id, dispatch.task)
        handling = self._handling.get(dispatch.key)
        if handling is not None:
            await self._beside_own(dispatch.key, handling, delivery)
        self._handling[dispatch.key] = handled = asyncio.Event()
        try:
            await self._claim_and_run(dispatch, delivery)
        finally:
            del self._handling[dispatch.key]
            handled.set()

    async def _beside_own(self, key: str, handling: asyncio.Event, delivery: Delivery) -> None:
        """Another delivery of a task this process is working on now: the message again
        (a keep-alive came late: a starved loop, a reconnect) or a second dispatch of it.
        Claiming it would count the running attempt as lost and start a second one beside
        it, resuming the same conversation twice. The running attempt settles the message
        (the server takes an earlier delivery's ack or nak for it); this delivery is kept
        alive until then and left."""
        self.log.info("%s redelivered while this worker runs it; leaving it", key)
        delivery.release()
        interrupted = asyncio.create_task(delivery.wait_interrupted())
        finished = asyncio.create_task(handling.wait())
        try:
            await asyncio.wait({interrupted, finished}, return_when="FIRST_COMPLETED")
        finally:
            interrupted.cancel()
            finished.cancel()
        raise Abandon()

    async def _claim_and_run(self, dispatch: TaskDispatch, delivery: Delivery) -> None:
        receipt = Receipt(seq=delivery.seq, number=delivery.number)
        verdict: Verdict | None = None

        def claim(t: TaskState) -> TaskState | None:
            nonlocal verdict
            verdict = judge(t, dispatch, receipt, self.id, self.labels)
            if verdict is Verdict.RUN:
                return claimed(t, self.id, receipt)
            if verdict is Verdict.EXHAUSTED:
                return exhausted(t)
            return None

        snapshot = None
        if dispatch.state is not None and dispatch.revision is not None:
            snapshot = Versioned(dispatch.state, dispatch.revision)
        claim_written = await self.bus.tasks.update_versioned(dispatch.key, claim, known=snapshot)
        if verdict is None or (claim_written is None and verdict in WRITES):
            raise Reject(f"no task {dispatch.key!r}", "unknown_task")
        if verdict not in WRITES:
            await self._pass_on(verdict, dispatch.key)
            return
        assert claim_written is not None
        task = claim_written.value
        if verdict is Verdict.EXHAUSTED:
            await self.outcomes.emit(
                task, EventType.TASK_FAILED, claim_written.revision, error=task.error_info()
            )
            return
        await self._run(claim_written, delivery)

    async def _pass_on(self, verdict: Verdict, key: str) -> None:
        """A dispatch this worker does not run: leave it, offer it later, or drop it."""
        if verdict is Verdict.ABANDON:
            raise Abandon()
        if verdict is Verdict.DEFER:
            raise Retry("assigned to another worker", delay=DEFER_S)
        await self.outcomes.reannounce(key)

    async def _run(self, claim_written: Versioned[TaskState], delivery: Delivery) -> None:
        """Run a claimed task, once its resources are locked, and record its outcome."""
        task = claim_written.value
        held = await self.leases.acquire(task)
        if isinstance(held, Busy):
            await self.outcomes.wait_for_locks(task, held)
            return
        self.log.debug("running %s attempt %d", task.id, task.attempts)
        with work_span(
            "attempt",
            ticket=task.ticket_id,
            task=task.name,
            parent=task_span_id(task.ticket_id, task.name),
            attributes={
                "omoi.attempt": task.attempts,
                "omoi.worker": self.id,
                "omoi.phase": task.phase.value,
                "omoi.capability": task.capability,
            },
        ) as span:
            outcome = await self._attempt(claim_written, delivery, held, span)
        failure = outcome.failure
        if failure is not None and failure.category in DEAD_LETTERED:
            # The task has failed for good; the dispatch goes to the dead letters with why.
            raise Reject(failure.message, failure.category)

    async def _attempt(
        self,
        claim_written: Versioned[TaskState],
        delivery: Delivery,
        held: list[Lease],
        span: Span,
    ) -> Outcome:
        task = claim_written.value
        # Stamped with the claim's time, as `task.queued` is with the time the task became
        # ready: both events then measure the transition, not the round trip after it.
        started_event = task_event(
            task,
            EventType.TASK_STARTED,
            self.id,
            worker=self.id,
            # How long the slot stood free before this task: with a backlog, fetching.
            idle_ms=round(delivery.idle_s * 1000, 2),
        )
        started = await self.bus.publish_event_async(
            started_event.model_copy(update={"at": task.started_at or started_event.at})
        )
        renewing = asyncio.create_task(self._renew(task, held)) if held else None
        try:
            try:
                outcome = await self._execute(task, delivery)
            finally:
                delivery.release()
                if renewing is not None:
                    renewing.cancel()
            outcome.leases = held
            outcome = self.outcomes.redacted(outcome)
            _describe(span, outcome)
            await self.outcomes.record(claim_written, outcome)
        finally:
            self.workspaces.release(task.id)
            await self.leases.release(held)
            await self.bus.confirm(started)
        return outcome

    async def _execute(self, task: TaskState, delivery: Delivery) -> Outcome:
        try:
            executor, ctx = await self._prepare(task)
        except TaskFailure as exc:
            return Outcome(failure=exc)
        attempt = Attempt()
        self._attempts[task.id] = attempt
        self._running[task.id] = task
        self.current_task = task.id
        run = asyncio.create_task(executor.run(task, ctx))
        await asyncio.sleep(0)  # a quick executor (noop) is done here, without a poll
        try:
            if not run.done() and await self._interrupted(run, task, attempt, delivery):
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
            self._running.pop(task.id, None)
            self.current_task = next(iter(self._attempts), None)

    async def _renew(self, task: TaskState, held: list[Lease]) -> None:
        """Keep the task's locks while it runs. A lease found lost is not fought for: the
        attempt's work will be refused when it tries to commit."""
        every = self.settings.lock_ttl_s / 3
        while True:
            await asyncio.sleep(every)  # a timer, not a wait for another party
            try:
                lost = await self.leases.renew(held)
            except BusError as exc:
                self.log.warning("renewing %s's locks failed: %s", task.id, exc)
                continue
            if lost:
                self.log.warning("%s lost its lease on %s", task.id, ", ".join(x.key for x in lost))
                held = [x for x in held if x not in lost]

    async def _interrupted(
        self, run: asyncio.Task[TaskResult], task: TaskState, attempt: Attempt, delivery: Delivery
    ) -> bool:
        """Wait for `run`; True if the attempt must stop first: cancelled, superseded (its
        state is looked at now and then, in case a cancel broadcast was missed), or handed
        back because the worker is shutting down. The runtime keeps the message alive."""
        watch = [
            asyncio.create_task(attempt.interrupt.wait()),
            asyncio.create_task(delivery.wait_interrupted()),
        ]
        try:
            while not run.done():
                await asyncio.wait(
                    {run, *watch}, timeout=self.keep_alive_s, return_when="FIRST_COMPLETED"
                )
                if run.done():
                    return False
                if delivery.interrupted:
                    attempt.stop("handback")
                elif not attempt.interrupt.is_set() and not await self.outcomes.still_mine(task):
                    attempt.stop("cancelled")
                if attempt.interrupt.is_set():
                    return True
            return False
        finally:
            for waiter in watch:
                waiter.cancel()

    async def _prepare(self, task: TaskState) -> tuple[Executor, ExecutionContext]:
        """The attempt's executor and context, with the ticket's workspace ready."""
        # A merge task's work is its base: merged when its working tree is made.
        executor = MERGE_ONLY if task.is_merge else self.executors.get(task.capability)
        if executor is None:
            raise PermanentFailure(f"no executor for {task.capability!r}")
        ticket = await self._ticket(task.ticket_id, fresh=executor.reads_ticket_state)
        ws = self.workspaces.path(task.ticket_id)
        try:
            if ticket is not None and ticket.versioned:
                # Up to the ticket's latest published state, from whichever machine.
                ws = await self.workspaces.pull(ticket, task)
            else:
                ws.mkdir(parents=True, exist_ok=True)
        except MergeConflict as exc:
            await self.bus.publish_event(conflict_event(task, exc.conflict, self.id))
            raise PermanentFailure(exc.args[0], category=ErrorCategory.MERGE_CONFLICT) from exc
        except MissingBase as exc:
            raise PermanentFailure(exc.args[0], category=ErrorCategory.MISSING_BRANCH) from exc
        except workspace.WorkspaceError as exc:
            raise TransientFailure(exc.args[0], category=ErrorCategory.WORKSPACE) from exc
        env = {
            "OMOI_TICKET_ID": task.ticket_id,
            "OMOI_TICKET_TITLE": ticket.title if ticket else "",
            "OMOI_TICKET_DESCRIPTION": ticket.description if ticket else "",
            "OMOI_TASK": task.name,
            "OMOI_PHASE": task.phase.value,
            "OMOI_ATTEMPT": str(task.attempts),
        }
        if task.item is not None:
            env["OMOI_ITEM"] = task.item
        joined = await joined_results(self.bus, task) if task.join else {}
        if task.join:
            env["OMOI_JOINED"] = json.dumps(joined)
        return executor, ExecutionContext(
            workspace=ws,
            attempt=task.attempts,
            env=env,
            ticket=ticket,
            report=self._reporter(task),
            budget=await self._ticket_budget_left(ticket),
            joined=joined,
            team=TaskTeam(self.team, task),
            recalled=await self._recall(task, ticket) if executor.capability == "agent" else "",
        )

    async def _recall(self, task: TaskState, ticket: TicketState | None) -> str:
        s = self.settings
        if not s.memory_recall:
            return ""
        found = await memory.recall(
            self.bus, task, ticket, limit=s.memory_recall, timeout_s=s.memory_timeout_s
        )
        return memory.prompt_section(found, s.memory_chars)

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
            progress = self.redactor.data(progress)
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
        found = [await self.bus.tasks.value(f"{ticket.id}.{name}") for name in ticket.tasks]
        return budget.remaining(Usage.total(t.usage for t in found if t is not None))


def _describe(span: Span, outcome: Outcome) -> None:
    """How the attempt went, on its span (the outcome's messages are redacted by now)."""
    if outcome.interrupted is not None:
        span.set_attribute("omoi.outcome", outcome.interrupted)
    elif outcome.failure is not None:
        span.set_attribute("omoi.outcome", "failed")
        span.set_attribute("omoi.error_category", str(outcome.failure.category))
        mark_failed(span, outcome.failure.message)
    else:
        span.set_attribute("omoi.outcome", "succeeded")
    usage = outcome.result.usage if outcome.result is not None else None
    if usage is not None:
        span.set_attribute("omoi.tokens", usage.prompt_tokens + usage.completion_tokens)
        span.set_attribute("omoi.cost_usd", usage.cost_usd)

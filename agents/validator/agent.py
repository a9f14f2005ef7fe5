"""The validator: consumes gate requests, checks a clean copy of the workspace, and
publishes a verdict with its evidence.

It never touches the ticket's state: the verdict is an event (`gate.passed` or
`gate.failed`) that the planner applies. Its id is fixed per gate attempt, so running a
request twice (a redelivery) publishes one verdict.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from agents.base import Agent
from agents.llm.client import ModelClient, ModelConfig
from agents.redact import Redactor
from agents.settings import Settings
from agents.spans import mark_failed, work_span
from agents.task_env import task_environment
from agents.validator.checks import GateError, clean_copy, feedback, run_checks, verdict_passed
from agents.validator.review import review
from agents.workspace import WorkspaceError
from agents.workspace_sync import download
from bus import Bus, Consumer, Delivery, Reject, Source
from bus import constants as c
from bus.trace_context import bind_ticket, phase_span_id
from schemas import Event, EventType
from schemas.gate import CheckResult, GateRequest, GateVerdict


def verdict_event(verdict: GateVerdict, agent_id: str) -> Event:
    kind = EventType.GATE_PASSED if verdict.passed else EventType.GATE_FAILED
    return Event(
        id=f"{verdict.ticket_id}.gate.{verdict.phase.value}.{verdict.attempt}.verdict",
        type=kind,
        ticket_id=verdict.ticket_id,
        agent=agent_id,
        data=verdict.model_dump(mode="json"),
    )


class Validator(Agent):
    role = "validator"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        redactor: Redactor | None = None,
        agent_id: str | None = None,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        # Gate commands come from tickets: they get what tasks get, never the whole `env`.
        self.env = task_environment(env or {}, settings)
        self.redactor = redactor if redactor is not None else Redactor.from_settings(settings)
        config = ModelConfig.from_settings(settings)
        self.model = ModelClient(config) if config is not None else None
        self.scratch = settings.data_dir / "validator"

    async def main(self) -> None:
        consumer = Consumer(
            self.bus,
            [Source(c.GATES_STREAM, c.VALIDATOR_CONSUMER)],
            self._handle,
            dead_letter=self.bus.dead_letterer("gates"),
            name="gate requests",
            poll_s=self.settings.fetch_poll_s,
            grace_s=self.settings.shutdown_grace_s,
            # Checks can run a whole test suite: keep the request from being redelivered.
            keep_alive_s=max(1.0, self.settings.ack_wait_s / 3),
            logger=self.log,
        )
        await self.consume(consumer)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            request = GateRequest.model_validate_json(delivery.data)
        except ValidationError as exc:
            raise Reject(f"not a gate request: {exc}", "invalid_gate_request") from exc
        bind_ticket(request.ticket_id)
        self.current_task = f"{request.ticket_id}.gate-{request.phase.value}"
        try:
            with work_span(
                f"gate {request.phase.value}",
                ticket=request.ticket_id,
                parent=phase_span_id(request.ticket_id, request.phase.value),
                attributes={"omoi.phase": request.phase.value, "omoi.attempt": request.attempt},
            ) as span:
                verdict = await self.evaluate(request)
                span.set_attribute("omoi.passed", verdict.passed)
                if not verdict.passed:
                    mark_failed(span, "the gate failed")
        finally:
            self.current_task = None
        if self.redactor:
            verdict = GateVerdict.model_validate(
                self.redactor.data(verdict.model_dump(mode="json"))
            )
        await self.bus.publish_event(verdict_event(verdict, self.id))
        self.log.info(
            "%s %s gate attempt %d: %s",
            request.ticket_id,
            request.phase.value,
            request.attempt,
            "passed" if verdict.passed else "failed",
        )

    async def evaluate(self, request: GateRequest) -> GateVerdict:
        """Check the gate on a fresh clone of the ticket's published workspace, at the
        request's commit. Only a workspace Omoi published is used, never a path.

        A workspace that cannot be had (missing, damaged, without that commit) fails the
        gate with the reason: asking again would find the same bytes. Passing NATS trouble
        never gets here; the bus rides it out."""
        copy = self.scratch / f"{request.ticket_id}-{request.phase.value}-{request.attempt}"
        shutil.rmtree(copy, ignore_errors=True)
        try:
            copy.mkdir(parents=True)
            try:
                await download(self.bus, request.ticket_id, copy / "workspace.bundle")
                commit = await asyncio.to_thread(
                    clean_copy, copy / "workspace.bundle", copy / "repo", request.commit
                )
            except (GateError, WorkspaceError) as exc:
                return GateVerdict(
                    ticket_id=request.ticket_id,
                    phase=request.phase,
                    attempt=request.attempt,
                    passed=False,
                    commit=request.commit,
                    feedback=f"the workspace could not be checked out: {exc}",
                )
            return await self._check(request, copy / "repo", commit)
        finally:
            await asyncio.to_thread(shutil.rmtree, copy, True)

    async def _check(self, request: GateRequest, repo: Path, commit: str) -> GateVerdict:
        env = {**self.env, "OMOI_TICKET_ID": request.ticket_id, "OMOI_PHASE": request.phase}
        results = await run_checks(request.spec, repo, base_commit=request.base_commit, env=env)
        # Before the model sees them too: a review needs no secrets.
        results = [CheckResult.model_validate(self.redactor.data(r.model_dump())) for r in results]
        passed = verdict_passed(results)
        review_text = None
        if passed and request.spec.review and self.model is not None:
            passed, review_text = await review(self.model, request, repo, results)
        return GateVerdict(
            ticket_id=request.ticket_id,
            phase=request.phase,
            attempt=request.attempt,
            passed=passed,
            commit=commit,
            checks=results,
            review=review_text,
            feedback="" if passed else feedback(results, review_text),
        )

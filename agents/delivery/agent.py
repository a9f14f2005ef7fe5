"""The delivery agent: pushes finished tickets' branches and opens their pull requests.

It consumes `omoi.deliveries.<ticket>` requests and reports each as an event,
`delivery.succeeded` or `delivery.failed` (data: `DeliveryReport`), that the planner
folds into the ticket; like the validator, it never writes a ticket's state. It is the
only role holding the credentials that write to repositories (`OMOI_GITHUB_TOKEN`), so
no coding agent, which runs on a worker, can reach them.

Every step is safe to run again: a redelivered request pushes a commit the branch
already has (a no-op), finds the pull request it opened, and publishes its report under
the same event id. A refusal (a protected branch, a missing remote, no rights, a
pull request call that fails) is the report's reason, never a crash; the ticket waits
with its branch for `omoi ticket deliver`.

With Jira configured it also tells a Jira issue how its ticket goes (agents/delivery/tracker.py).
It answers coding agents' integration calls (agents/delivery/integrations.py): the GitHub,
Jira and Supabase tools, whose credentials only it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import httpx
from pydantic import ValidationError

from agents.base import Agent
from agents.delivery import body
from agents.delivery.github import GitHub, GitHubError
from agents.delivery.integrations import INTEGRATION_CONCURRENCY, Integrations
from agents.delivery.jira import Jira
from agents.delivery.push import Credentials, PushError, default_branch, local_copy, push
from agents.delivery.tracker import Statuses, Tracker
from agents.redact import Redactor
from agents.settings import Settings
from agents.spans import mark_failed, work_span
from agents.workspace import WorkspaceError
from agents.workspace_sync import download
from bus import Bus, Consumer, Delivery, Reject, Source
from bus import constants as c
from bus.topology import tracker_consumer_config
from bus.trace_context import bind_ticket
from schemas import Event, EventType, TaskState
from schemas.delivery import DeliveryReport, DeliveryRequest, PullRequest

HTTP_TIMEOUT_S = 30.0


def report_event(report: DeliveryReport, agent_id: str) -> Event:
    kind = EventType.DELIVERY_SUCCEEDED if report.delivered else EventType.DELIVERY_FAILED
    return Event(
        id=f"{report.ticket_id}.delivery.{report.attempt}.reported",
        type=kind,
        ticket_id=report.ticket_id,
        agent=agent_id,
        data=report.model_dump(mode="json"),
    )


class DeliveryAgent(Agent):
    role = "delivery"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        redactor: Redactor | None = None,
        agent_id: str | None = None,
    ) -> None:
        super().__init__(bus, settings, agent_id)
        self.http = http
        self.redactor = redactor if redactor is not None else Redactor.from_settings(settings)
        token = settings.github_token.get_secret_value() if settings.github_token else None
        self.token = token
        self.creds = Credentials(settings.github_host, token) if token else None
        self.scratch = settings.data_dir / "delivery"

    async def main(self) -> None:
        own_http = self.http is None
        self.http = self.http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        calls = Integrations(self.bus, self.settings, self.http, self.id, self.redactor)
        serving = await self.bus.serve(
            c.INTEGRATIONS, calls.answer, queue=c.INTEGRATIONS_QUEUE,
            concurrency=INTEGRATION_CONCURRENCY,
        )  # fmt: skip
        try:
            consumer = Consumer(
                self.bus,
                [Source(c.DELIVERIES_STREAM, c.DELIVERY_CONSUMER)],
                self._handle,
                dead_letter=self.bus.dead_letterer("deliveries"),
                name="delivery requests",
                poll_s=self.settings.fetch_poll_s,
                grace_s=self.settings.shutdown_grace_s,
                keep_alive_s=max(1.0, self.settings.ack_wait_s / 3),
                logger=self.log,
            )
            await self.consume(consumer, *await self._tracking())
        finally:
            with contextlib.suppress(Exception):
                await serving.unsubscribe()
            if own_http:
                await self.http.aclose()

    async def _tracking(self) -> list[Consumer]:
        """The consumer that tells Jira how its issues' tickets go, when Jira is set up."""
        s = self.settings
        if not (s.jira_url and s.jira_email and s.jira_token and s.jira_token.get_secret_value()):
            return []
        assert self.http is not None
        jira = Jira(self.http, s.jira_url, s.jira_email, s.jira_token.get_secret_value())
        tracker = Tracker(self.bus, jira, Statuses(s.jira_started_status, s.jira_done_status))
        await self.bus.ensure_own_consumer(c.EVENTS_STREAM, tracker_consumer_config(s.topology()))
        return [
            Consumer(
                self.bus,
                [Source(c.EVENTS_STREAM, c.TRACKER_CONSUMER)],
                tracker.handle,
                dead_letter=self.bus.dead_letterer("events"),
                name="tracker",
                poll_s=s.fetch_poll_s,
                grace_s=s.shutdown_grace_s,
                keep_alive_s=max(1.0, s.ack_wait_s / 3),
                logger=self.log,
            )
        ]

    async def _handle(self, delivery: Delivery) -> None:
        try:
            request = DeliveryRequest.model_validate_json(delivery.data)
        except ValidationError as exc:
            raise Reject(f"not a delivery request: {exc}", "invalid_delivery_request") from exc
        bind_ticket(request.ticket_id)
        self.current_task = f"{request.ticket_id}.delivery"
        try:
            with work_span(
                "delivery",
                ticket=request.ticket_id,
                attributes={"omoi.attempt": request.attempt, "omoi.branch": request.branch},
            ) as span:
                report = await self.deliver(request)
                if not report.delivered:
                    mark_failed(span, report.error or "the delivery failed")
        finally:
            self.current_task = None
        if self.redactor:
            report = DeliveryReport.model_validate(
                self.redactor.data(report.model_dump(mode="json"))
            )
        await self.bus.publish_event(report_event(report, self.id))
        self.log.info(
            "%s delivery attempt %d: %s",
            request.ticket_id,
            request.attempt,
            "delivered" if report.delivered else f"failed ({report.category}): {report.error}",
        )

    async def deliver(self, request: DeliveryRequest) -> DeliveryReport:
        """Push the request's commit as its branch, then open (or find) its pull request."""
        report = DeliveryReport(
            ticket_id=request.ticket_id,
            attempt=request.attempt,
            delivered=False,
            branch=request.branch,
            commit=request.commit,
            remote=request.repository,
        )
        home = self.scratch / f"{request.ticket_id}-{request.attempt}"
        await asyncio.to_thread(shutil.rmtree, home, True)
        try:
            home.mkdir(parents=True)
            try:
                await download(self.bus, request.ticket_id, home / "workspace.bundle")
                copy = home / "repo.git"
                await asyncio.to_thread(local_copy, home / "workspace.bundle", copy, request.commit)
                await asyncio.to_thread(
                    push, copy, request.repository, request.commit, request.branch, self.creds
                )
            except PushError as exc:
                return _failed(report, str(exc), exc.category)
            except WorkspaceError as exc:
                return _failed(report, str(exc), "workspace_missing")
            report.pushed = True
            if request.github_repo is None:
                report.delivered = True
                return report
            try:
                report.pull_request = await self._pull_request(request, copy)
            except GitHubError as exc:
                return _failed(report, str(exc), "pull_request_failed")
            report.delivered = True
            return report
        finally:
            await asyncio.to_thread(shutil.rmtree, home, True)

    async def _pull_request(self, request: DeliveryRequest, copy: Path) -> PullRequest:
        assert request.github_repo is not None
        assert self.http is not None
        if request.pull_request is not None:
            return request.pull_request  # the push updated it
        ticket = await self.bus.tickets.value(request.ticket_id)
        if ticket is None:
            raise GitHubError(f"ticket {request.ticket_id} is gone")
        tasks: list[TaskState] = []
        for name in ticket.tasks:
            task = await self.bus.tasks.value(f"{ticket.id}.{name}")
            if task is not None:
                tasks.append(task)
        base = await asyncio.to_thread(default_branch, copy, request.repository, self.creds)
        text = body.body(ticket, tasks)
        if self.redactor:
            text = self.redactor.text(text)
        github = GitHub(self.http, self.settings.github_api_url, self.token)
        pull = {"title": body.title(ticket), "head": request.branch, "base": base, "body": text}
        return await github.open_pull_request(request.github_repo, pull)


def _failed(report: DeliveryReport, error: str, category: str) -> DeliveryReport:
    report.error = error
    report.category = category
    return report

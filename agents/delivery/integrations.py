"""Integration calls, the delivery agent's side: a coding agent's `github`, `jira` and
`supabase` tools (agents/tools/integrations.py) reach the providers only through here, so the
credentials stay with this role.

A call is made only for a task that declared the tool (intake checked its rights then) and
only against the ticket's own target: its GitHub repository, its Jira project (or one in
`OMOI_JIRA_PROJECTS`), the Supabase project configured here. Every call, made or refused,
is an `integration.called` event; a provider's refusal is the tool's answer, never a crash.
Calls made again change nothing: a comment carries its call's marker and is made once, a
pull request is found before one is opened, a migration is applied once by name.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
from pydantic import ValidationError

from agents.delivery.github import GitHub, GitHubError
from agents.delivery.jira import Jira, JiraError
from agents.delivery.supabase import Supabase, SupabaseError
from agents.planner.delivery import github_repo
from agents.redact import Redactor
from agents.settings import Settings
from bus import Bus, Request
from schemas import Event, EventType, TaskStatus
from schemas.integration import OPERATIONS, IntegrationCall, IntegrationReply
from schemas.task import task_key
from schemas.ticket import TicketState

log = logging.getLogger(__name__)

RESULT_CHARS = 20_000
# Calls answered at once: each waits on a provider (retried for seconds when it fails).
INTEGRATION_CONCURRENCY = 16
_ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,30}-[0-9]{1,12}$")


class Refused(Exception):
    """Why a call is not made (a category of IntegrationReply): control flow here only."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


class Integrations:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        http: httpx.AsyncClient,
        agent_id: str,
        redactor: Redactor | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.http = http
        self.agent_id = agent_id
        self.redactor = redactor

    async def answer(self, request: Request) -> bytes:
        try:
            call = IntegrationCall.model_validate_json(request.data)
        except ValidationError as exc:
            return IntegrationReply(
                ok=False, error=f"not a call: {exc}", category="invalid"
            ).to_json()
        try:
            result = await self._make(call)
            reply = IntegrationReply(ok=True, result=_text(result))
        except Refused as exc:
            reply = IntegrationReply(ok=False, error=str(exc), category=exc.category)
        if self.redactor:
            reply.result, reply.error = (
                self.redactor.text(reply.result),
                (self.redactor.text(reply.error) if reply.error else None),
            )
        await self._record(call, reply)
        return reply.to_json()

    async def _make(self, call: IntegrationCall) -> Any:
        if call.op not in OPERATIONS[call.tool]:
            raise Refused("invalid", f"{call.tool} has no operation {call.op!r}")
        task = await self.bus.tasks.value(task_key(call.ticket_id, call.task))
        if task is None or call.tool not in task.tools:
            raise Refused("refused", f"task {call.task} did not declare the {call.tool} tool")
        if task.status is not TaskStatus.RUNNING:
            raise Refused("refused", f"task {call.task} is {task.status.value}, not running")
        ticket = await self.bus.tickets.value(call.ticket_id)
        if ticket is None:
            raise Refused("refused", f"ticket {call.ticket_id} is gone")
        try:
            if call.tool == "github":
                return await self._github(call, ticket)
            if call.tool == "jira":
                return await self._jira(call, ticket)
            return await self._supabase(call)
        except (KeyError, TypeError, ValueError) as exc:
            raise Refused("invalid", f"bad arguments for {call.tool} {call.op}: {exc!r}") from exc
        except (GitHubError, JiraError, SupabaseError) as exc:
            status = getattr(exc, "status", None)
            raise Refused("provider" if status else "unreachable", str(exc)) from exc

    async def _github(self, call: IntegrationCall, ticket: TicketState) -> Any:
        repo = github_repo(ticket)
        if repo is None:
            raise Refused("refused", f"ticket {ticket.id} has no GitHub repository")
        token = self.settings.github_token
        if token is None or not token.get_secret_value():
            raise Refused("unconfigured", "no GitHub token here (OMOI_GITHUB_TOKEN)")
        github = GitHub(self.http, self.settings.github_api_url, token.get_secret_value())
        args = call.args
        if call.op == "read_issue":
            number = int(args["number"])
            issue = await github.get(f"/repos/{repo}/issues/{number}")
            comments = await github.get(f"/repos/{repo}/issues/{number}/comments", per_page=100)
            return {
                "number": issue.get("number"),
                "title": issue.get("title"),
                "state": issue.get("state"),
                "body": issue.get("body"),
                "labels": [label.get("name") for label in issue.get("labels", [])],
                "comments": [{"user": (c.get("user") or {}).get("login"), "body": c.get("body")}
                             for c in comments],
            }  # fmt: skip
        if call.op == "comment":
            tag = f"<!-- omoi:{call.id} -->"
            url = await github.comment_once(repo, int(args["number"]), str(args["body"]), tag)
            return {"commented": url}
        if call.op == "review_comments":
            found = await github.get(f"/repos/{repo}/pulls/{int(args['number'])}/comments",
                                     per_page=100)  # fmt: skip
            return [{"path": c.get("path"), "line": c.get("line"), "body": c.get("body"),
                     "user": (c.get("user") or {}).get("login")} for c in found]  # fmt: skip
        pull = {"title": str(args["title"]), "head": str(args["head"]),
                "base": str(args.get("base") or await self._default_branch(github, repo)),
                "body": str(args.get("body", ""))}  # fmt: skip
        opened = await github.open_pull_request(repo, pull)
        return {"number": opened.number, "url": opened.url}

    async def _default_branch(self, github: GitHub, repo: str) -> str:
        return str((await github.get(f"/repos/{repo}")).get("default_branch") or "main")

    async def _jira(self, call: IntegrationCall, ticket: TicketState) -> Any:
        s = self.settings
        if not (s.jira_url and s.jira_email and s.jira_token and s.jira_token.get_secret_value()):
            raise Refused("unconfigured", "Jira is not configured here (OMOI_JIRA_URL, …)")
        own = ticket.source.key if ticket.source and ticket.source.provider == "jira" else None
        key = str(call.args.get("key") or own or "")
        if not _ISSUE_KEY.match(key):
            raise Refused("invalid", f"no Jira issue key ({key!r}); name one, e.g. PROJ-1")
        allowed = set(s.jira_projects) | ({own.split("-", 1)[0]} if own else set())
        if key.split("-", 1)[0] not in allowed:
            raise Refused(
                "refused",
                f"{key} is not in this ticket's Jira projects "
                f"({', '.join(sorted(allowed)) or 'none'})",
            )
        jira = Jira(self.http, s.jira_url, s.jira_email, s.jira_token.get_secret_value())
        if call.op == "read":
            return await jira.read(key)
        if call.op == "comment":
            added = await jira.comment_once(key, str(call.args["body"]), call.id)
            return {"commented": key, "added": added}
        moved = await jira.move_to(key, str(call.args["status"]))
        if not moved:
            raise Refused("provider", f"no transition of {key} leads to {call.args['status']!r}")
        return {"moved": key, "to": call.args["status"]}

    async def _supabase(self, call: IntegrationCall) -> Any:
        s = self.settings
        if not (s.supabase_project and s.supabase_token and s.supabase_token.get_secret_value()):
            raise Refused(
                "unconfigured",
                "Supabase is not configured here (OMOI_SUPABASE_PROJECT, OMOI_SUPABASE_TOKEN)",
            )
        supabase = Supabase(self.http, s.supabase_api_url, s.supabase_project,
                            s.supabase_token.get_secret_value())  # fmt: skip
        if call.op == "migrate":
            return await supabase.migrate(str(call.args["name"]), str(call.args["query"]))
        table = str(call.args["table"])
        return await supabase.table_schema(str(call.args.get("table_schema") or "public"), table)

    async def _record(self, call: IntegrationCall, reply: IntegrationReply) -> None:
        args = json.dumps(call.args, default=str)
        await self.bus.publish_event(
            Event(
                id=f"{call.ticket_id}.{call.task}.integration.{call.id}",
                type=EventType.INTEGRATION_CALLED,
                ticket_id=call.ticket_id,
                task=call.task,
                agent=self.agent_id,
                data={
                    "tool": call.tool,
                    "op": call.op,
                    "ok": reply.ok,
                    "category": reply.category,
                    "error": reply.error,
                    "args": self.redactor.text(args[:1000]) if self.redactor else args[:1000],
                },
            )
        )
        log.info("%s %s for %s.%s: %s", call.tool, call.op, call.ticket_id, call.task,
                 "ok" if reply.ok else f"{reply.category}: {reply.error}")  # fmt: skip


def _text(result: Any) -> str:
    text = result if isinstance(result, str) else json.dumps(result, indent=1, default=str)
    return text if len(text) <= RESULT_CHARS else text[:RESULT_CHARS] + "\n… (clipped)"

"""The GitHub, Jira and Supabase tools: a coding agent (scripted model, real OpenHands session)
calls them, its worker sends each call over NATS, the delivery agent makes it against the
providers' local stand-ins (a DuckDB database behind the Supabase one) and the answer reaches
the agent. Calls outside the task's tools or the ticket's targets are refused, and said so."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agents.delivery.agent import DeliveryAgent
from agents.scripts.build_demo import create, finish, task
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from schemas import Phase, TaskState, TaskStatus, TicketState
from schemas.delivery import TicketSource
from schemas.integration import IntegrationCall, IntegrationReply
from schemas.task import task_key
from schemas.ticket import TicketStatus
from tests import github_fake, jira_fake, supabase_fake
from tests.github_fake import FakeGitHub
from tests.helpers import EventLog, Running, submit, ticket_finished, wait_until
from tests.integration.agent_support import ModelFactory, Start, with_model
from tests.jira_fake import FakeJira
from tests.supabase_fake import FakeSupabase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ISSUE = {"number": 7, "title": "Rate limit the API", "state": "open",
         "body": "Ten requests a second per client.", "labels": [{"name": "api"}]}  # fmt: skip


@pytest.fixture
def providers(tmp_path: Path) -> Iterator[tuple[FakeGitHub, FakeJira, FakeSupabase]]:
    with (
        FakeGitHub(issues={"acme/app#7": ISSUE}) as github,
        FakeJira(status={"PROJ-7": "To Do", "OTHER-1": "To Do"}) as jira,
        FakeSupabase(tmp_path / "supabase.duckdb") as supabase,
    ):
        github.comments["acme/app#7"] = [{"id": 1, "body": "Please keep it per client.",
                                         "user": {"login": "alice"}}]  # fmt: skip
        yield github, jira, supabase


def configured(
    settings: Settings, github: FakeGitHub, jira: FakeJira, supabase: FakeSupabase
) -> Settings:
    return settings.model_copy(update={
        "github_api_url": github.base_url, "github_token": SecretStr(github_fake.TOKEN),
        "jira_url": jira.base_url, "jira_email": jira_fake.EMAIL,
        "jira_token": SecretStr(jira_fake.TOKEN), "jira_projects": ("PROJ",),
        "supabase_api_url": supabase.base_url, "supabase_project": supabase_fake.PROJECT,
        "supabase_token": SecretStr(supabase_fake.TOKEN),
    })  # fmt: skip


def call(tool: str, **args: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": args}]}


MIGRATION = "create table limits (client text primary key, per_second integer not null default 10)"


async def test_a_coding_agent_reads_comments_and_migrates_through_the_delivery_agent(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
    running: Running,
    providers: tuple[FakeGitHub, FakeJira, FakeSupabase],
) -> None:
    github, jira, supabase = providers
    server = model_server({"conversations": [
        task("implement",
             call("github_read_issue", number=7),
             call("github_comment", number=7, body="Taking this: a limiter per client."),
             call("jira_comment", key="PROJ-7", body="Omoi works on acme/app#7."),
             call("jira_read", key="OTHER-1"),
             call("supabase_migrate", name="add_limits", query=MIGRATION),
             call("supabase_migrate", name="add_limits", query=MIGRATION),
             call("supabase_table_schema", table="limits"),
             create("limiter.py", "RATE = 10\n"),
             finish("Implemented the limiter.")),
    ]})  # fmt: skip
    s = with_model(configured(settings, github, jira, supabase), server, short_dir)
    await start_agents(s)
    await running.start(DeliveryAgent(bus, s))
    spec = {"name": "implement", "phase": "implementation", "capability": "agent",
            "instructions": "Rate limit the API.",
            "tools": ["github", "jira", "supabase"]}  # fmt: skip
    source = {"provider": "github", "repo": "acme/app", "number": 7}
    submitted = {"id": "IT1", "title": "Limits", "tasks": [spec], "source": source}
    assert (await submit(bus, submitted))["ok"]

    done = await wait_until(lambda: ticket_finished(bus, "IT1"), timeout=150)
    assert done.status is TicketStatus.DONE, done.reason

    # GitHub: one comment, marked with its call (a call made again would find it).
    (comment,) = [c for c in github.requests("POST") if c.path.endswith("/comments")]
    assert comment.path == "/repos/acme/app/issues/7/comments"
    assert comment.body["body"].startswith("Taking this: a limiter per client.")
    assert "<!-- omoi:" in comment.body["body"]
    # Jira: the allowed project's issue got the comment; the other project was never asked.
    assert any("Omoi works on acme/app#7." in t for t in jira.texts("PROJ-7"))
    assert not any("OTHER-1" in call.path for call in jira.calls)
    # Supabase: the migration ran once, though it was called twice.
    assert supabase.migrations == [{"version": "20261207000000", "name": "add_limits"}]
    assert supabase.rows("select count(*) from public.limits") == [(0,)]

    called = [e for e in events.events if e.type == "integration.called"]
    outcomes = [(e.data["tool"], e.data["op"], e.data["ok"]) for e in called]
    assert outcomes == [
        ("github", "read_issue", True), ("github", "comment", True), ("jira", "comment", True),
        ("jira", "read", False), ("supabase", "migrate", True), ("supabase", "migrate", True),
        ("supabase", "table_schema", True),
    ]  # fmt: skip
    refused = called[3]
    assert refused.data["category"] == "refused" and "OTHER-1" in refused.data["error"]
    assert refused.task == "implement" and refused.id.startswith("IT1.implement.integration.")

    # The agent read each answer back as its tool's observation.
    seen = json.dumps([r["messages"] for r in server.requests])
    assert "Ten requests a second per client." in seen and "Please keep it per client." in seen
    assert "jira read failed (refused)" in seen
    assert "applied before; left alone" in seen
    assert "per_second" in seen and "INTEGER" in seen
    secrets = (github_fake.TOKEN, jira_fake.TOKEN, supabase_fake.TOKEN)
    assert not any(secret in seen or secret in str([e.data for e in events.events])
                   for secret in secrets)  # fmt: skip


async def ask(bus: Bus, tool: str, op: str, task: str = "code", **args: Any) -> IntegrationReply:
    sent = IntegrationCall(id=uuid.uuid4().hex, ticket_id="IT2", task=task, tool=tool,
                           op=op, args=args)  # type: ignore[arg-type]  # fmt: skip
    raw = await bus.request(c.integration_subject(tool, op), sent.to_json(), 30)
    return IntegrationReply.model_validate_json(raw)


async def test_calls_beyond_the_task_or_the_ticket_are_refused_and_say_why(
    bus: Bus,
    settings: Settings,
    running: Running,
    providers: tuple[FakeGitHub, FakeJira, FakeSupabase],
) -> None:
    github, jira, supabase = providers
    s = configured(settings, github, jira, supabase)
    source = TicketSource(provider="github", repo="acme/app", number=7)
    await bus.tickets.put("IT2", TicketState(id="IT2", title="Limits", source=source))
    for name, tools, status in (("code", ["github", "supabase", "jira"], TaskStatus.RUNNING),
                                ("later", ["github"], TaskStatus.QUEUED)):  # fmt: skip
        state = TaskState(id=task_key("IT2", name), ticket_id="IT2", name=name,
                          phase=Phase.IMPLEMENTATION, capability="agent", tools=tools,
                          status=status)  # fmt: skip
        await bus.tasks.put(state.id, state)
    await running.start(DeliveryAgent(bus, s))

    undeclared = await ask(bus, "jira", "read", task="later", key="PROJ-7")
    assert (undeclared.ok, undeclared.category) == (False, "refused")
    assert "did not declare the jira tool" in (undeclared.error or "")
    read = await ask(bus, "jira", "read", key="PROJ-7")
    assert read.ok and json.loads(read.result)["status"] == "To Do"
    assert json.loads(read.result)["description"] == "What PROJ-7 asks for."
    moved = await ask(bus, "jira", "transition", key="PROJ-7", status="in progress")
    assert moved.ok and jira.status["PROJ-7"] == "In Progress"
    nowhere = await ask(bus, "jira", "transition", key="PROJ-7", status="Shipped")
    assert nowhere.category == "provider" and "no transition" in (nowhere.error or "")
    github.review_comments["acme/app#3"] = [
        {"path": "limit.py", "line": 4, "body": "Use a constant.", "user": {"login": "bob"}}
    ]
    reviewed = await ask(bus, "github", "review_comments", number=3)
    assert json.loads(reviewed.result) == [
        {"path": "limit.py", "line": 4, "body": "Use a constant.", "user": "bob"}
    ]
    waiting = await ask(bus, "github", "read_issue", task="later", number=7)
    assert waiting.category == "refused" and "queued, not running" in (waiting.error or "")
    unknown = await ask(bus, "github", "delete_repository")
    assert unknown.category == "invalid" and "no operation" in (unknown.error or "")
    missing = await ask(bus, "github", "comment", body="no number")
    assert missing.category == "invalid" and "number" in (missing.error or "")
    gone = await ask(bus, "github", "read_issue", number=99)
    assert gone.category == "provider" and "404" in (gone.error or "")
    bad_name = await ask(bus, "supabase", "migrate", name="Drop Everything", query="select 1")
    assert bad_name.category == "invalid" and "snake_case" in (bad_name.error or "")
    injected = await ask(bus, "supabase", "table_schema", table="x'; drop table y; --")
    assert injected.category == "invalid" and "not an identifier" in (injected.error or "")
    failing = await ask(bus, "supabase", "migrate", name="broken", query="create tabel nope")
    assert failing.category == "provider" and "HTTP 400" in (failing.error or "")
    assert supabase.migrations == []
    pull = await ask(bus, "github", "open_pull_request", title="Limits", head="omoi/IT2")
    assert pull.ok and json.loads(pull.result) == {
        "number": 1,
        "url": "https://github.test/acme/app/pull/1",
    }
    assert github.pulls[0]["base"] == {"ref": "main"}  # the repository's default branch
    assert not [c for c in github.calls if "/issues/7/comments" in c.path and c.method == "POST"]


async def test_a_tool_is_unconfigured_when_its_credentials_are_missing(
    bus: Bus, settings: Settings, running: Running
) -> None:
    await bus.tickets.put("IT3", TicketState(id="IT3", title="Limits"))
    state = TaskState(id="IT3.code", ticket_id="IT3", name="code", phase=Phase.IMPLEMENTATION,
                      tools=["github", "jira", "supabase"], status=TaskStatus.RUNNING)  # fmt: skip
    await bus.tasks.put(state.id, state)
    await running.start(DeliveryAgent(bus, settings))
    for tool, op in (("jira", "read"), ("supabase", "table_schema")):
        sent = IntegrationCall(id="u", ticket_id="IT3", task="code", tool=tool, op=op,  # type: ignore[arg-type]
                               args={"key": "PROJ-1", "table": "t"})  # fmt: skip
        raw = await bus.request(c.integration_subject(tool, op), sent.to_json(), 30)
        reply = IntegrationReply.model_validate_json(raw)
        assert (reply.ok, reply.category) == (False, "unconfigured"), reply
    sent = IntegrationCall(id="g", ticket_id="IT3", task="code", tool="github", op="read_issue",
                           args={"number": 1})  # fmt: skip
    raw = await bus.request(c.integration_subject("github", "read_issue"), sent.to_json(), 30)
    reply = IntegrationReply.model_validate_json(raw)
    assert reply.category == "refused" and "no GitHub repository" in (reply.error or "")
    not_a_call = await bus.request(c.integration_subject("github", "x"), b"{}", 30)
    assert IntegrationReply.model_validate_json(not_a_call).category == "invalid"

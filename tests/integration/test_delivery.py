"""Delivery: a finished ticket's branch pushed to a real bare repository on disk, and its
pull request opened on a local GitHub stand-in; refusals become `delivery.failed`, and
`omoi.commands.ticket.deliver` tries again. Real planner, worker, validator and delivery
agents; real git."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agents.delivery.agent import DeliveryAgent
from agents.settings import Settings
from agents.validator.agent import Validator
from bus import Bus
from bus import constants as c
from schemas.delivery import DeliveryStatus
from schemas.ticket import TicketState, TicketStatus
from tests.github_fake import TOKEN, FakeGitHub
from tests.helpers import EventLog, Running, submit, ticket_finished, wait_until
from tests.integration.test_control import command
from tests.integration.test_gates import Start

pytestmark = pytest.mark.integration

TASKS = [
    {"name": "spec", "phase": "requirements", "command": "echo 'rate limits' > SPEC.md"},
    {"name": "code", "phase": "implementation", "command": "echo 'limit = 10' > limit.py"},
]
GATES = {"implementation": {"checks": [{"kind": "file", "path": "limit.py", "contains": "limit"}]}}


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def bare_remote(tmp_path: Path) -> Path:
    """A bare repository with one commit on main: what a team pushes to."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "README").write_text("app\n")
    git(seed, "add", "README")
    git(seed, "commit", "-q", "-m", "first")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    return remote


def branch_of(remote: Path, ticket_id: str) -> str | None:
    code = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/omoi/{ticket_id}"],
        cwd=remote, capture_output=True, text=True,
    )  # fmt: skip
    return code.stdout.strip() or None


def refuse_pushes(remote: Path) -> Path:
    """A pre-receive hook that refuses every push, as a protected branch would."""
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch omoi/* is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    return hook


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def delivering(settings: Settings, github: FakeGitHub) -> Settings:
    return settings.model_copy(
        update={"github_api_url": github.base_url, "github_token": SecretStr(TOKEN)}
    )


async def start_all(bus: Bus, s: Settings, running: Running, start_worker: Start) -> None:
    from agents.planner.agent import Planner

    await running.start(Planner(bus, s))
    await start_worker()
    await running.start(Validator(bus, s, env=dict(os.environ)))
    await running.start(DeliveryAgent(bus, s))


async def delivery_is(bus: Bus, ticket_id: str, status: DeliveryStatus) -> TicketState | None:
    t = await bus.tickets.value(ticket_id)
    ok = t is not None and t.delivery is not None and t.delivery.status is status
    return t if ok else None


def ticket(ticket_id: str, remote: Path, **more: Any) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "title": "Add rate limiting",
        "description": "Limit the API to 10 requests a second.",
        "repository": str(remote),
        "tasks": TASKS,
        "gates": GATES,
        **more,
    }


async def test_a_finished_ticket_is_pushed_as_its_branch_and_a_pull_request_opened(
    bus: Bus,
    tmp_path: Path,
    delivering: Settings,
    github: FakeGitHub,
    events: EventLog,
    running: Running,
    start_worker: Start,
) -> None:
    remote = bare_remote(tmp_path)
    await start_all(bus, delivering, running, start_worker)
    source = {"provider": "github", "repo": "acme/app", "number": 7}
    assert (await submit(bus, ticket("D1", remote, source=source)))["ok"]

    opened = await wait_until(lambda: delivery_is(bus, "D1", DeliveryStatus.OPEN), timeout=40)
    state = opened.delivery
    assert state is not None and state.pull_request is not None
    assert state.pull_request.url == "https://github.test/acme/app/pull/1"
    # The branch is the ticket's head, on the remote; main is untouched.
    assert branch_of(remote, "D1") == state.commit
    assert git(remote, "log", "--format=%s", "main") == "first"
    assert git(remote, "show", f"{state.commit}:limit.py") == "limit = 10"
    # A pull request waits for review: the ticket is not done before it is merged.
    assert opened.status is TicketStatus.RUNNING

    (created,) = github.requests("POST")
    assert created.path == "/repos/acme/app/pulls"
    assert created.headers["x-github-api-version"] == "2022-11-28"
    body = created.body
    assert (body["head"], body["base"]) == ("omoi/D1", "main")
    assert body["title"] == "Add rate limiting (omoi D1)"
    text = body["body"]
    assert "Closes acme/app#7" in text
    assert "### implementation: passed" in text and state.commit[:12] in text
    assert "(file)" in text and "$0.0000" in text and "tokens:" in text
    # It looked for an open one first (so a redelivery opens no second one).
    (listed,) = github.requests("GET")
    assert listed.query == {"head": ["acme:omoi/D1"], "state": ["open"]}

    requested = await events.wait_type("D1", "delivery.requested")
    assert requested.data["github_repo"] == "acme/app"
    reported = await events.wait_type("D1", "delivery.succeeded")
    assert reported.data["pull_request"]["number"] == 1
    assert TOKEN not in str([e.data for e in events.events])


async def test_a_ticket_without_a_github_remote_is_done_once_pushed(
    bus: Bus, tmp_path: Path, settings: Settings, running: Running, start_worker: Start
) -> None:
    remote = bare_remote(tmp_path)
    await start_all(bus, settings, running, start_worker)
    assert (await submit(bus, ticket("D2", remote)))["ok"]
    done = await wait_until(lambda: ticket_finished(bus, "D2"), timeout=40)
    assert done.status is TicketStatus.DONE, done.reason
    assert done.delivery is not None and done.delivery.status is DeliveryStatus.DELIVERED
    assert branch_of(remote, "D2") == done.commit == done.delivery.commit


async def test_a_refused_push_keeps_the_ticket_until_it_is_delivered_again(
    bus: Bus,
    tmp_path: Path,
    settings: Settings,
    events: EventLog,
    running: Running,
    start_worker: Start,
) -> None:
    remote = bare_remote(tmp_path)
    hook = refuse_pushes(remote)
    await start_all(bus, settings, running, start_worker)
    assert (await submit(bus, ticket("D3", remote)))["ok"]

    failed = await events.wait_type("D3", "delivery.failed", timeout=40)
    assert failed.data["category"] == "push_rejected"
    assert "protected" in failed.data["error"]
    kept = await wait_until(lambda: delivery_is(bus, "D3", DeliveryStatus.FAILED))
    assert kept.status is TicketStatus.RUNNING and branch_of(remote, "D3") is None

    # Nothing to retry while it is not failed; once failed, asked again, it goes out.
    hook.unlink()
    reply = await command(bus, c.CMD_TICKET_DELIVER, {"ticket_id": "D3"})
    assert reply["ok"], reply
    done = await wait_until(lambda: ticket_finished(bus, "D3"), timeout=30)
    assert done.status is TicketStatus.DONE, done.reason
    assert done.delivery is not None and done.delivery.attempts == 2
    assert branch_of(remote, "D3") == done.commit
    again = await command(bus, c.CMD_TICKET_DELIVER, {"ticket_id": "D3"})
    assert not again["ok"] and "done" in again["error"]["message"]


async def test_a_failed_pull_request_call_keeps_the_pushed_branch_and_is_retried(
    bus: Bus,
    tmp_path: Path,
    delivering: Settings,
    github: FakeGitHub,
    events: EventLog,
    running: Running,
    start_worker: Start,
) -> None:
    remote = bare_remote(tmp_path)
    github.fail_next = [502, 502, 502]  # every try of the first list call
    await start_all(bus, delivering, running, start_worker)
    source = {"provider": "github", "repo": "acme/app"}
    assert (await submit(bus, ticket("D4", remote, source=source)))["ok"]

    failed = await events.wait_type("D4", "delivery.failed", timeout=40)
    assert failed.data["category"] == "pull_request_failed"
    assert "HTTP 502" in failed.data["error"] and failed.data["pushed"] is True
    assert branch_of(remote, "D4") == failed.data["commit"]
    assert not github.requests("POST")

    assert (await command(bus, c.CMD_TICKET_DELIVER, {"ticket_id": "D4"}))["ok"]
    opened = await wait_until(lambda: delivery_is(bus, "D4", DeliveryStatus.OPEN), timeout=30)
    assert opened.delivery is not None and opened.delivery.pull_request is not None
    assert len(github.requests("POST")) == 1


async def test_deliver_false_keeps_the_result_in_omoi(
    bus: Bus, tmp_path: Path, settings: Settings, running: Running, start_worker: Start
) -> None:
    remote = bare_remote(tmp_path)
    await start_all(bus, settings, running, start_worker)
    assert (await submit(bus, ticket("D5", remote, deliver=False)))["ok"]
    done = await wait_until(lambda: ticket_finished(bus, "D5"), timeout=40)
    assert done.status is TicketStatus.DONE and done.delivery is None
    assert branch_of(remote, "D5") is None
    reply = await command(bus, c.CMD_TICKET_DELIVER, {"ticket_id": "D5"})
    assert not reply["ok"]


async def test_a_plain_submission_may_not_push(
    bus: Bus, tmp_path: Path, start_planner: Start
) -> None:
    await start_planner()
    task = {"name": "a", "phase": "design", "capability": "noop"}
    body = {"id": "D6", "title": "t", "repository": "https://x.test/r.git", "tasks": [task]}
    reply = await submit(bus, body, trusted=False)
    assert not reply["ok"]
    assert "a push to its repository" in reply["error"]["message"]
    assert "deliver: false" in reply["error"]["message"]

"""GitHub end to end: a signed issue webhook starts a ticket, scripted coding agents carry it
through all five phases, its branch lands in a bare repository and a pull request on the
GitHub stand-in; a review becomes a follow-up commit on the same branch, and the merge
ends the ticket. Also what the webhook refuses: a wrong signature, a malformed payload,
a redelivery. Real gateway (on a socket), planner, worker, validator and delivery agent."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agents.delivery.agent import DeliveryAgent
from agents.scripts.build_demo import create, finish, script, task
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from schemas.delivery import DeliveryStatus
from schemas.ticket import TicketStatus
from tests.github_fake import TOKEN, FakeGitHub
from tests.helpers import (
    EventLog,
    Running,
    audit_entries,
    stream_holds,
    ticket_finished,
    wait_until,
)
from tests.integration.agent_support import ModelFactory, Start, with_model
from tests.integration.test_delivery import bare_remote, branch_of, delivery_is, git
from tests.integration.test_gateway import gateway_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECRET = "webhook-secret-for-tests"
REPO = "acme/textkit"
TICKET = "gh-acme-textkit-12"


def hook_settings(settings: Settings, github: FakeGitHub, remotes: Path) -> Settings:
    return settings.model_copy(
        update={
            "github_api_url": github.base_url,
            "github_token": SecretStr(TOKEN),
            "github_webhook_secret": SecretStr(SECRET),
            "github_clone_url": f"{remotes}/{{repo}}.git",
            "github_workflow": "agent",
        }
    )


async def deliver_hook(
    client: httpx.AsyncClient,
    event: str,
    payload: dict[str, Any],
    *,
    secret: str = SECRET,
    delivery: str | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    body = raw if raw is not None else json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }
    return await client.post("/api/v1/webhooks/github", content=body, headers=headers)


def labeled(number: int = 12, label: str = "omoi") -> dict[str, Any]:
    return {
        "action": "labeled",
        "label": {"name": label},
        "issue": {
            "number": number,
            "title": "Add slugify",
            "body": "textkit needs slugify(text).",
            "html_url": f"https://github.com/{REPO}/issues/{number}",
        },
        "repository": {"full_name": REPO},
    }


def pull(merged: bool = False, action: str = "closed") -> dict[str, Any]:
    return {
        "action": action,
        "pull_request": {"number": 1, "merged": merged, "head": {"ref": f"omoi/{TICKET}"}},
    }


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


async def test_an_issue_becomes_a_pull_request_that_a_review_updates_and_a_merge_ends(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    tmp_path: Path,
    short_dir: Path,
    model_server: ModelFactory,
    github: FakeGitHub,
    running: Running,
    start_agents: Start,
) -> None:
    remotes = tmp_path / "remotes"
    (remotes / "acme").mkdir(parents=True)
    remote = bare_remote(remotes / "acme")
    remote.rename(remotes / "acme" / "textkit.git")
    remote = remotes / "acme" / "textkit.git"
    demo = script()
    demo["conversations"].append(
        task(
            "review-77",
            create("CHANGELOG.md", "# 0.1.0\n\n- slugify\n"),
            finish("Added CHANGELOG.md as the review asked."),
        )
    )
    s = hook_settings(with_model(settings, model_server(demo), short_dir), github, remotes)
    await start_agents(s)
    await running.start(DeliveryAgent(bus, s))

    async with gateway_client(s, bus) as client:
        answer = await deliver_hook(client, "issues", labeled())
        assert answer.status_code == 202, answer.text
        assert answer.json()["ticket_id"] == TICKET

        opened = await wait_until(
            lambda: delivery_is(bus, TICKET, DeliveryStatus.OPEN), timeout=200
        )
        assert opened.source is not None and opened.source.number == 12
        first = opened.delivery
        assert first is not None and first.pull_request is not None
        assert branch_of(remote, TICKET) == first.commit
        (created,) = github.requests("POST")
        text = created.body["body"]
        assert f"Closes {REPO}#12" in text
        for phase in ("requirements", "design", "implementation", "testing", "deployment"):
            assert f"### {phase}: passed" in text
        assert "tokens:" in text and "cost: $" in text

        # A review asking for changes: a follow-up on the same branch, the same PR.
        review = {
            "action": "submitted",
            "review": {"id": 77, "state": "changes_requested", "body": "Add a CHANGELOG.",
                       "user": {"login": "octocat"}},
            **{k: v for k, v in pull(action="submitted").items() if k != "action"},
        }  # fmt: skip
        answer = await deliver_hook(client, "pull_request_review", review)
        assert answer.status_code == 202, answer.text
        assert answer.json()["outcome"] == "command"
        follow_up = await bus.tasks.value(f"{TICKET}.review-77")
        assert follow_up is not None and "Add a CHANGELOG." in (follow_up.instructions or "")

        async def pushed_again() -> str | None:
            t = await bus.tickets.value(TICKET)
            d = t.delivery if t is not None else None
            ok = d is not None and d.status is DeliveryStatus.OPEN and d.attempts == 2
            return d.commit if ok and d is not None else None

        second = await wait_until(pushed_again, timeout=120)
        assert second != first.commit and branch_of(remote, TICKET) == second
        git(remote, "merge-base", "--is-ancestor", str(first.commit), str(second))
        assert git(remote, "show", f"{second}:CHANGELOG.md").startswith("# 0.1.0")
        assert len(github.requests("POST")) == 1  # the push updated the open PR

        answer = await deliver_hook(client, "pull_request", pull(merged=True))
        assert answer.status_code == 202, answer.text
        done = await wait_until(lambda: ticket_finished(bus, TICKET), timeout=30)
        assert done.status is TicketStatus.DONE, done.reason
        assert done.delivery is not None and done.delivery.status is DeliveryStatus.DELIVERED
    await events.wait_type(TICKET, "ticket.done")


async def test_the_webhook_refuses_what_is_not_githubs_and_what_it_cannot_read(
    bus: Bus,
    settings: Settings,
    tmp_path: Path,
    github: FakeGitHub,
    start_planner: Start,
) -> None:
    await start_planner()
    s = hook_settings(settings, github, tmp_path)
    async with gateway_client(s, bus) as client:
        wrong = await deliver_hook(client, "issues", labeled(), secret="not-the-secret")
        assert wrong.status_code == 401
        bad = await deliver_hook(client, "issues", {}, raw=b'{"action": "labeled"}')
        assert bad.status_code == 400 and "not a issues event" in bad.json()["detail"]
        not_json = await deliver_hook(client, "issues", {}, raw=b"<xml/>")
        assert not_json.status_code == 400
        unlabeled = await deliver_hook(client, "issues", labeled(label="bug"))
        assert unlabeled.json()["outcome"] == "ignored"
        other = await deliver_hook(client, "pull_request", pull() | {
            "pull_request": {"number": 3, "head": {"ref": "feature"}}})  # fmt: skip
        assert other.json()["outcome"] == "ignored"

        # A redelivery (GitHub resends with the same id) is taken once.
        once = await deliver_hook(client, "issues", labeled(number=5), delivery="d-5")
        assert once.status_code == 202 and once.json()["outcome"] == "ticket"
        twice = await deliver_hook(client, "issues", labeled(number=5), delivery="d-5")
        assert twice.json()["outcome"] == "duplicate"

    unset = s.model_copy(update={"github_webhook_secret": SecretStr("")})
    async with gateway_client(unset, bus) as client:
        off = await deliver_hook(client, "issues", labeled(), secret="")
        assert off.status_code == 404  # an empty secret signs nothing

    assert await bus.tickets.value(TICKET) is None  # neither refusal made a ticket
    assert await bus.tickets.value("gh-acme-textkit-5") is not None
    entries = await wait_until(lambda: _webhook_entries(bus, 7))
    outcomes = sorted(e.outcome.value for e in entries)
    assert outcomes.count("denied") == 1 and outcomes.count("rejected") == 2
    assert await stream_holds(bus, c.DLQ_STREAM, 2)


async def _webhook_entries(bus: Bus, n: int) -> list[Any] | None:
    found = await audit_entries(bus, "webhook")
    return found if len(found) >= n else None

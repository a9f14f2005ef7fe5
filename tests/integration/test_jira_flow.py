"""Jira end to end: an issue moved to the configured status (a signed admin webhook) becomes
a ticket; as it passes its phases Omoi comments on the issue, once per event, and moves it
to In Progress and then Done; its branch is pushed to the project's repository. Real
gateway, planner, worker, delivery agent; the Jira stand-in implements the REST calls."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agents.delivery.agent import DeliveryAgent
from agents.settings import Settings
from bus import Bus
from schemas.ticket import TicketStatus
from tests.helpers import Running, ticket_finished, wait_until
from tests.integration.agent_support import Start
from tests.integration.test_delivery import bare_remote, branch_of
from tests.integration.test_gateway import gateway_client
from tests.jira_fake import EMAIL, TOKEN, FakeJira

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET = "jira-webhook-secret"


def moved(key: str = "PROJ-7", to: str = "Ready for Omoi") -> dict[str, Any]:
    paragraph = {"type": "paragraph", "content": [{"type": "text", "text": "Limit the API."}]}
    description = {"type": "doc", "version": 1, "content": [paragraph]}
    return {
        "webhookEvent": "jira:issue_updated",
        "issue": {"key": key, "fields": {"summary": "Add rate limiting",
                                         "description": description, "status": {"name": to}}},
        "changelog": {"items": [{"field": "status", "fromString": "To Do", "toString": to}]},
    }  # fmt: skip


async def hook(
    client: httpx.AsyncClient, payload: dict[str, Any], *, secret: str = SECRET,
    delivery: str = "d-1", raw: bytes | None = None,
) -> httpx.Response:  # fmt: skip
    body = raw if raw is not None else json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature": signature, "X-Atlassian-Webhook-Identifier": delivery,
               "Content-Type": "application/json"}  # fmt: skip
    return await client.post("/api/v1/webhooks/jira", content=body, headers=headers)


async def test_a_jira_issue_becomes_a_ticket_and_hears_how_it_goes(
    bus: Bus, settings: Settings, tmp_path: Path, running: Running, start_worker: Start
) -> None:
    from agents.planner.agent import Planner

    remotes = tmp_path / "remotes"
    remotes.mkdir()
    bare_remote(remotes).rename(remotes / "PROJ.git")
    with FakeJira(status={"PROJ-7": "Ready for Omoi"}) as jira:
        s = settings.model_copy(update={
            "jira_url": jira.base_url, "jira_email": EMAIL, "jira_token": SecretStr(TOKEN),
            "jira_webhook_secret": SecretStr(SECRET), "jira_status": "Ready for Omoi",
            "jira_repository": f"{remotes}/{{project}}.git",
        })  # fmt: skip
        await running.start(Planner(bus, s))
        await start_worker()
        await running.start(DeliveryAgent(bus, s))
        async with gateway_client(s, bus) as client:
            assert (await hook(client, moved(), secret="wrong")).status_code == 401
            assert (await hook(client, {}, raw=b"{}", delivery="d-0")).status_code == 400
            other = await hook(client, moved("PROJ-8", "In Review"), delivery="d-2")
            assert other.json()["outcome"] == "ignored"
            answer = await hook(client, moved())
            assert answer.status_code == 202, answer.text
            assert answer.json()["ticket_id"] == "jira-PROJ-7"
            assert (await hook(client, moved())).json()["outcome"] == "duplicate"

        done = await wait_until(lambda: ticket_finished(bus, "jira-PROJ-7"), timeout=60)
        assert done.status is TicketStatus.DONE, done.reason
        assert done.description == "Limit the API."
        assert branch_of(remotes / "PROJ.git", "jira-PROJ-7") == done.commit

        async def finished_told() -> list[str] | None:
            texts = jira.texts("PROJ-7")
            return texts if any("finished ticket" in t for t in texts) else None

        texts = await wait_until(finished_told, timeout=30)
        assert "took this issue as ticket jira-PROJ-7" in texts[0]
        assert any("requirements" in t and "design" in t for t in texts)
        assert any("pushed branch omoi/jira-PROJ-7" in t for t in texts)
        markers = [m for t in texts for m in re.findall(r"\[omoi:[^\]]+\]", t)]
        assert len(markers) == len(set(markers)) == len(texts)  # each event told once

        # The comment is made before the transition: wait for the issue to be moved too.
        async def moved_done() -> bool:
            return jira.status["PROJ-7"] == "Done"

        assert await wait_until(moved_done, timeout=30)
        assert "PROJ-8" not in jira.comments

"""Jira deliveries read as Atlassian documents them, and what an issue is told when."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents.delivery.jira import document, marker
from agents.delivery.tracker import Report, Statuses, report
from gateway.github_hooks import Ignore, MalformedDelivery, Submit
from gateway.jira_hooks import JiraConfig, decide, text_of
from schemas import Event, EventType
from schemas.delivery import TicketSource
from schemas.ticket import TicketState

CONFIG = JiraConfig(status="Ready for Omoi", repository="git@example.com:{project}.git",
                    site="https://acme.atlassian.net")  # fmt: skip


def updated(status: str = "Ready for Omoi", field: str = "status", **issue: Any) -> bytes:
    fields = {"summary": "Add limits", "status": {"name": status}, **issue}
    return json.dumps({
        "webhookEvent": "jira:issue_updated",
        "issue": {"key": "OPS-12", "fields": fields},
        "changelog": {"items": [{"field": field, "toString": status}]},
    }).encode()  # fmt: skip


def test_an_issue_moved_to_the_status_becomes_a_ticket_of_its_project() -> None:
    decided = decide(updated(description="Plain v2 text"), CONFIG)
    assert isinstance(decided, Submit) and decided.ticket_id == "jira-OPS-12"
    s = decided.submission
    assert (s.title, s.description, s.repository) == ("Add limits", "Plain v2 text",
                                                      "git@example.com:OPS.git")  # fmt: skip
    assert s.source is not None and s.source.url == "https://acme.atlassian.net/browse/OPS-12"
    assert isinstance(decide(updated("In Review"), CONFIG), Ignore)
    # Already in the status, another field changed: not newly there.
    assert isinstance(decide(updated(field="summary"), CONFIG), Ignore)


def test_an_atlassian_document_becomes_text() -> None:
    adf = document("first line\nsecond line")
    assert text_of(adf) == "first line\nsecond line"
    assert text_of(None) == ""


@pytest.mark.parametrize("body", [b"nope", b"{}", b'{"webhookEvent": "jira:issue_updated"}'])
def test_what_is_no_issue_event_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedDelivery):
        decide(body, CONFIG)


def test_the_issue_hears_the_start_the_phases_the_push_and_the_end() -> None:
    ticket = TicketState(id="jira-OPS-12", title="t", reason="all phases complete",
                         source=TicketSource(provider="jira", key="OPS-12"))  # fmt: skip
    statuses = Statuses()

    def told(kind: EventType, **data: Any) -> Report | None:
        return report(Event(id="e", type=kind, ticket_id=ticket.id, data=data), ticket, statuses)

    assert told(EventType.TICKET_CREATED) == Report(
        "Omoi took this issue as ticket jira-OPS-12.", "In Progress"
    )
    phase = told(EventType.TICKET_PHASE_CHANGED, **{"from": "design", "to": "testing"})
    assert phase is not None and "design → testing" in phase.comment and phase.move_to is None
    pushed = told(EventType.DELIVERY_SUCCEEDED, branch="omoi/x", commit="a" * 40)
    assert pushed is not None and "omoi/x" in pushed.comment
    done = told(EventType.TICKET_DONE)
    assert done is not None and done.move_to == "Done"
    assert told(EventType.TASK_STARTED) is None
    github = ticket.model_copy(update={"source": TicketSource(provider="github", repo="o/r")})
    assert (
        report(Event(id="e", type=EventType.TICKET_DONE, ticket_id="x"), github, statuses) is None
    )
    assert marker("t.ticket.done.5") == "[omoi:t.ticket.done.5]"

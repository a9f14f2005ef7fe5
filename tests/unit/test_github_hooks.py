"""GitHub webhook deliveries read as GitHub documents them: the signature, and what each
event asks of Omoi."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from bus import constants as c
from gateway.github_hooks import (
    Command,
    HookConfig,
    Ignore,
    MalformedDelivery,
    RecentDeliveries,
    Submit,
    decide,
    signed,
    ticket_id_for,
)

CONFIG = HookConfig(label="omoi", clone_url="https://github.com/{repo}.git", workflow="agent")


def hook(event: str, payload: dict[str, Any]) -> Any:
    return decide(event, json.dumps(payload).encode(), CONFIG)


def test_the_signature_is_the_hmac_of_the_raw_body() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    good = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signed("s3cret", body, good)
    assert not signed("s3cret", body + b" ", good)
    assert not signed("other", body, good)
    assert not signed("s3cret", body, None)
    assert not signed("s3cret", body, good.removeprefix("sha256="))


def test_a_labeled_issue_becomes_a_trusted_ticket_with_a_deterministic_id() -> None:
    payload = {
        "action": "labeled",
        "label": {"name": "omoi"},
        "issue": {"number": 12, "title": " Add slugify ", "body": None, "html_url": "u"},
        "repository": {"full_name": "acme/text.kit"},
    }
    decided = hook("issues", payload)
    assert isinstance(decided, Submit)
    assert decided.ticket_id == "gh-acme-text-kit-12"
    s = decided.submission
    assert (s.title, s.description, s.workflow) == ("Add slugify", "", "agent")
    assert s.repository == "https://github.com/acme/text.kit.git"
    assert s.source is not None and (s.source.repo, s.source.number) == ("acme/text.kit", 12)
    assert isinstance(hook("issues", {**payload, "label": {"name": "bug"}}), Ignore)
    assert isinstance(hook("issues", {**payload, "action": "opened"}), Ignore)


def test_a_closed_omoi_pull_request_ends_its_ticket() -> None:
    pr = {"number": 4, "merged": True, "head": {"ref": "omoi/T-9"}}
    merged = hook("pull_request", {"action": "closed", "pull_request": pr})
    assert isinstance(merged, Command) and merged.subject == c.CMD_TICKET_PULL_REQUEST
    assert (merged.update.ticket_id, merged.update.action) == ("T-9", "merged")
    closed = hook("pull_request", {"action": "closed", "pull_request": {**pr, "merged": False}})
    assert isinstance(closed, Command) and closed.update.action == "closed"
    opened = hook("pull_request", {"action": "opened", "pull_request": pr})
    assert isinstance(opened, Ignore)
    foreign = {**pr, "head": {"ref": "feature/x"}}
    assert isinstance(hook("pull_request", {"action": "closed", "pull_request": foreign}), Ignore)


def test_reviews_asking_for_changes_and_review_comments_become_follow_ups() -> None:
    pr = {"number": 4, "head": {"ref": "omoi/T-9"}}
    review = {"id": 7, "state": "changes_requested", "body": "Rename it", "user": {"login": "o"}}
    asked = hook(
        "pull_request_review", {"action": "submitted", "review": review, "pull_request": pr}
    )
    assert isinstance(asked, Command)
    assert (asked.update.action, asked.update.review_id, asked.update.author) == ("review", 7, "o")
    approved = {**review, "state": "approved"}
    ok = hook(
        "pull_request_review", {"action": "submitted", "review": approved, "pull_request": pr}
    )
    assert isinstance(ok, Ignore)
    comment = {"id": 8, "body": "typo", "path": "a.py", "line": 3}
    noted = hook("pull_request_review_comment",
                 {"action": "created", "comment": comment, "pull_request": pr})  # fmt: skip
    assert isinstance(noted, Command) and noted.update.body.startswith("On a.py, line 3:")


def test_a_comment_in_an_omoi_pull_requests_conversation_becomes_a_follow_up() -> None:
    pr = {"number": 4, "title": "Add rate limiting (omoi T-9)", "pull_request": {"url": "u"},
          "html_url": "https://github.test/acme/app/pull/4"}  # fmt: skip

    def said(body: str, user: dict[str, str] | None = None, **issue: Any) -> Any:
        comment = {"id": 11, "body": body, "user": user or {"login": "alice", "type": "User"}}
        return hook("issue_comment", {"action": "created", "issue": {**pr, **issue},
                                      "comment": comment})  # fmt: skip

    asked = said("Please also cover the admin API.")
    assert isinstance(asked, Command) and asked.subject == c.CMD_TICKET_PULL_REQUEST
    update = asked.update
    assert (update.ticket_id, update.number, update.review_id) == ("T-9", 4, 11)
    assert (update.action, update.author) == ("review", "alice")
    assert update.body == "Please also cover the admin API."
    # Omoi's own comments (its marker), bots', plain issues' and other PRs' are not asked.
    assert isinstance(said("Taking this.\n\n<!-- omoi:abc -->"), Ignore)
    assert isinstance(said("LGTM", {"login": "ci[bot]", "type": "Bot"}), Ignore)
    assert isinstance(said("hm", pull_request=None), Ignore)
    assert isinstance(said("hm", title="Someone else's change"), Ignore)
    assert isinstance(said("   "), Ignore)


def test_a_long_ticket_title_keeps_the_omoi_suffix_its_comments_are_routed_by() -> None:
    from agents.delivery.body import TITLE_MAX, title
    from schemas.ticket import TicketState

    made = title(TicketState(id="T-9", title="x" * 400))
    assert len(made) <= TITLE_MAX and made.endswith(" (omoi T-9)")


@pytest.mark.parametrize(
    ("event", "body"),
    [
        ("issues", b"not json"),
        ("issues", b"[1, 2]"),
        ("issues", b'{"action": "labeled"}'),
        ("pull_request", b'{"action": "closed", "pull_request": {"number": "x"}}'),
    ],
)
def test_a_delivery_that_is_not_its_event_is_malformed(event: str, body: bytes) -> None:
    with pytest.raises(MalformedDelivery):
        decide(event, body, CONFIG)


def test_other_events_are_acknowledged_and_ignored() -> None:
    assert isinstance(hook("ping", {"zen": "z"}), Ignore)
    assert isinstance(hook("star", {"action": "created"}), Ignore)


def test_ids_stay_within_the_rules_and_redeliveries_are_seen() -> None:
    assert len(ticket_id_for("o" * 100 + "/" + "r" * 100, 1)) <= 64
    seen = RecentDeliveries(limit=2)
    assert seen.first("a") and not seen.first("a")
    assert seen.first("b") and seen.first("c")
    assert seen.first("a")  # forgotten beyond the limit: ids keep a repeat harmless
    seen.forget("a")
    assert seen.first("a")

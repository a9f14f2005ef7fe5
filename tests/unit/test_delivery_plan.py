"""Delivery decided from state: when a ticket's end waits for its push, how a report and a
pull request's fate are folded in, what `omoi ticket deliver` may retry, and the pull
request's body."""

from __future__ import annotations

import pytest

from agents.delivery import body
from agents.errors import CommandError
from agents.planner import delivery
from agents.planner.reconcile import plan
from schemas import Phase, PullRequestUpdate, TaskResult, TaskState, TaskStatus, TicketStatus
from schemas.delivery import DeliveryReport, DeliveryState, DeliveryStatus, TicketSource
from schemas.ticket import TicketState
from schemas.usage import Usage

COMMIT = "a" * 40


def ticket(**fields: object) -> TicketState:
    base = {"id": "T1", "title": "Add limits", "repository": "/srv/r.git", "deliver": True}
    return TicketState.model_validate({**base, "phase": Phase.DEPLOYMENT, **fields})


def done_task(name: str = "code", phase: Phase = Phase.DEPLOYMENT) -> TaskState:
    return TaskState(
        id=f"T1.{name}",
        ticket_id="T1",
        name=name,
        phase=phase,
        status=TaskStatus.SUCCEEDED,
        result=TaskResult(commit=COMMIT, summary="made it"),
        usage=Usage(prompt_tokens=100, completion_tokens=20, cost_usd=0.5, iterations=3),
    )


def at(status: DeliveryStatus, **fields: object) -> DeliveryState:
    return DeliveryState.model_validate({"attempts": 1, "status": status, **fields})


def test_a_finished_ticket_that_delivers_asks_for_its_push_instead_of_ending() -> None:
    decided = plan(ticket(), {"code": done_task()})
    assert decided.request_delivery and decided.finish is None and not decided.transitions


@pytest.mark.parametrize("status", [DeliveryStatus.PENDING, DeliveryStatus.OPEN,
                                    DeliveryStatus.FAILED])  # fmt: skip
def test_a_ticket_waits_while_its_delivery_is_out_open_or_failed(status: DeliveryStatus) -> None:
    assert plan(ticket(delivery=at(status)), {"code": done_task()}).empty


def test_delivered_ends_the_ticket_done_and_closed_ends_it_cancelled() -> None:
    tasks = {"code": done_task()}
    done = plan(ticket(delivery=at(DeliveryStatus.DELIVERED)), tasks)
    assert done.finish is TicketStatus.DONE and done.transitions[-1].to is Phase.DONE
    closed = plan(ticket(delivery=at(DeliveryStatus.CLOSED)), tasks)
    assert closed.finish is TicketStatus.CANCELLED and "closed" in closed.reason


def test_nothing_to_push_or_deliver_false_ends_the_ticket_as_before() -> None:
    assert plan(ticket(), {}).finish is TicketStatus.DONE  # no commit of any task
    assert plan(ticket(deliver=False), {"code": done_task()}).finish is TicketStatus.DONE


def test_a_report_is_folded_in_once_and_only_for_its_attempt() -> None:
    t = ticket()
    delivery.mark_pending(t, COMMIT)
    assert t.delivery is not None and t.delivery.branch == "omoi/T1"
    report = DeliveryReport(
        ticket_id="T1", attempt=1, delivered=False, branch="omoi/T1", commit=COMMIT,
        remote="/srv/r.git", error="refused", category="push_rejected",
    )  # fmt: skip
    stale = report.model_copy(update={"attempt": 2})
    assert delivery.apply_report(t, stale) is None
    after = delivery.apply_report(t, report)
    assert after is not None and after.delivery is not None
    assert (after.delivery.status, after.delivery.category) == (
        DeliveryStatus.FAILED,
        "push_rejected",
    )
    assert delivery.apply_report(after, report) is None  # applied already


def test_only_a_failed_delivery_is_retried() -> None:
    failed = ticket(delivery=at(DeliveryStatus.FAILED, error="x"))
    again = delivery.retried(failed)
    assert again is not None and again.delivery is not None
    assert again.delivery.status is DeliveryStatus.NONE
    assert delivery.retried(ticket(delivery=at(DeliveryStatus.PENDING))) is None
    for refused in (
        ticket(delivery=at(DeliveryStatus.OPEN)),
        ticket(deliver=False),
        ticket(status=TicketStatus.DONE),
    ):
        with pytest.raises(CommandError):
            delivery.retried(refused)


def test_a_review_adds_one_follow_up_on_the_head_and_asks_for_the_delivery_again() -> None:
    t = ticket(delivery=at(DeliveryStatus.OPEN, pull_request={"number": 4, "url": "u"}))
    update = PullRequestUpdate(ticket_id="T1", action="review", review_id=9, body="Rename x")
    task = delivery.review_task(t, {"code": done_task()}, update)
    assert (task.name, task.phase, task.depends_on) == ("review-9", Phase.DEPLOYMENT, ["code"])
    assert "Rename x" in (task.instructions or "")
    after = delivery.reopened(t, task)
    assert after is not None and after.delivery is not None and "review-9" in after.tasks
    assert after.delivery.status is DeliveryStatus.NONE
    assert after.delivery.pull_request is not None  # the same pull request, updated
    assert delivery.reopened(after, task) is None


def test_a_merge_delivers_and_a_close_ends() -> None:
    t = ticket(delivery=at(DeliveryStatus.OPEN))
    merged = PullRequestUpdate(ticket_id="T1", action="merged")
    after = delivery.pull_request_ended(t, merged)
    assert after is not None and after.delivery is not None
    assert after.delivery.status is DeliveryStatus.DELIVERED
    assert delivery.pull_request_ended(after, merged) is None
    with pytest.raises(CommandError):
        delivery.pull_request_ended(ticket(), merged)  # never delivered


@pytest.mark.parametrize(
    ("repository", "repo"),
    [
        ("https://github.com/acme/app.git", "acme/app"),
        ("https://github.com/acme/app", "acme/app"),
        ("git@github.com:acme/app.git", "acme/app"),
        ("ssh://git@github.com/acme/app.git", "acme/app"),
        ("https://gitlab.com/acme/app.git", None),
        ("/srv/app.git", None),
    ],
)
def test_the_github_repository_comes_from_the_url_or_the_source(
    repository: str, repo: str | None
) -> None:
    assert delivery.github_repo(ticket(repository=repository)) == repo
    sourced = ticket(repository=repository, source=TicketSource(provider="github", repo="o/r"))
    assert delivery.github_repo(sourced) == "o/r"


def test_the_body_carries_summaries_evidence_and_spend_and_fits_githubs_limit() -> None:
    t = ticket(source=TicketSource(provider="github", repo="acme/app", number=3))
    text = body.body(t, [done_task(), done_task("docs", Phase.DESIGN)])
    assert "Closes acme/app#3" in text
    assert "### deployment" in text and "- code: made it" in text
    assert "tokens: 240" in text and "cost: $1.0000" in text and "agent steps: 6" in text
    huge = ticket(description="x" * 100_000)
    assert len(body.body(huge, [])) <= body.MAX_BODY
    assert len(body.title(ticket(title="t" * 300))) <= body.TITLE_MAX

"""Delivery from the planner's side: ask for a finished ticket's push, and fold in the report.

A ticket that delivers (`TicketState.deliver`: it has a repository, and did not say
`deliver: false`) does not finish when its last phase does. Its head commit is pushed to
the repository as `omoi/<ticket>` by the delivery agent first, which also opens a pull
request when the repository is on GitHub. The ticket then:
- is done once the push is in (no pull request), or once its pull request is merged;
- waits while its pull request is open for review;
- waits with its branch kept when the delivery failed, until `omoi ticket deliver`;
- is cancelled when its pull request is closed without merging.

Like a gate, the request's state is written first (`pending`, the attempt counted) and
the request published second; the sweep sends again a request that went missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agents.errors import CommandError
from agents.planner.merges import leaves
from bus import Bus
from bus.constants import delivery_subject
from schemas import Event, EventType, PullRequestUpdate, TaskState, utcnow
from schemas.delivery import (
    DeliveryReport,
    DeliveryRequest,
    DeliveryState,
    DeliveryStatus,
    branch_for,
)
from schemas.task import task_key
from schemas.ticket import GateStatus, TicketState

# A repository on github.com, by URL or scp-like address: owner/name.
_GITHUB = re.compile(
    r"^(?:(?:https?|ssh|git)://(?:[^@/\s]+@)?github\.com/|git@github\.com:)"
    r"(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$"
)
# Who addresses a review: a coding agent, on top of what was delivered.
REVIEW_CAPABILITY = "agent"
REVIEW_ORIGIN = "review:"


def status(ticket: TicketState) -> DeliveryStatus:
    return ticket.delivery.status if ticket.delivery is not None else DeliveryStatus.NONE


def marks(ticket: TicketState) -> tuple[int, DeliveryStatus]:
    """What a decision about the delivery was made on (compare-and-set)."""
    return (ticket.delivery.attempts if ticket.delivery else 0, status(ticket))


def github_repo(ticket: TicketState) -> str | None:
    """The GitHub repository a pull request is opened on: the issue's the ticket came
    from, else the one its repository address names; None for any other remote."""
    if ticket.source is not None and ticket.source.provider == "github":
        return ticket.source.repo
    found = _GITHUB.match(ticket.repository or "")
    return found["repo"] if found else None


def mark_pending(ticket: TicketState, commit: str) -> None:
    state = ticket.delivery or DeliveryState()
    state.attempts += 1
    state.status = DeliveryStatus.PENDING
    state.branch = branch_for(ticket.id)
    state.commit = commit
    state.error = state.category = None
    state.resent = 0
    ticket.delivery = state


def mark_resent(ticket: TicketState, judged: DeliveryState) -> TicketState | None:
    """The ticket with its lost request counted as sent again, if it is still pending
    as it was judged lost."""
    state = ticket.delivery
    if (
        state is None
        or state.status is not DeliveryStatus.PENDING
        or (state.attempts, state.resent) != (judged.attempts, judged.resent)
    ):
        return None
    state.resent += 1
    ticket.updated_at = utcnow()
    return ticket


def build_request(ticket: TicketState) -> DeliveryRequest:
    state = ticket.delivery
    assert state is not None
    assert state.commit is not None
    assert ticket.repository is not None
    return DeliveryRequest(
        ticket_id=ticket.id,
        attempt=state.attempts,
        commit=state.commit,
        branch=state.branch or branch_for(ticket.id),
        repository=ticket.repository,
        github_repo=github_repo(ticket),
        pull_request=state.pull_request,
    )


def msg_id(ticket_id: str, attempt: int, resent: int = 0) -> str:
    base = f"delivery.{ticket_id}.{attempt}"
    return f"{base}.resent{resent}" if resent else base


async def publish_request(
    bus: Bus, request: DeliveryRequest, agent_id: str, *, resent: int = 0
) -> None:
    await bus.enqueue(
        delivery_subject(request.ticket_id),
        request.to_json(),
        msg_id(request.ticket_id, request.attempt, resent),
        request.ticket_id,
    )
    await bus.publish_event(
        Event(
            id=f"{request.ticket_id}.delivery.{request.attempt}.requested",
            type=EventType.DELIVERY_REQUESTED,
            ticket_id=request.ticket_id,
            agent=agent_id,
            data=request.model_dump(mode="json"),
        )
    )


def apply_report(ticket: TicketState, report: DeliveryReport) -> TicketState | None:
    """The ticket after a delivery report (None when it is stale or already applied)."""
    state = ticket.delivery
    if (
        state is None
        or state.status is not DeliveryStatus.PENDING
        or state.attempts != report.attempt
    ):
        return None
    state.remote = report.remote
    if report.pull_request is not None:
        state.pull_request = report.pull_request
    if report.delivered:
        state.status = DeliveryStatus.OPEN if state.pull_request else DeliveryStatus.DELIVERED
    else:
        state.status = DeliveryStatus.FAILED
        state.error = report.error
        state.category = report.category
    ticket.updated_at = utcnow()
    return ticket


def retried(ticket: TicketState) -> TicketState | None:
    """`omoi ticket deliver`: a failed delivery asked for again (None: it already is).
    CommandError when the ticket has nothing to deliver again."""
    now = status(ticket)
    if ticket.status.terminal:
        raise CommandError(f"ticket {ticket.id} is {ticket.status.value}", "invalid_state")
    if not ticket.deliver:
        raise CommandError(
            f"ticket {ticket.id} does not deliver (it has no repository, or said deliver: false)",
            "invalid_state",
        )
    if now in (DeliveryStatus.NONE, DeliveryStatus.PENDING):
        return None  # asked for, or about to be: nothing to add
    if now is not DeliveryStatus.FAILED:
        raise CommandError(
            f"ticket {ticket.id}'s delivery is {now.value}, not failed: nothing to retry",
            "invalid_state",
        )
    assert ticket.delivery is not None
    ticket.delivery.status = DeliveryStatus.NONE
    ticket.updated_at = utcnow()
    return ticket


def _reviewable(ticket: TicketState) -> DeliveryState:
    if ticket.status.terminal:
        raise CommandError(f"ticket {ticket.id} is {ticket.status.value}", "already_finished")
    if not ticket.deliver or ticket.delivery is None:
        raise CommandError(f"ticket {ticket.id} has not been delivered", "invalid_state")
    return ticket.delivery


def pull_request_ended(ticket: TicketState, update: PullRequestUpdate) -> TicketState | None:
    """A merged pull request delivers the ticket (its reconcile makes it done); a closed one
    ends it (cancelled). None when that is already so."""
    state = _reviewable(ticket)
    now = DeliveryStatus.DELIVERED if update.action == "merged" else DeliveryStatus.CLOSED
    if state.status is now:
        return None
    state.status = now
    ticket.updated_at = utcnow()
    return ticket


def review_task(
    ticket: TicketState, tasks: Mapping[str, TaskState], update: PullRequestUpdate
) -> TaskState:
    """The follow-up task a review asks for: in the ticket's last phase, on top of its
    head, named by the review (so the same review twice is one task)."""
    _reviewable(ticket)
    name = f"review-{update.review_id}"
    phase = ticket.phase
    who = f" by {update.author}" if update.author else ""
    where = f" #{update.number}" if update.number else ""
    return TaskState(
        id=task_key(ticket.id, name),
        ticket_id=ticket.id,
        name=name,
        phase=phase,
        capability=REVIEW_CAPABILITY,
        instructions=(
            f"The pull request{where} of this ticket was reviewed{who}. Make the changes the "
            "review asks for, in this working directory, on top of the delivered work; keep "
            "everything else as it is.\n\n## The review\n\n" + (update.body.strip() or "(no text)")
        ),
        depends_on=[t.name for t in leaves(tasks, phase)],
        max_retries=1,
        origin=f"{REVIEW_ORIGIN}{update.review_id}",
    )


def reopened(ticket: TicketState, task: TaskState) -> TicketState | None:
    """The ticket with a review's follow-up added: its last phase's gate is checked again,
    and the delivery asked for again once the follow-up is done (the same branch, the
    same pull request). None when the follow-up was added before."""
    state = _reviewable(ticket)
    if task.name in ticket.tasks:
        return None
    ticket.tasks.append(task.name)
    gate = ticket.gates.get(task.phase)
    if gate is not None:
        gate.status = GateStatus.NONE
    state.status = DeliveryStatus.NONE
    ticket.updated_at = utcnow()
    return ticket

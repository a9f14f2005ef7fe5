"""Telling the tracker a ticket came from how it goes: Jira comments and transitions.

The delivery agent follows a few ticket events (durable consumer `delivery-tracker`, made
when Jira is configured); for a ticket whose `source` is a Jira issue, `report` decides what
to say and where to move the issue, and the agent says it once (each comment carries its
event's marker). Jira failing for a moment is tried again later; Jira refusing (a 4xx: no
such issue, no rights) is logged and dropped, so one bad issue holds nothing up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from agents.delivery.jira import Jira, JiraError
from bus import Bus, Delivery, Reject, Retry
from schemas import Event, EventType
from schemas.ticket import TicketState

log = logging.getLogger(__name__)

RETRY_S = 30.0
TRACKED = (
    EventType.TICKET_CREATED,
    EventType.TICKET_PHASE_CHANGED,
    EventType.DELIVERY_SUCCEEDED,
    EventType.DELIVERY_FAILED,
    EventType.TICKET_BLOCKED,
    EventType.TICKET_DONE,
    EventType.TICKET_FAILED,
    EventType.TICKET_CANCELLED,
)


@dataclass(frozen=True)
class Statuses:
    started: str = "In Progress"
    done: str = "Done"


@dataclass(frozen=True)
class Report:
    comment: str
    move_to: str | None = None


def report(event: Event, ticket: TicketState, statuses: Statuses) -> Report | None:
    """What the issue should be told about `event` (None: nothing, or no Jira issue)."""
    if ticket.source is None or ticket.source.provider != "jira":
        return None
    data = event.data
    kind = event.type
    if kind is EventType.TICKET_CREATED:
        return Report(f"Omoi took this issue as ticket {ticket.id}.", statuses.started)
    if kind is EventType.TICKET_PHASE_CHANGED:
        return Report(f"Omoi: {data.get('from')} → {data.get('to')} ({data.get('reason', '')}).")
    if kind is EventType.DELIVERY_SUCCEEDED:
        pull = data.get("pull_request") or {}
        where = f"; pull request {pull['url']}" if pull.get("url") else ""
        return Report(
            f"Omoi pushed branch {data.get('branch')} at {str(data.get('commit'))[:12]}{where}."
        )
    if kind is EventType.DELIVERY_FAILED:
        return Report(f"Omoi could not deliver ({data.get('category')}): {data.get('error')}")
    if kind is EventType.TICKET_DONE:
        return Report(
            f"Omoi finished ticket {ticket.id}: {ticket.reason or 'done'}.", statuses.done
        )
    if kind in (EventType.TICKET_FAILED, EventType.TICKET_CANCELLED, EventType.TICKET_BLOCKED):
        return Report(f"Omoi: ticket {ticket.id} is {kind.value.split('.')[1]}: {ticket.reason}")
    return None


class Tracker:
    def __init__(self, bus: Bus, jira: Jira, statuses: Statuses) -> None:
        self.bus = bus
        self.jira = jira
        self.statuses = statuses

    async def handle(self, delivery: Delivery) -> None:
        try:
            event = Event.model_validate_json(delivery.data)
        except ValidationError as exc:
            raise Reject(f"not an event: {exc}", "invalid_event") from exc
        ticket = await self.bus.tickets.value(event.ticket_id)
        if ticket is None or (told := report(event, ticket, self.statuses)) is None:
            return
        key = ticket.source.key if ticket.source is not None else None
        if key is None:
            return
        try:
            await self.jira.comment_once(key, told.comment, event.id)
            if told.move_to:
                await self.jira.move_to(key, told.move_to)
        except JiraError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                log.warning("Jira refused what %s says about %s: %s", event.id, key, exc)
                return
            raise Retry(f"Jira is not answering: {exc}", delay=RETRY_S) from exc

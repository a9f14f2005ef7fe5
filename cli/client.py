"""What the CLI does over the bus, as plain async functions (no printing here)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bus import Bus, NoAnswer, streams
from bus import constants as c
from bus.registry import DISCOVERY_TIMEOUT_S, discover
from schemas import Event, EventType, Reply, TaskState, TicketState
from schemas.registry import AgentListing

FINAL_EVENTS = frozenset(
    {
        EventType.TICKET_DONE,
        EventType.TICKET_FAILED,
        EventType.TICKET_CANCELLED,
        EventType.TICKET_REJECTED,
    }
)


class ClientError(Exception):
    """Root of the CLI's errors: printed as a message, exit code 1."""


def new_ticket_id() -> str:
    return "T-" + uuid.uuid4().hex[:12]


async def submit(bus: Bus, payload: dict[str, Any], timeout: float) -> Reply:
    """The CLI is the operator's: it submits on the trusted subject, so its tickets may
    run shell commands, gate commands and local repositories."""
    data = json.dumps(payload).encode()
    try:
        answer = await bus.request(
            c.TRUSTED_SUBMIT_SUBJECT, data, timeout=timeout, ticket_id=payload.get("id")
        )
    except NoAnswer:
        if not await streams.provisioned(bus):
            raise ClientError("no Omoi topology on this server; run `omoi up` first") from None
        return Reply(
            ok=True,
            ticket_id=payload.get("id"),
            message="stored; no planner answered yet, it will be processed when one runs",
        )
    return Reply.model_validate_json(answer)


async def command(bus: Bus, subject: str, body: dict[str, Any], timeout: float) -> Reply:
    try:
        answer = await bus.request(
            subject, json.dumps(body).encode(), timeout=timeout, ticket_id=body.get("ticket_id")
        )
    except NoAnswer:
        raise ClientError("no planner answered; is `omoi up` (or a planner) running?") from None
    return Reply.model_validate_json(answer)


async def ticket_with_tasks(bus: Bus, ticket_id: str) -> tuple[TicketState, list[TaskState]]:
    ticket = await bus.tickets.value(ticket_id)
    if ticket is None:
        raise ClientError(f"no ticket {ticket_id!r}")
    tasks = [t for n in ticket.tasks if (t := await bus.tasks.value(f"{ticket_id}.{n}"))]
    return ticket, tasks


async def task(bus: Bus, task_id: str) -> TaskState:
    found = await bus.tasks.value(task_id)
    if found is None:
        raise ClientError(f"no task {task_id!r} (task ids look like <ticket_id>.<task_name>)")
    return found


async def tickets(bus: Bus) -> list[TicketState]:
    return sorted(await bus.tickets.values(), key=lambda t: t.created_at)


async def agents(
    bus: Bus,
    *,
    role: str | None = None,
    capability: str | None = None,
    label: str | None = None,
    timeout_s: float = DISCOVERY_TIMEOUT_S,
) -> list[AgentListing]:
    """The live agents that answer the NATS service API, by role and id."""
    try:
        return await discover(
            bus, role=role, capability=capability, label=label, timeout_s=timeout_s
        )
    except ValueError as exc:
        raise ClientError(str(exc)) from None


async def follow(bus: Bus, ticket_id: str) -> AsyncIterator[Event]:
    """Every event of a ticket from its first, until it finishes."""
    start = streams.Start(streams.From.FIRST)
    async with streams.Feed(bus, c.ticket_events_filter(ticket_id), start) as feed:
        async for entry in feed:
            event = Event.model_validate_json(entry.data)
            yield event
            if event.type in FINAL_EVENTS:
                return

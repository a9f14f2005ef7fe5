"""What reaches the planner over NATS is on record: every submission it admits or
rejects, and every command, in the append-only audit stream (`via` nats)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bus import Bus
from bus import constants as c
from tests.helpers import EventLog, audit_entries, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


async def test_submissions_and_commands_over_nats_are_audited(
    bus: Bus, events: EventLog, start_planner: Start
) -> None:
    await start_planner()
    plain = {"id": "T-aud-plain", "title": "plain", "tasks": [
        {"name": "a", "phase": "design", "command": "true"}
    ]}  # fmt: skip
    assert (await submit(bus, plain, trusted=False))["ok"] is False
    trusted = {"id": "T-aud-ok", "title": "ok", "tasks": [
        {"name": "a", "phase": "design", "command": "sleep 30"}
    ]}  # fmt: skip
    assert (await submit(bus, trusted))["ok"]
    await events.wait_type("T-aud-ok", "ticket.created")
    reply = await bus.nc.request(
        c.CMD_TICKET_CANCEL, json.dumps({"ticket_id": "T-aud-ok"}).encode(), timeout=10
    )
    assert json.loads(reply.data)["ok"]
    await bus.nc.request(c.CMD_TASK_CANCEL, b"{not json", timeout=10)

    async def recorded() -> bool:
        return len(await audit_entries(bus)) >= 4

    await wait_until(recorded, timeout=15)
    got = {(e.action, e.target, e.outcome) for e in await audit_entries(bus)}
    assert ("ticket.submit", "T-aud-plain", "rejected") in got
    assert ("ticket.submit", "T-aud-ok", "ok") in got
    assert ("ticket.cancel", "T-aud-ok", "ok") in got
    assert ("task.cancel", "", "rejected") in got
    for e in await audit_entries(bus):
        assert e.via == "nats" and e.actor.startswith("nats:"), e
    rejected = next(e for e in await audit_entries(bus) if e.target == "T-aud-plain")
    assert rejected.source == c.SUBMIT_SUBJECT and "forbidden" in rejected.detail

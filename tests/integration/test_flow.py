from __future__ import annotations

from collections.abc import Callable

import pytest

from bus import Bus
from tests.helpers import EventLog, submit

pytestmark = pytest.mark.integration


async def test_default_workflow_runs_through_every_phase(
    bus: Bus,
    events: EventLog,
    start_planner: Callable[..., object],
    start_worker: Callable[..., object],
) -> None:
    await start_planner()
    await start_worker()
    await start_worker()
    reply = await submit(bus, {"title": "Add rate limiting", "description": "100 req/min"})
    assert reply["ok"], reply
    ticket_id = reply["ticket_id"]
    await events.wait_type(ticket_id, "ticket.done", timeout=30)
    ticket = await bus.tickets.value(ticket_id)
    assert ticket is not None
    assert ticket.status == "done"
    assert [(h.from_, h.to) for h in ticket.phase_history] == [
        ("requirements", "design"),
        ("design", "implementation"),
        ("implementation", "testing"),
        ("testing", "deployment"),
        ("deployment", "done"),
    ]
    for name in ticket.tasks:
        task = await bus.tasks.value(f"{ticket_id}.{name}")
        assert task is not None
        assert task.status == "succeeded", (name, task.error)

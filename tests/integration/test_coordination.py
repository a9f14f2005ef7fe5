"""split, join and sync on a real server: fan-out over a produced list, a join that sees
every result, a barrier, and split input that cannot work failing clearly."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bus import Bus
from bus import constants as c
from schemas import TaskStatus, TicketStatus
from tests.helpers import EventLog, stream_holds, submit, ticket_finished, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


def fan_ticket(ticket_id: str, produced: str, bound: int = 20) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "title": "fan out",
        "tasks": [
            {"name": "list", "phase": "implementation", "command": f"echo '{produced}'"},
            {"name": "each", "phase": "implementation", "depends_on": ["list"],
             "split": {"over": "list", "max": bound}, "command": 'echo "did $OMOI_ITEM"'},
            {"name": "all", "phase": "testing", "depends_on": ["each"], "join": True,
             "command": 'echo "$OMOI_JOINED"'},
        ],
    }  # fmt: skip


async def test_split_over_five_items_makes_five_subtasks_and_the_join_sees_all_results(
    bus: Bus, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    items = ["a", "b", {"n": 3}, "d", "e"]
    assert (await submit(bus, fan_ticket("S5", json.dumps(items))))["ok"]
    ticket = await wait_until(lambda: ticket_finished(bus, "S5"), timeout=60)
    assert ticket.status is TicketStatus.DONE, ticket.reason
    names = [f"each-{i}" for i in range(1, 6)]
    assert [n for n in ticket.tasks if n.startswith("each-")] == names
    outputs = []
    for name, item in zip(names, items, strict=True):
        sub = await bus.tasks.value(f"S5.{name}")
        assert sub is not None and sub.status is TaskStatus.SUCCEEDED and sub.result
        assert sub.item == (item if isinstance(item, str) else json.dumps(item))
        outputs.append(sub.result.output_tail.strip())
    assert outputs == ["did a", "did b", 'did {"n": 3}', "did d", "did e"]
    joined = await bus.tasks.value("S5.all")
    assert joined is not None and joined.result is not None
    assert json.loads(joined.result.output_tail) == dict(zip(names, outputs, strict=True))


@pytest.mark.parametrize(
    ("produced", "bound", "why"),
    [
        ('["a", "b", "c"]', 2, "splits over 3 items from list, more than its bound of 2"),
        ('{"not": "a list"}', 20, "splits over the output of list, which is not a JSON list"),
    ],
)
async def test_a_split_over_too_many_items_or_no_list_fails_clearly(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start,
    produced: str, bound: int, why: str,
) -> None:  # fmt: skip
    await start_planner()
    await start_worker()
    assert (await submit(bus, fan_ticket("SX", produced, bound)))["ok"]
    ticket = await wait_until(lambda: ticket_finished(bus, "SX"), timeout=60)
    assert ticket.status is TicketStatus.FAILED
    failed = await events.wait_type("SX", "task.failed", task="each")
    assert why in failed.data["reason"]
    each = await bus.tasks.value("SX.each")
    assert each is not None and each.status is TaskStatus.FAILED and why in (each.reason or "")
    assert not [n for n in ticket.tasks if n.startswith("each-")]


async def test_a_split_over_a_task_it_does_not_depend_on_is_rejected_at_intake(
    bus: Bus, start_planner: Start
) -> None:
    await start_planner()
    payload = fan_ticket("SR", "[1]")
    payload["tasks"][1]["depends_on"] = []
    reply = await submit(bus, payload)
    assert not reply["ok"]
    assert "splits over 'list', which must be one of its dependencies" in reply["error"]["message"]
    await wait_until(lambda: stream_holds(bus, c.DLQ_STREAM, 1))


async def test_a_sync_group_starts_together(
    bus: Bus, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    payload = {
        "id": "SY",
        "title": "barrier",
        "tasks": [
            {"name": "slow", "phase": "implementation", "command": "sleep 0.5"},
            {"name": "a", "phase": "implementation", "depends_on": ["slow"], "sync": "go",
             "command": "true"},
            {"name": "b", "phase": "implementation", "sync": "go", "command": "true"},
        ],
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]
    ticket = await wait_until(lambda: ticket_finished(bus, "SY"), timeout=30)
    assert ticket.status is TicketStatus.DONE, ticket.reason
    slow, b = await bus.tasks.value("SY.slow"), await bus.tasks.value("SY.b")
    assert slow is not None and b is not None and slow.finished_at and b.queued_at
    # `b` was ready at once, but waited at the barrier for `a`, which waited for `slow`.
    assert b.queued_at >= slow.finished_at


async def test_a_resource_spec_that_does_not_parse_is_rejected_at_intake(
    bus: Bus, start_planner: Start
) -> None:
    await start_planner()
    payload = {"id": "RB", "title": "bad lock", "tasks": [
        {"name": "a", "phase": "implementation", "command": "true", "resources": ["../etc"]},
    ]}  # fmt: skip
    reply = await submit(bus, payload)
    assert not reply["ok"] and reply["error"]["category"] == "invalid_ticket"
    assert "is not a relative path or glob inside the workspace" in reply["error"]["message"]
    await wait_until(lambda: stream_holds(bus, c.DLQ_STREAM, 1))
    assert await bus.tickets.value("RB") is None

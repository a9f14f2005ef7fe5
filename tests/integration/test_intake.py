"""Intake: durable core publishes, request/reply, idempotent ids, and bad input."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bus import Bus
from bus import constants as c
from tests.helpers import EventLog, stream_holds, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]

ONE_TASK = [{"name": "only", "phase": "requirements", "command": "true"}]


async def dlq_entries(bus: Bus) -> list[Any]:
    info = await bus.js.stream_info(c.DLQ_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages:
            out.append(await bus.js.get_msg(c.DLQ_STREAM, seq))
    return out


async def test_core_publish_without_agents_is_processed_once_a_planner_starts(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    payload = {"id": "early-bird", "title": "queued before anyone listens", "tasks": ONE_TASK}
    await bus.nc.publish(c.TRUSTED_SUBMIT_SUBJECT, json.dumps(payload).encode())
    await bus.nc.flush()
    # The stream stores a core publish asynchronously; there is no event to wait on.
    await wait_until(lambda: stream_holds(bus, c.INTAKE_STREAM, 1))
    assert await bus.tickets.value("early-bird") is None

    await start_planner()
    await start_worker()
    await events.wait_type("early-bird", "ticket.done")


async def test_same_id_twice_makes_one_ticket(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    payload = {"id": "twice", "title": "idempotent", "tasks": ONE_TASK}
    first = await submit(bus, payload)
    second = await submit(bus, payload)
    assert first["ok"] and second["ok"]
    assert first["ticket_id"] == second["ticket_id"] == "twice"
    await start_worker()
    await events.wait_type("twice", "ticket.done")
    await wait_until(lambda: stream_holds(bus, c.INTAKE_STREAM, 0))
    assert await bus.tickets.keys() == ["twice"]
    assert len(events.of("twice", "task.succeeded")) == 1


async def test_missing_id_is_derived_from_content_so_a_resend_is_one_ticket(
    bus: Bus, events: EventLog, start_planner: Start
) -> None:
    await start_planner()
    payload = {"title": "no id given", "tasks": ONE_TASK}
    first = await submit(bus, payload)
    second = await submit(bus, payload)
    assert first["ticket_id"] == second["ticket_id"]
    assert first["ticket_id"].startswith("T-")
    await events.wait_type(first["ticket_id"], "ticket.created")
    await wait_until(lambda: stream_holds(bus, c.INTAKE_STREAM, 0))
    assert len(await bus.tickets.keys()) == 1


async def test_reusing_an_id_for_different_content_is_rejected(
    bus: Bus, events: EventLog, start_planner: Start
) -> None:
    await start_planner()
    assert (await submit(bus, {"id": "mine", "title": "first", "tasks": ONE_TASK}))["ok"]
    await events.wait_type("mine", "ticket.created")
    reply = await submit(bus, {"id": "mine", "title": "second", "tasks": ONE_TASK})
    assert not reply["ok"]
    assert reply["error"]["category"] == "duplicate_id"
    await events.wait_type("mine", "ticket.rejected")
    ticket = await bus.tickets.value("mine")
    assert ticket is not None and ticket.title == "first"


BAD_INPUTS = [
    pytest.param(b"{not json", "malformed_json", "not valid JSON", id="malformed-json"),
    pytest.param(b"[1, 2, 3]", "invalid_ticket", "JSON object", id="not-an-object"),
    pytest.param(b"[" * 100_000, "malformed_json", "nested too deeply", id="deeply-nested"),
    pytest.param(
        json.dumps({"title": 42, "description": ["x"]}).encode(),
        "invalid_ticket",
        "title",
        id="wrong-types",
    ),
    pytest.param(
        json.dumps({"title": "ok", "colour": "blue"}).encode(),
        "invalid_ticket",
        "colour",
        id="unknown-field",
    ),
    pytest.param(
        json.dumps({"title": "   "}).encode(), "invalid_ticket", "title", id="empty-title"
    ),
    pytest.param(
        json.dumps({"title": "big", "description": "x" * (10 * 1024 * 1024)}).encode(),
        "payload_too_large",
        "limit",
        id="10MB",
    ),
    pytest.param(
        json.dumps(
            {
                "title": "loop",
                "tasks": [
                    {"name": "a", "phase": "design", "command": "true", "depends_on": ["b"]},
                    {"name": "b", "phase": "design", "command": "true", "depends_on": ["a"]},
                ],
            }
        ).encode(),
        "dependency_cycle",
        "a -> b -> a",
        id="cycle",
    ),
    pytest.param(
        json.dumps(
            {
                "title": "dangling",
                "tasks": [{"name": "a", "phase": "design", "command": "true", "depends_on": ["x"]}],
            }
        ).encode(),
        "invalid_graph",
        "unknown task 'x'",
        id="unknown-dependency",
    ),
    pytest.param(
        json.dumps({"title": "t", "workflow": "no-such-flow"}).encode(),
        "unknown_workflow",
        "no-such-flow",
        id="unknown-workflow",
    ),
]


@pytest.mark.parametrize(("payload", "category", "fragment"), BAD_INPUTS)
async def test_bad_input_gets_reply_event_and_dead_letter_and_service_continues(
    bus: Bus,
    events: EventLog,
    start_planner: Start,
    start_worker: Start,
    payload: bytes,
    category: str,
    fragment: str,
) -> None:
    await start_planner()
    await start_worker()
    msg = await bus.nc.request(c.TRUSTED_SUBMIT_SUBJECT, payload, timeout=10)
    reply = json.loads(msg.data)
    assert reply["ok"] is False
    assert reply["error"]["category"] == category
    assert fragment in reply["error"]["message"]

    rejected = await events.wait_type(reply["ticket_id"], "ticket.rejected")
    assert rejected.data["error"]["category"] == category

    entries = await wait_until(lambda: dlq_entries(bus))
    assert len(entries) == 1
    assert entries[0].subject == "omoi.dlq.intake"
    assert entries[0].data == payload
    assert entries[0].headers is not None
    assert fragment in entries[0].headers[c.HDR_REASON]
    assert entries[0].headers[c.HDR_ERROR_CATEGORY] == category

    # The planner is still serving.
    good = await submit(bus, {"id": "after-bad", "title": "fine", "tasks": ONE_TASK})
    assert good["ok"]
    await events.wait_type("after-bad", "ticket.done")

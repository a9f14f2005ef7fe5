"""`traceparent` on the messages a ticket's work sends, through a real planner and worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.msg import Msg

from bus import Bus
from bus import constants as c
from bus import trace_context as tc
from tests.helpers import EventLog, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


class Sent:
    """Every message on a subject with its trace header, as a plain subscriber sees it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple[str, str] | None]] = []

    async def on_msg(self, msg: Msg) -> None:
        self.seen.append((msg.subject, tc.parse((msg.headers or {}).get(tc.HEADER))))

    def spans(self, suffix: str) -> list[tuple[str, str] | None]:
        return [parsed for subject, parsed in self.seen if subject.endswith(suffix)]


async def test_a_tickets_messages_are_one_trace_and_name_the_span_that_sent_them(
    bus: Bus, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    sent = Sent()
    await bus.nc.subscribe(c.event_subject("tr", ">"), cb=sent.on_msg)
    await bus.nc.subscribe(c.TASKS_SUBJECTS, cb=sent.on_msg)
    await start_planner()
    await start_worker()
    tasks = [
        {"name": "a", "phase": "design", "command": "true"},
        {"name": "b", "phase": "design", "command": "true", "depends_on": ["a"]},
    ]
    assert (await submit(bus, {"id": "tr", "title": "traced", "tasks": tasks}))["ok"]
    await events.wait_type("tr", "ticket.done")

    async def all_seen() -> bool:
        return bool(sent.spans(".tr.b")) and bool(sent.spans("ticket.done"))

    await wait_until(all_seen)
    trace = tc.ticket_trace_id("tr")
    assert sent.seen and all(parsed and parsed[0] == trace for _, parsed in sent.seen), sent.seen
    # The planner, handling a's success, queues b: the event and the dispatch come from
    # that one span. The worker handling b's dispatch is a span of its own.
    [queued] = [p for s, p in sent.seen if s == c.event_subject("tr", "task.queued")][1:]
    [dispatch_b] = sent.spans(".tr.b")
    assert queued is not None and dispatch_b is not None and queued[1] == dispatch_b[1]
    started = [p for s, p in sent.seen if s == c.event_subject("tr", "task.started")]
    assert started[-1] is not None and started[-1][1] != dispatch_b[1]

"""A worker serving many consumers starts its next task as soon as it finishes the last:
fetching never waits out a poll timer while one of its consumers has messages."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from agents.executors import ShellExecutor
from agents.settings import Settings
from agents.worker.agent import Worker
from bus import Bus
from bus import constants as c
from schemas import utcnow
from tests.conftest import ALL_PHASES
from tests.helpers import EventLog, Running, submit

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
POLL_S = 10.0
TICKETS = 6


async def test_a_worker_on_every_consumer_has_no_idle_gaps_with_a_backlog(
    bus: Bus, events: EventLog, settings: Settings, running: Running, start_planner: Start
) -> None:
    await start_planner()
    # The default worker: every phase, both capabilities (ten consumers), one slot, and a
    # poll far longer than the whole backlog should take.
    worker = Worker(
        bus,
        settings.model_copy(update={"fetch_poll_s": POLL_S}),
        phases=ALL_PHASES,
        capabilities=["shell", "agent"],
        executors={"shell": ShellExecutor(dict(os.environ), settings)},
    )
    await running.start(worker)
    for i in range(TICKETS):
        tasks = [
            {"name": phase[:3], "phase": phase, "command": "true"}
            for phase in ("requirements", "design", "implementation")
        ]
        assert (await submit(bus, {"id": f"gap{i}", "title": "gaps", "tasks": tasks}))["ok"]
    for i in range(TICKETS):
        await events.wait_type(f"gap{i}", "ticket.done", timeout=60)

    started = {(e.ticket_id, e.task): e.at for e in events.events if e.type == "task.started"}
    spans = sorted(
        (started[(e.ticket_id, e.task)], timedelta(seconds=e.data["duration_s"]))
        for e in events.events
        if e.type == "task.succeeded"
    )
    assert len(spans) == 3 * TICKETS
    # One slot: from the end of one task to the start of the next lies only fetching (and,
    # when nothing is queued, the planner), never a poll timer.
    gaps = [
        (nxt - (at + took)).total_seconds() for (at, took), (nxt, _) in itertools.pairwise(spans)
    ]
    assert max(gaps) < POLL_S / 4, gaps


async def test_the_planner_takes_each_submission_at_once_between_polls(
    bus: Bus, events: EventLog, settings: Settings, running: Running
) -> None:
    from agents.planner.agent import Planner

    # A long poll: a request that expires while the planner waits on it must not leave the
    # planner asleep for the rest of its own wait while submissions pile up.
    poll = 3.0
    await running.start(Planner(bus, settings.model_copy(update={"fetch_poll_s": poll})))
    late = []
    for i in range(8):
        sent = utcnow()
        tasks = [{"name": "t", "phase": "implementation", "command": "true"}]
        await bus.notify(
            c.TRUSTED_SUBMIT_SUBJECT,
            json.dumps({"id": f"p{i}", "title": "p", "tasks": tasks}).encode(),
        )
        created = await events.wait_type(f"p{i}", "ticket.created")
        late.append((created.at - sent).total_seconds())
        await asyncio.sleep(poll / 4)  # the pacing under test: submissions between polls
    assert max(late) < poll / 4, late

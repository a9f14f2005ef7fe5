"""Discoveries: a coding agent reports more work through its `discover` tool (scripted
model, real OpenHands session); the planner makes a task of a new one, rejects one that
repeats a task, and holds one that opens a phase until an operator approves it. Every
judgement is an event, and the ticket keeps where each task came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.guardian.agent import Guardian
from agents.scripts.build_demo import create, finish, task
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from schemas import Event
from schemas.discovery import DiscoveryStatus
from schemas.guardian import InterventionReply, InterventionRequest
from schemas.ticket import TicketState, TicketStatus
from tests.helpers import EventLog, Running, submit, ticket_finished, wait_until
from tests.integration.agent_support import ModelFactory, Start, with_model
from tests.integration.test_control import command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def discover(kind: str, title: str, **more: Any) -> dict[str, Any]:
    args = {"category": kind, "title": title, **more}
    return {"tool_calls": [{"name": "discover", "arguments": args}]}


async def judged(bus: Bus, ticket_id: str, n: int) -> TicketState | None:
    t = await bus.tickets.value(ticket_id)
    return t if t is not None and len(t.discoveries) >= n else None


async def test_a_discovery_becomes_a_task_a_repeat_is_refused_and_a_new_phase_waits(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    server = model_server({"conversations": [
        task("implement",
             discover("bug", "Pagination skips the last page of results",
                      description="api/pages.py uses < where it needs <="),
             discover("follow_up", "Implement the rate limiter in limiter.py"),
             discover("missing_test", "No test covers the limiter under load"),
             create("limiter.py", "RATE = 10\n"),
             finish("Implemented the limiter.")),
        task("discovered-implement-0-1-1", create("pages.py", "LAST = True\n"),
             finish("Fixed the last page.")),
        task("discovered-implement-0-1-3", create("test_load.py", "# load\n"),
             finish("Added the load test.")),
    ]})  # fmt: skip
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    spec = {"name": "implement", "phase": "implementation", "capability": "agent",
            "instructions": "Implement the rate limiter in limiter.py."}  # fmt: skip
    assert (await submit(bus, {"id": "DS1", "title": "Limits", "tasks": [spec]}))["ok"]

    ticket = await wait_until(lambda: judged(bus, "DS1", 3), timeout=120)
    by_title = {d.title.split()[0]: d for d in ticket.discoveries}
    bug, repeat, test = by_title["Pagination"], by_title["Implement"], by_title["No"]
    assert bug.status is DiscoveryStatus.ACCEPTED and bug.task == "discovered-implement-0-1-1"
    assert repeat.status is DiscoveryStatus.REJECTED and "repeats task implement" in repeat.reason
    assert test.status is DiscoveryStatus.HELD and "opens the testing phase" in test.reason
    made = await bus.tasks.value("DS1.discovered-implement-0-1-1")
    assert made is not None and made.origin == "discovery:1:DS1.implement.0-1-1"
    assert "api/pages.py uses < where it needs <=" in (made.instructions or "")
    reported = await events.wait_type("DS1", "discovery.reported")
    assert reported.data["from_task"] == "implement" and reported.data["depth"] == 0
    await events.wait_type("DS1", "discovery.rejected")
    await events.wait_type("DS1", "discovery.held")

    # The operator approves the held one: it becomes a testing task, and the ticket ends
    # only once it is done too.
    approve = {"ticket_id": "DS1", "discovery_id": test.id, "approve": True}
    reply = await command(bus, c.CMD_TICKET_DISCOVERY, approve)
    assert reply["ok"], reply
    again = await command(bus, c.CMD_TICKET_DISCOVERY, approve)
    assert not again["ok"] and "no held discovery" in again["error"]["message"]
    done = await wait_until(lambda: ticket_finished(bus, "DS1"), timeout=120)
    assert done.status is TicketStatus.DONE, done.reason
    tested = await bus.tasks.value("DS1.discovered-implement-0-1-3")
    assert tested is not None and tested.phase.value == "testing"
    assert tested.status.value == "succeeded"
    accepted = [e for e in events.events if e.type == "discovery.accepted"]
    assert {e.data["task"] for e in accepted} == {made.name, tested.name}


async def test_the_guardian_approves_a_held_discovery_within_its_limit_and_proposes_a_new_phase(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
    running: Running,
) -> None:
    server = model_server({"conversations": [
        task("implement",
             discover("bug", "Cache entries never expire", estimate_usd=2.5),
             discover("follow_up", "Rewrite the storage engine", estimate_usd=40.0),
             discover("missing_test", "No test covers the limiter under load"),
             create("limiter.py", "RATE = 10\n"),
             finish("Implemented the limiter.")),
        task("discovered-implement-0-1-1", create("cache.py", "TTL = 60\n"),
             finish("Entries expire.")),
        task("discovered-implement-0-1-3", create("test_load.py", "# load\n"),
             finish("Added the load test.")),
    ]})  # fmt: skip
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    assert s.nats_url
    # Under its own identity: what it may publish is what the test proves it can do.
    own = await Bus.connect(s.nats_url, name="guardian", credentials=s.credentials("guardian"))
    await running.start(Guardian(own, s))
    spec = {"name": "implement", "phase": "implementation", "capability": "agent",
            "instructions": "Implement the rate limiter in limiter.py."}  # fmt: skip
    assert (await submit(bus, {"id": "DS2", "title": "Limits", "tasks": [spec]}))["ok"]

    # All three held by the planner ($1 threshold, a new phase); the guardian approves the
    # $2.50 one alone, and proposes the other two.
    async def three_interventions() -> list[Event] | None:
        seen = [e for e in events.events if e.type in ("guardian.applied", "guardian.proposed")]
        return seen if len(seen) >= 3 else None

    seen = {e.data["target"]: e for e in await wait_until(three_interventions, timeout=120)}
    cache, engine, tests = (f"DS2.implement.0-1-{n}" for n in (1, 2, 3))
    assert seen[cache].type == "guardian.applied", seen[cache].data
    assert "approved: a task is made of it" in seen[cache].data["outcome"]
    assert seen[engine].type == "guardian.proposed"
    assert "over the guardian's $5.00" in seen[engine].data["reason"]
    assert seen[tests].type == "guardian.proposed"
    assert "opens a phase" in seen[tests].data["reason"]

    # An operator approves the new phase's proposal through the guardian; the expensive one
    # stays held, so the ticket waits on nothing but its own tasks.
    reply = await bus.request(
        c.GUARDIAN_APPROVE, InterventionRequest(id=seen[tests].data["id"]).to_json(), 10.0
    )
    assert InterventionReply.model_validate_json(reply).ok
    done = await wait_until(lambda: ticket_finished(bus, "DS2"), timeout=120)
    assert done.status is TicketStatus.DONE, done.reason
    by_id = {d.id: d for d in done.discoveries}
    assert by_id[cache].status is DiscoveryStatus.ACCEPTED
    assert by_id[cache].reason.startswith("approved by the guardian")
    assert by_id[tests].status is DiscoveryStatus.ACCEPTED
    assert by_id[engine].status is DiscoveryStatus.HELD and by_id[engine].held_for == "estimate"
    for name in ("discovered-implement-0-1-1", "discovered-implement-0-1-3"):
        made = await bus.tasks.value(f"DS2.{name}")
        assert made is not None and made.status.value == "succeeded"

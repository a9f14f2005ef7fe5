"""Planners share the tickets by partition: each partition's outcomes go to one planner
at a time, a new planner takes its share, a dead one's share moves to the others."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agents.planner.agent import Planner
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from bus.auth import Credentials
from schemas import Event, EventType
from schemas.partition import PartitionLease
from schemas.registry import AgentStatus
from tests.helpers import AgentProcess, EventLog, Running, submit, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
ALL = set(range(c.PLANNER_PARTITIONS))


@pytest.fixture
async def buses(
    settings: Settings, admin: Credentials
) -> AsyncIterator[Callable[[], Awaitable[Bus]]]:
    """More connections, closed after the agents on them have stopped."""
    made: list[Bus] = []

    async def connect() -> Bus:
        assert settings.nats_url
        b = await Bus.connect(
            settings.nats_url, name=f"test-{len(made)}", topology=settings.topology(),
            credentials=admin,
        )  # fmt: skip
        made.append(b)
        return b

    yield connect
    for b in made:
        await b.close()


async def owners(bus: Bus) -> dict[int, str]:
    """Who holds each partition's lease now, as the bucket says."""
    leases = await bus.bucket(c.PARTITIONS_BUCKET, PartitionLease)
    found = {}
    for p in ALL:
        lease = await leases.value(f"{c.PLANNER_GROUP}.owners.{p}")
        if lease is not None:
            found[p] = lease.holder
    return found


def ticket(ticket_id: str) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "title": ticket_id,
        "tasks": [
            {"name": "a", "phase": "design", "capability": "noop"},
            {"name": "b", "phase": "implementation", "capability": "noop", "depends_on": ["a"]},
        ],
    }


async def submit_all(bus: Bus, ids: list[str]) -> None:
    for ticket_id in ids:
        assert (await submit(bus, ticket(ticket_id)))["ok"], ticket_id


def finished_once(events: EventLog, ids: list[str]) -> None:
    """Every ticket done once, each task started and succeeded once."""
    for ticket_id in ids:
        assert len(events.of(ticket_id, "ticket.done")) == 1, ticket_id
        for kind in ("task.started", "task.succeeded"):
            runs = Counter(e.task for e in events.of(ticket_id, kind))
            assert runs == {"a": 1, "b": 1}, (ticket_id, kind, runs)


async def test_the_server_copies_each_outcome_into_its_tickets_partition(bus: Bus) -> None:
    ids = [f"T-part{i:03d}" for i in range(40)]
    for ticket_id in ids:
        done = Event(id=f"{ticket_id}.a.ok", type=EventType.TASK_SUCCEEDED, ticket_id=ticket_id)
        await bus.publish_event(done)
    other = Event(id="T-other.created", type=EventType.TICKET_CREATED, ticket_id="T-other")
    await bus.publish_event(other)

    async def copied() -> dict[str, int]:
        return await bus.live_subjects(c.PLANNER_STREAM, f"{c.PLANNER_SUBJECTS_PREFIX}.>")

    await wait_until(lambda: _count_is(copied, len(ids)))
    subjects = await copied()
    assert subjects == {
        f"omoi.planner.{c.planner_partition(t)}.{t}.task.succeeded": 1 for t in ids
    }  # and nothing the planner does not read (ticket.created)
    assert len({c.planner_partition(t) for t in ids}) == c.PLANNER_PARTITIONS


async def _count_is(read: Callable[[], Awaitable[dict[str, int]]], n: int) -> bool:
    return len(await read()) >= n


async def test_planners_joining_and_leaving_share_the_partitions_and_lose_no_ticket(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    buses: Callable[[], Awaitable[Bus]],
    running: Running,
    start_worker: Start,
) -> None:
    await start_worker(capabilities=("noop",))
    first = await running.start(Planner(bus, settings, agent_id="planner-a"))
    assert isinstance(first, Planner) and first.partitions is not None
    assert first.partitions.held == ALL  # alone, it owns them all from its first round
    ids = [f"T-join{i:03d}" for i in range(60)]
    load = asyncio.create_task(submit_all(bus, ids))

    planners = [first]
    for name in ("planner-b", "planner-c"):
        # Each on its own connection, with its own mirror, as separate processes are.
        own = await buses()
        joined = await running.start(Planner(own, settings, agent_id=name))
        assert isinstance(joined, Planner)
        planners.append(joined)

    async def shared_out() -> bool:
        held = [p.partitions.held for p in planners if p.partitions is not None]
        return (
            set().union(*held) == ALL
            and sum(len(h) for h in held) == c.PLANNER_PARTITIONS  # no partition twice
            and sorted(len(h) for h in held) == [2, 3, 3]
        )

    await wait_until(shared_out, timeout=20)
    assert set((await owners(bus)).values()) == {"planner-a", "planner-b", "planner-c"}
    for planner in planners:  # what `nats micro stats omoi-planner` shows
        reply = await bus.request(c.agent_status_subject("planner", planner.id), b"", 5)
        status = AgentStatus.model_validate_json(reply)
        assert planner.partitions is not None
        assert status.partitions == sorted(planner.partitions.held)

    await load
    leaving = planners.pop(1)
    await running.stop(leaving)  # a graceful stop gives its partitions up at once

    async def taken_over() -> bool:
        held = [p.partitions.held for p in planners if p.partitions is not None]
        return sorted(len(h) for h in held) == [4, 4] and set().union(*held) == ALL

    await wait_until(taken_over, timeout=20)
    await wait_until(lambda: _all_done(events, ids), timeout=60)
    finished_once(events, ids)
    for planner in planners:
        # Tickets another planner finished leave this one's mirror at its next sweep, so
        # sweeps cost the tickets in flight, not all there ever were.
        assert await planner.reconciler.running_tickets() == []
        assert all([await planner.bus.tickets.get_cached(t) is None for t in ids])


async def _all_done(events: EventLog, ids: list[str]) -> bool:
    return all(events.of(t, "ticket.done") for t in ids)


async def test_a_planner_killed_under_load_leaves_its_partitions_to_the_others(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    procs: Callable[..., AgentProcess],
    start_worker: Start,
) -> None:
    await start_worker(capabilities=("noop",))
    await start_worker(capabilities=("noop",))
    names = ["planner-k1", "planner-k2", "planner-k3"]
    planners = {name: await procs("planner", name).start(bus) for name in names}

    async def held_by(members: set[str]) -> bool:
        found = await owners(bus)
        return set(found) == ALL and set(found.values()) == members

    await wait_until(lambda: held_by(set(names)), timeout=20)
    ids = [f"T-kill{i:03d}" for i in range(80)]
    await submit_all(bus, ids[:40])
    await wait_until(lambda: _done_count(events, ids, 10), timeout=60)

    victim = "planner-k2"
    victims = {p for p, owner in (await owners(bus)).items() if owner == victim}
    assert victims
    await planners[victim].kill9()
    killed_at = asyncio.get_running_loop().time()
    await submit_all(bus, ids[40:])

    survivors = set(names) - {victim}
    await wait_until(lambda: held_by(survivors), timeout=4 * settings.planner_lease_s)
    moved_after = asyncio.get_running_loop().time() - killed_at
    # One lease, then a survivor's next round.
    assert moved_after < 2 * settings.planner_lease_s + 2

    await wait_until(lambda: _all_done(events, ids), timeout=90)
    finished_once(events, ids)
    assert any(c.planner_partition(t) in victims for t in ids)  # its tickets were in there


async def _done_count(events: EventLog, ids: list[str], n: int) -> bool:
    return sum(1 for t in ids if events.of(t, "ticket.done")) >= n

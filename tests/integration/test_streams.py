"""`bus.streams` against a real nats-server: tails, stream ends, feeds, the topology check."""

from __future__ import annotations

import pytest

from bus import Bus, EmbeddedNatsServer, NotProvisioned, TopologyConfig
from bus import constants as c
from bus.auth import Credentials
from bus.streams import Feed, From, Start, last_seq, provisioned, tail
from schemas import Event, EventType

pytestmark = pytest.mark.integration


def event(ticket_id: str, n: int, kind: EventType = EventType.TASK_PROGRESS) -> Event:
    return Event(id=f"{ticket_id}.{n}", type=kind, ticket_id=ticket_id, data={"n": n})


async def test_tail_is_the_newest_matching_messages_within_the_window(bus: Bus) -> None:
    assert await tail(bus, c.DLQ_STREAM, c.DLQ_SUBJECTS, limit=5, window=5) == []
    for n in range(6):
        origin = "planner" if n % 2 else "recorder"
        await bus.dead_letter(origin, f"bad {n}".encode(), f"reason {n}", "invalid", seq=n + 1)

    newest = await tail(bus, c.DLQ_STREAM, c.dlq_subject("planner"), limit=2, window=6)
    assert [e.data for e in newest] == [b"bad 5", b"bad 3"]
    assert newest[0].headers[c.HDR_REASON] == "reason 5"
    assert newest[0].subject == c.dlq_subject("planner")
    assert newest[0].seq > newest[1].seq and newest[0].at is not None
    # Only the last two messages are looked at: one of them is the planner's.
    assert [
        e.data for e in await tail(bus, c.DLQ_STREAM, "omoi.dlq.planner", limit=5, window=2)
    ] == [b"bad 5"]
    assert await tail(bus, c.DLQ_STREAM, "omoi.dlq.nobody", limit=5, window=6) == []
    assert await last_seq(bus, c.DLQ_STREAM) == newest[0].seq


async def test_feeds_start_where_they_are_told(bus: Bus) -> None:
    subject = c.ticket_events_filter("S-1")
    await bus.publish_events([event("S-1", n) for n in range(3)])
    await bus.publish_event(event("S-2", 0))  # another ticket's: not on the feed
    first_three = await last_seq(bus, c.EVENTS_STREAM)

    async with Feed(bus, subject, Start(From.FIRST)) as feed:
        seen = [await feed.next(timeout=5) for _ in range(3)]
        ids = [Event.model_validate_json(e.data).id if e else None for e in seen]
        assert ids == ["S-1.0", "S-1.1", "S-1.2"]
        assert await feed.next(timeout=0.2) is None  # nothing more yet
    assert seen[0] is not None

    after_first = Start.after(seen[0].seq)
    async with (
        Feed(bus, subject, Start(From.NEW)) as new,
        Feed(bus, subject, after_first) as resumed,
    ):
        await bus.publish_event(event("S-1", 3))
        fresh = await new.next(timeout=5)
        assert fresh is not None and fresh.seq > first_three
        assert fresh.subject == c.event_subject("S-1", EventType.TASK_PROGRESS)
        got = []
        async for entry in resumed:
            got.append(Event.model_validate_json(entry.data).data["n"])
            if len(got) == 3:
                break
        assert got == [1, 2, 3]


def test_a_start_needs_a_sequence_exactly_when_it_starts_at_one() -> None:
    assert Start.after(41) == Start(From.SEQ, 42)
    for bad in ((From.SEQ, None), (From.SEQ, 0), (From.NEW, 5)):
        with pytest.raises(ValueError, match=r"only From\.SEQ"):
            Start(*bad)


async def test_without_the_topology_reads_say_so(
    nats_server: EmbeddedNatsServer, admin: Credentials
) -> None:
    with pytest.raises(NotProvisioned):
        await Bus.connect(nats_server.url, name="bare", patience_s=1.0, credentials=admin)
    bus = await Bus.connect(
        nats_server.url, name="full", topology=TopologyConfig(), patience_s=1.0, credentials=admin
    )
    try:
        assert await provisioned(bus)
        with pytest.raises(NotProvisioned):
            await last_seq(bus, "NO_SUCH_STREAM")
        with pytest.raises(NotProvisioned):
            await tail(bus, "NO_SUCH_STREAM", "x.>", limit=1, window=1)
        with pytest.raises(NotProvisioned):
            await Feed(bus, "nothing.here", Start(From.FIRST), stream="NO_SUCH_STREAM").open()
        # A test may reach past the bus: somebody removed the topology.
        await bus.js.delete_stream(c.TASKS_STREAM)
        assert not await provisioned(bus)
    finally:
        await bus.close()

"""Listing a bucket's keys sees every key, every time, without a watcher."""

from __future__ import annotations

import asyncio

import pytest

from bus import Bus
from bus import constants as c
from schemas import TicketState

pytestmark = pytest.mark.integration


def ticket(ticket_id: str) -> TicketState:
    return TicketState(id=ticket_id, title=ticket_id)


async def consumers(bus: Bus) -> int:
    return (await bus.js.stream_info(c.kv_stream(c.TICKETS_BUCKET))).state.consumer_count


async def test_keys_lists_every_key_with_an_entry_and_values_skips_deleted(bus: Bus) -> None:
    assert await bus.tickets.keys() == []
    for n in range(5):
        await bus.tickets.put(f"t{n}", ticket(f"t{n}"))
    await bus.tickets.put("t1", ticket("t1"))  # a second revision is still one key
    await bus.tickets.delete("t3")
    await bus.tickets.kv.purge("t4")
    # A deleted or purged key keeps its marker, so it is listed, and reads as missing.
    assert sorted(await bus.tickets.keys()) == ["t0", "t1", "t2", "t3", "t4"]
    assert await bus.tickets.value("t3") is None
    assert sorted(t.id for t in await bus.tickets.values()) == ["t0", "t1", "t2"]


async def test_concurrent_listings_are_all_complete_and_make_no_consumer(bus: Bus) -> None:
    for n in range(20):
        await bus.tickets.put(f"t{n:02}", ticket(f"t{n:02}"))
    before = await consumers(bus)
    # nats-py's watcher-based listing came back empty when a consumer-info reply overtook
    # its deliveries; many listings at once are where that showed.
    listings = await asyncio.gather(*(bus.tickets.keys() for _ in range(100)))
    assert all(sorted(keys) == [f"t{n:02}" for n in range(20)] for keys in listings)
    assert await consumers(bus) == before

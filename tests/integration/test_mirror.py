"""A mirrored bucket serves reads from memory yet never loses or misplaces a write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.settings import Settings
from bus import Bus
from bus.auth import Credentials
from bus.mirror import MirroredBucket
from bus.state import Versioned
from schemas import Phase, TaskState, TaskStatus, TicketState, TicketStatus
from schemas.task import task_key
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def task(ticket: str, name: str, **kw: Any) -> TaskState:
    return TaskState(
        id=task_key(ticket, name), ticket_id=ticket, name=name, phase=Phase.DESIGN, **kw
    )


def bump(t: TaskState) -> TaskState:
    t.attempts += 1
    return t


def mirror_of(bus: Bus) -> MirroredBucket[TaskState]:
    assert isinstance(bus.tasks, MirroredBucket)
    return bus.tasks


async def held(mirror: MirroredBucket[TaskState]) -> dict[str, int]:
    """What the mirror holds in memory: task id -> attempts."""
    return {t.id: t.attempts for t in await mirror.values()}


async def no_read(key: str) -> None:
    raise AssertionError(f"read {key} directly")


@pytest.fixture
async def other(settings: Settings, admin: Credentials) -> AsyncIterator[Bus]:
    """Another agent, writing through plain buckets."""
    assert settings.nats_url
    b = await Bus.connect(settings.nats_url, name="other", credentials=admin)
    yield b
    await b.close()


async def test_loads_existing_keys_then_follows_other_writers(bus: Bus, other: Bus) -> None:
    await other.tasks.put("T1.a", task("T1", "a", attempts=1))
    await other.tasks.put("T2.b", task("T2", "b", attempts=2))
    await bus.mirror_state()
    mirror = mirror_of(bus)
    assert await held(mirror) == {"T1.a": 1, "T2.b": 2}

    written = await other.tasks.update_versioned("T1.a", bump)
    assert written is not None
    revision = int(await other.tasks.kv.put("T3.c", task("T3", "c").model_dump_json().encode()))
    await mirror.caught_up("T1.a", written.revision, timeout=30)
    await mirror.caught_up("T3.c", revision, timeout=30)
    assert await held(mirror) == {"T1.a": 2, "T2.b": 2, "T3.c": 0}
    found = await mirror.get("T1.a")
    assert found is not None and found.revision == written.revision
    # Served from memory: the same parsed object, and no longer following once stopped.
    assert await mirror.get("T1.a") is found
    await mirror.stop()
    await other.tasks.update("T1.a", bump)
    assert await mirror.value("T1.a") == found.value
    assert (await other.tasks.value("T1.a")) == found.value.model_copy(update={"attempts": 3})


async def test_own_writes_are_visible_at_once(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    await bus.mirror_state()
    mirror = mirror_of(bus)
    # Neither the watch nor a direct read can bring the writes back: only write-through.
    await mirror.stop()
    monkeypatch.setattr(mirror, "read", no_read)
    assert await mirror.create("T1.a", task("T1", "a"))
    assert not await mirror.create("T1.a", task("T1", "a", attempts=9))
    written = await mirror.update_versioned("T1.a", bump)
    assert written is not None and written.value.attempts == 1
    found = await mirror.get("T1.a")
    assert found is not None and found.revision == written.revision
    # The mirror kept the bytes, not the caller's object.
    written.value.attempts = 42
    assert (await mirror.value("T1.a")) == found.value
    assert found.value.attempts == 1
    monkeypatch.undo()
    assert (await mirror.read("T1.a")) == found


async def test_stale_known_value_never_loses_an_update(bus: Bus, other: Bus) -> None:
    await bus.mirror_state()
    mirror = mirror_of(bus)
    assert await other.tasks.create("T1.a", task("T1", "a"))
    stale = await other.tasks.read("T1.a")
    assert stale is not None
    await other.tasks.update("T1.a", bump)
    written = await mirror.update_versioned("T1.a", bump, known=stale)
    assert written is not None and written.value.attempts == 2
    assert (await other.tasks.value("T1.a")) == written.value

    # A change declining on the stale value is asked again on the latest one.
    await other.tasks.update("T1.a", lambda t: t.model_copy(update={"status": TaskStatus.RUNNING}))
    queued = Versioned(task("T1", "a", status=TaskStatus.QUEUED), written.revision)

    def finish(t: TaskState) -> TaskState | None:
        return (
            t.model_copy(update={"status": TaskStatus.SUCCEEDED})
            if t.status is TaskStatus.RUNNING
            else None
        )

    done = await mirror.update_versioned("T1.a", finish, known=queued)
    assert done is not None and done.value.status is TaskStatus.SUCCEEDED
    assert done.value.attempts == 2
    # Declining on the latest value leaves the key alone.
    assert await mirror.update_versioned("T1.a", finish, known=queued) is None
    assert (await other.tasks.read("T1.a")) == done

    # The mirror's own copy gone stale (watch stopped): the write still builds on the latest.
    await mirror.stop()
    await other.tasks.update("T1.a", bump)
    assert (await mirror.value("T1.a")) == done.value
    latest = await mirror.update_versioned("T1.a", bump)
    assert latest is not None and latest.value.attempts == 4
    assert (await other.tasks.read("T1.a")) == latest == (await mirror.get("T1.a"))


async def test_concurrent_increments_from_two_clients_all_land(bus: Bus, other: Bus) -> None:
    await bus.mirror_state()
    mirror = mirror_of(bus)
    assert await mirror.create("T1.a", task("T1", "a"))
    assert await other.tasks.create("T1.b", task("T1", "b"))

    async def increments(client: Bus, key: str) -> None:
        for _ in range(50):
            await client.tasks.update_versioned(key, bump)

    await asyncio.gather(*(increments(c, k) for c in (bus, other) for k in ("T1.a", "T1.b")))
    for key in ("T1.a", "T1.b"):
        latest = await other.tasks.read(key)
        assert latest is not None and latest.value.attempts == 100
        await mirror.caught_up(key, latest.revision, timeout=30)
        assert (await mirror.get(key)) == latest
    assert await held(mirror) == {"T1.a": 100, "T1.b": 100}


async def test_caught_up_reads_unknown_keys_and_waits_for_known_ones(
    bus: Bus, other: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    await other.tasks.put("T1.a", task("T1", "a"))
    await bus.mirror_state()
    mirror = mirror_of(bus)

    # The watch brings a revision it will reach, without a direct read.
    with monkeypatch.context() as m:
        m.setattr(mirror, "read", no_read)
        written = await other.tasks.update_versioned("T1.a", bump)
        assert written is not None
        await mirror.caught_up("T1.a", written.revision, timeout=30)
        assert (await mirror.get("T1.a")) == written
        await mirror.caught_up("T1.a", written.revision - 1, timeout=30)

    # With the watch stopped, an unknown key is read directly and a known one on timeout.
    await mirror.stop()
    revision = await other.tasks.put("T2.b", task("T2", "b", attempts=7))
    assert "T2.b" not in await held(mirror)
    await mirror.caught_up("T2.b", revision)
    assert (await held(mirror))["T2.b"] == 7
    later = await other.tasks.update_versioned("T1.a", bump)
    assert later is not None
    await mirror.caught_up("T1.a", later.revision, timeout=0.1)
    assert (await mirror.get("T1.a")) == later


async def test_forgotten_keys_leave_memory_but_stay_readable(bus: Bus, other: Bus) -> None:
    done = TicketState(id="T9", title="done", status=TicketStatus.DONE)
    running = TicketState(id="T1", title="running")
    await other.tickets.put("T9", done)
    await other.tickets.put("T1", running)
    await other.tasks.put("T9.a", task("T9", "a"))
    await other.tasks.put("T1.a", task("T1", "a"))
    await other.tasks.put("T1.b", task("T1", "b"))
    await bus.mirror_state()
    mirror = mirror_of(bus)
    # Finished tickets are forgotten on start.
    assert await held(mirror) == {"T1.a": 0, "T1.b": 0}
    assert await bus.tickets.values() == [running]

    mirror.forget("T1")
    bus.tickets.forget("T1")
    assert await held(mirror) == {}
    assert await bus.tickets.values() == []
    for key in ("T1.a", "T1.b", "T9.a"):
        assert (await mirror.get(key)) == (await other.tasks.read(key))
    assert (await bus.tickets.value("T9")) == done
    assert (await bus.tickets.value("T1")) == running


async def test_keys_deleted_elsewhere_leave_the_mirror(bus: Bus, other: Bus) -> None:
    for name in "abc":
        await other.tasks.put(f"T1.{name}", task("T1", name))
    await bus.mirror_state()
    mirror = mirror_of(bus)
    assert set(await held(mirror)) == {"T1.a", "T1.b", "T1.c"}
    await other.tasks.delete("T1.a")
    await other.tasks.kv.purge("T1.b")

    async def gone() -> bool:
        return set(await held(mirror)) == {"T1.c"}

    await wait_until(gone, timeout=10)
    assert await mirror.get("T1.a") is None
    assert await mirror.get("T1.b") is None
    assert await mirror.update_versioned("T1.a", bump) is None


async def test_close_is_safe_twice_after_mirroring(settings: Settings, admin: Credentials) -> None:
    assert settings.nats_url
    b = await Bus.connect(
        settings.nats_url, name="closer", topology=settings.topology(), credentials=admin
    )
    await b.tasks.put("T1.a", task("T1", "a"))
    await b.mirror_state()
    mirror = mirror_of(b)
    await b.close()
    assert b.nc.is_closed
    await b.close()
    assert b.nc.is_closed
    await mirror.stop()

"""The object store binding on a real nats-server: conditional puts, verified gets, and
objects that nats-py's own ObjectStore reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bus import Bus, ConflictError, ObjectBucket, ObjectCorrupt, ObjectMissing
from bus import constants as c

pytestmark = pytest.mark.integration


def small_chunks(bus: Bus) -> ObjectBucket:
    # Several chunks from a few KiB, so chunk handling is exercised cheaply.
    return ObjectBucket(bus.js, c.WORKSPACES_BUCKET, bus.patience, chunk_bytes=1024)


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


async def test_put_then_get_returns_the_same_bytes_and_headers(bus: Bus, tmp_path: Path) -> None:
    store = small_chunks(bus)
    source = random_file(tmp_path / "in", 5000)
    stored = await store.put("T1.bundle", source, headers={"Omoi-Head": "abc"}, replacing=None)
    assert (stored.size, stored.chunks) == (5000, 5)

    got = await store.get("T1.bundle", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == source.read_bytes()
    assert got.revision == stored.revision and got.headers == {"Omoi-Head": "abc"}

    # nats-py's own object store reads it too: the layout is JetStream's.
    native = await bus.js.object_store(c.WORKSPACES_BUCKET)
    assert (await native.get("T1.bundle")).data == source.read_bytes()


async def test_a_put_against_a_stale_revision_loses_and_changes_nothing(
    bus: Bus, tmp_path: Path
) -> None:
    store = small_chunks(bus)
    first = await store.put(
        "T2.bundle", random_file(tmp_path / "a", 3000), headers={}, replacing=None
    )
    with pytest.raises(ConflictError):
        await store.put("T2.bundle", random_file(tmp_path / "b", 10), headers={}, replacing=None)
    second = await store.put(
        "T2.bundle", random_file(tmp_path / "c", 2500), headers={}, replacing=first
    )
    with pytest.raises(ConflictError):
        await store.put("T2.bundle", random_file(tmp_path / "d", 10), headers={}, replacing=first)

    current = await store.info("T2.bundle")
    assert current is not None and current.revision == second.revision
    await store.get("T2.bundle", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "c").read_bytes()
    # Neither the losers' chunks nor the replaced object's are left behind.
    info = await bus.js.stream_info(c.obj_stream(c.WORKSPACES_BUCKET), subjects_filter=">")
    subjects = info.state.subjects or {}
    assert set(subjects) == {store.meta_subject("T2.bundle"), store.chunk_subject(second.nuid)}


async def test_a_missing_object_is_none_to_info_and_missing_to_get(
    bus: Bus, tmp_path: Path
) -> None:
    assert await bus.workspaces.info("nope.bundle") is None
    with pytest.raises(ObjectMissing):
        await bus.workspaces.get("nope.bundle", tmp_path / "out")


async def test_a_changed_chunk_is_a_digest_mismatch(bus: Bus, tmp_path: Path) -> None:
    store = small_chunks(bus)
    stored = await store.put(
        "T3.bundle", random_file(tmp_path / "in", 2048), headers={}, replacing=None
    )
    # Swap the second chunk for other bytes of the same size.
    subject = store.chunk_subject(stored.nuid)
    first = await bus.js.get_msg(store.stream, seq=1, subject=subject, next=True)
    second = await bus.js.get_msg(
        store.stream, seq=(first.seq or 0) + 1, subject=subject, next=True
    )
    await bus.js.delete_msg(store.stream, second.seq or 0)
    await bus.js.publish(subject, os.urandom(1024))

    with pytest.raises(ObjectCorrupt, match="digest mismatch"):
        await store.get("T3.bundle", tmp_path / "out")


async def test_missing_chunks_and_a_bad_description_are_corrupt_not_a_hang(
    bus: Bus, tmp_path: Path
) -> None:
    store = small_chunks(bus)
    stored = await store.put(
        "T4.bundle", random_file(tmp_path / "in", 4096), headers={}, replacing=None
    )
    await bus.js.purge_stream(store.stream, subject=store.chunk_subject(stored.nuid))
    with pytest.raises(ObjectCorrupt, match="chunk 1 of 4 is missing"):
        await store.get("T4.bundle", tmp_path / "out")

    await bus.js.publish(store.meta_subject("T5.bundle"), b"not json")
    with pytest.raises(ObjectCorrupt, match="unreadable description"):
        await store.info("T5.bundle")
    meta = {"name": "T6.bundle", "nuid": "x", "size": 0, "chunks": 0, "digest": "md5=zz"}
    await bus.js.publish(store.meta_subject("T6.bundle"), json.dumps(meta).encode())
    with pytest.raises(ObjectCorrupt, match="unreadable digest"):
        await store.get("T6.bundle", tmp_path / "out")


async def test_a_deleted_object_can_be_stored_again_but_not_twice(bus: Bus, tmp_path: Path) -> None:
    store = small_chunks(bus)
    await store.put("T7.bundle", random_file(tmp_path / "a", 100), headers={}, replacing=None)
    await (await bus.js.object_store(c.WORKSPACES_BUCKET)).delete("T7.bundle")
    assert await store.info("T7.bundle") is None
    again = await store.put(
        "T7.bundle", random_file(tmp_path / "b", 200), headers={}, replacing=None
    )
    assert again.size == 200
    with pytest.raises(ConflictError, match="exists"):
        await store.put("T7.bundle", random_file(tmp_path / "c", 10), headers={}, replacing=None)

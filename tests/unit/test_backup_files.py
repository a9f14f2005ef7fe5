"""The backup directory format, the snapshot order and the pre-flight checks (no server)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bus import constants as c
from bus.backup import SnapshotResult, backup_order
from cli.backup import BackupFailed, check_limits, check_version
from cli.backup_files import (
    BackupDirUnusable,
    BackupInvalid,
    BackupWriter,
    Manifest,
    StreamEntry,
    read_verified,
)
from schemas import utcnow


def test_backup_order_takes_messages_first_then_tickets_then_tasks_then_objects() -> None:
    names = [
        "OBJ_omoi_workspaces", "KV_omoi_locks", "KV_omoi_tasks", "KV_omoi_tickets",
        "KV_omoi_heartbeats", "OMOI_DLQ", "OMOI_EVENTS", "OMOI_NEW", "OMOI_GATES",
        "OMOI_TASKS", "OMOI_INTAKE", "KV_other", "ORDERS", "OBJ_other",
    ]  # fmt: skip
    assert backup_order(names) == [
        c.INTAKE_STREAM, c.TASKS_STREAM, c.GATES_STREAM, c.EVENTS_STREAM, c.DLQ_STREAM,
        "OMOI_NEW", "KV_omoi_tickets", "KV_omoi_tasks", "KV_omoi_heartbeats", "KV_omoi_locks",
        "OBJ_omoi_workspaces",
    ]  # fmt: skip


def write_backup(directory: Path, streams: dict[str, bytes]) -> Manifest:
    writer = BackupWriter(directory)
    writer.prepare()
    entries = []
    for name, data in streams.items():
        file, handle = writer.open(name)
        with handle:
            handle.write(data)
        result = SnapshotResult(
            name=name,
            config={"name": name, "storage": "file"},
            state={"messages": 2, "bytes": 10, "first_seq": 1, "last_seq": 2, "consumer_count": 1},
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        entries.append(StreamEntry.of(result, file))
    manifest = Manifest(
        omoi_version="0.1.0", server_version="2.15.1", created_at=utcnow(),
        finished_at=utcnow(), streams=entries,
    )  # fmt: skip
    writer.finish(manifest)
    return manifest


def test_a_written_backup_reads_back_verified(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path / "b", {"OMOI_TASKS": b"tasks", "KV_omoi_tasks": b"kv"})
    assert read_verified(tmp_path / "b") == manifest
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "KV_omoi_tasks.tar.s2", "OMOI_TASKS.tar.s2", "manifest.json",
    ]  # fmt: skip
    entry = manifest.streams[0]
    assert (entry.messages, entry.consumers, entry.last_seq) == (2, 1, 2)


def test_a_writer_refuses_a_used_directory_and_abort_removes_what_it_wrote(
    tmp_path: Path,
) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(BackupDirUnusable, match="not empty"):
        BackupWriter(tmp_path / "used").prepare()
    writer = BackupWriter(tmp_path / "new")
    writer.prepare()
    _, handle = writer.open("OMOI_TASKS")
    handle.close()
    writer.abort()
    assert not (tmp_path / "new").exists()


def rewrite_manifest(directory: Path, change: dict[str, object], entry: int | None = None) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    (manifest if entry is None else manifest["streams"][entry]).update(change)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "entry", "message"),
    [
        ({"format_version": 2}, None, "backup format 2, newer than this Omoi"),
        ({"streams": []}, None, "lists no streams"),
        ({"file": "../OMOI_TASKS.tar.s2"}, 0, "names an unexpected file for OMOI_TASKS"),
        ({"name": "KV_omoi_tasks"}, 0, "lists KV_omoi_tasks twice"),
        ({"size": "big"}, 0, "manifest.json is corrupt (streams.0.size"),
    ],
)
def test_a_manifest_that_does_not_add_up_is_refused(
    tmp_path: Path, change: dict[str, object], entry: int | None, message: str
) -> None:
    write_backup(tmp_path / "b", {"OMOI_TASKS": b"tasks", "KV_omoi_tasks": b"kv"})
    rewrite_manifest(tmp_path / "b", change, entry)
    with pytest.raises(BackupInvalid) as refused:
        read_verified(tmp_path / "b")
    assert message in str(refused.value)


def test_a_file_longer_than_recorded_is_refused(tmp_path: Path) -> None:
    write_backup(tmp_path / "b", {"OMOI_TASKS": b"tasks"})
    (tmp_path / "b" / "OMOI_TASKS.tar.s2").write_bytes(b"tasks and more")
    with pytest.raises(BackupInvalid, match="has 14 bytes, the manifest says 5"):
        read_verified(tmp_path / "b")


def test_a_backup_from_a_newer_server_is_refused_on_an_older_one() -> None:
    check_version("2.15.1", "2.15.0")
    check_version("2.15.1", "2.16.0")
    check_version("2.15.1", "unknown")
    with pytest.raises(BackupFailed, match=r"restore into nats-server 2\.15 or newer"):
        check_version("2.15.1", "2.14.5")


def test_a_restore_that_cannot_fit_the_account_is_refused(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path / "b", {"OMOI_TASKS": b"tasks", "OMOI_DLQ": b"dlq"})
    unlimited = {"storage": 0, "streams": 0, "limits": {"max_storage": -1, "max_streams": -1}}
    check_limits(unlimited, manifest, [])
    small = {"storage": 15, "streams": 1, "limits": {"max_storage": 30, "max_streams": 3}}
    with pytest.raises(BackupFailed, match="needs 20 bytes of JetStream storage"):
        check_limits(small, manifest, [])
    # What --force replaces is freed first.
    check_limits(small, manifest, [{"config": {"name": "OMOI_DLQ"}, "state": {"bytes": 15}}])
    few = {"storage": 0, "streams": 2, "limits": {"max_storage": -1, "max_streams": 3}}
    with pytest.raises(BackupFailed, match="the account allows 3 in all"):
        check_limits(few, manifest, [])

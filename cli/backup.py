"""`omoi backup DIR` and `omoi restore DIR`: every Omoi stream, bucket and object store.

A backup is a JetStream snapshot of each stream (messages plus every consumer's state, so
ack floors and pending deliveries survive), taken in `bus.backup.backup_order`, and a
manifest. A restore checks everything it can before it changes anything: the backup's
files against the manifest, the server's version, its limits, and that it holds no Omoi
data (unless `force`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agents.version import omoi_version
from bus import constants as c
from bus.auth import AuthDir, Credentials
from bus.backup import SnapshotError, Snapshots, backup_order, is_omoi_stream
from bus.errors import BusError
from cli.backup_files import (
    BackupDirUnusable,
    BackupInvalid,
    BackupWriter,
    Manifest,
    StreamEntry,
    read_verified,
)
from cli.local_server import data_dir_server, running_up
from schemas import utcnow

log = logging.getLogger(__name__)

# The analytics store is not in a backup; it is made from the events. Its recorder starts
# over after a restore, so a new store is rebuilt from every restored event (event ids make
# that a no-op for a store that already has them).
RECORDER_CONSUMERS = (
    (c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER),
    (c.DLQ_STREAM, c.RECORDER_DLQ_CONSUMER),
)


class BackupFailed(Exception):
    """A backup or restore that cannot go ahead, or did not finish; the message says why."""


@dataclass(frozen=True)
class RestoredStream:
    entry: StreamEntry
    messages: int
    consumers: int

    @property
    def matches(self) -> bool:
        return self.messages == self.entry.messages and self.consumers == self.entry.consumers


async def take_backup(snapshots: Snapshots, directory: Path) -> Manifest:
    writer = BackupWriter(directory)
    infos = {i["config"]["name"]: i for i in await snapshots.streams()}
    names = backup_order(infos)
    if not names:
        raise BackupFailed("this server holds no Omoi streams: nothing to back up")
    if memory := [n for n in names if infos[n]["config"].get("storage") == "memory"]:
        raise BackupFailed(f"memory streams cannot be snapshotted: {', '.join(memory)}")
    writer.prepare()
    created = utcnow()
    try:
        entries = []
        for name in names:
            file, handle = writer.open(name)
            with handle:
                result = await snapshots.snapshot(name, handle)
                writer.sync(handle)
            entries.append(StreamEntry.of(result, file))
        manifest = Manifest(
            omoi_version=omoi_version(),
            server_version=snapshots.server_version,
            created_at=created,
            finished_at=utcnow(),
            streams=entries,
        )
        writer.finish(manifest)
    except BaseException:
        writer.abort()
        raise
    return manifest


async def restore_backup(
    snapshots: Snapshots, directory: Path, manifest: Manifest, *, force: bool
) -> list[RestoredStream]:
    """Restore a verified backup (see `read_verified`) into the server."""
    account = await snapshots.account_info()
    check_version(manifest.server_version, snapshots.server_version)
    existing = [s for s in await snapshots.streams() if is_omoi_stream(s["config"]["name"])]
    if existing and not force:
        names = ", ".join(sorted(s["config"]["name"] for s in existing))
        raise BackupFailed(
            f"the server already holds Omoi data ({names}); restore into an empty server, "
            "or pass --force to replace it"
        )
    check_limits(account, manifest, existing)
    for stream in existing:
        await snapshots.delete_stream(stream["config"]["name"])
    restored: list[RestoredStream] = []
    try:
        for entry in manifest.streams:
            with (directory / entry.file).open("rb") as source:
                info = await snapshots.restore(entry.config, entry.state, source, entry.sha256)
            state = info["state"]
            restored.append(
                RestoredStream(
                    entry, int(state.get("messages", 0)), int(state.get("consumer_count", 0))
                )
            )
        for name, durable in RECORDER_CONSUMERS:
            await snapshots.replay_from_start(name, durable)
    except (SnapshotError, OSError) as exc:
        for done in restored:
            with contextlib.suppress(SnapshotError):
                await snapshots.delete_stream(done.entry.name)
        replaced = " (the replaced streams are gone)" if existing else ""
        raise BackupFailed(
            f"{exc}; the {len(restored)} stream(s) restored before it were removed again, "
            f"so the server holds no Omoi data now{replaced}"
        ) from None
    return restored


def _version(text: str) -> tuple[int, int] | None:
    parts = text.split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def check_version(backup: str, target: str) -> None:
    made, running = _version(backup), _version(target)
    if made and running and running < made:
        raise BackupFailed(
            f"the backup was taken from nats-server {backup}, and this server runs {target}, "
            f"which may not read its snapshots: restore into nats-server {made[0]}.{made[1]} "
            "or newer"
        )


def check_limits(
    account: dict[str, Any], manifest: Manifest, existing: list[dict[str, Any]]
) -> None:
    limits = account.get("limits") or {}
    freed = sum(int(s["state"].get("bytes", 0)) for s in existing)
    needed = sum(e.bytes for e in manifest.streams)
    max_storage = int(limits.get("max_storage", -1))
    used = int(account.get("storage", 0)) - freed
    if max_storage >= 0 and used + needed > max_storage:
        raise BackupFailed(
            f"the backup needs {needed} bytes of JetStream storage, and this account has "
            f"{max(max_storage - used, 0)} free"
        )
    max_streams = int(limits.get("max_streams", -1))
    streams = int(account.get("streams", 0)) - len(existing) + len(manifest.streams)
    if max_streams >= 0 and streams > max_streams:
        raise BackupFailed(
            f"the backup has {len(manifest.streams)} streams; "
            f"the account allows {max_streams} in all"
        )


# The commands: connect, run, print. Exit code 0 or 1.


@asynccontextmanager
async def _server(
    url: str, data_dir: Path | None, *, restoring: bool, credentials: Credentials | None
) -> AsyncIterator[Snapshots]:
    """NATS at `url`, or with `data_dir` the server of that `omoi up` data directory
    (as that directory's admin identity)."""
    where: contextlib.AbstractAsyncContextManager[str] = contextlib.nullcontext(url)
    if data_dir is not None:
        up = running_up(data_dir)
        if up is not None and restoring:
            raise BackupFailed(
                f"omoi up is running on {data_dir} (pid {up[0]}): stop it before restoring "
                "into its store"
            )
        where = contextlib.nullcontext(up[1]) if up is not None else data_dir_server(data_dir)
        own = AuthDir(data_dir / "auth")
        if up is None:
            own.ensure()  # what the private server admits
        if own.seed_file("admin").exists():
            credentials = own.credentials("admin")
    async with where as address:
        try:
            snapshots = await Snapshots.connect(
                address, name="omoi-backup", credentials=credentials
            )
        except Exception as exc:
            raise BackupFailed(f"cannot reach NATS at {address}: {exc}") from exc
        try:
            yield snapshots
        finally:
            await snapshots.close()


def _emit_json(value: Any) -> None:
    # Straight to stdout: a console would wrap long lines.
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _fail(err: Console, exc: BaseException) -> int:
    err.print("[red]error:[/]", escape(str(exc)))
    return 1


def backup_command(
    url: str,
    directory: Path,
    out: Console,
    err: Console,
    *,
    as_json: bool,
    data_dir: Path | None,
    credentials: Credentials | None = None,
) -> int:
    async def go() -> Manifest:
        async with _server(url, data_dir, restoring=False, credentials=credentials) as snapshots:
            return await take_backup(snapshots, directory)

    try:
        manifest = asyncio.run(go())
    except (BackupFailed, BackupDirUnusable, BusError, OSError) as exc:
        return _fail(err, exc)
    if as_json:
        summary = manifest.model_dump(
            mode="json", exclude={"streams": {"__all__": {"config", "state"}}}
        )
        _emit_json(summary)
        return 0
    table = Table(
        "stream", "messages", "consumers", "stored bytes", "file bytes", title="backed up"
    )
    for e in manifest.streams:
        table.add_row(e.name, str(e.messages), str(e.consumers), str(e.bytes), str(e.size))
    out.print(table)
    out.print(f"backup complete: {directory} (nats-server {manifest.server_version})")
    return 0


def restore_command(
    url: str,
    directory: Path,
    out: Console,
    err: Console,
    *,
    force: bool,
    as_json: bool,
    data_dir: Path | None,
    credentials: Credentials | None = None,
) -> int:
    try:
        manifest = read_verified(directory)
    except BackupInvalid as exc:
        return _fail(err, exc)

    async def go() -> list[RestoredStream]:
        async with _server(url, data_dir, restoring=True, credentials=credentials) as snapshots:
            return await restore_backup(snapshots, directory, manifest, force=force)

    try:
        restored = asyncio.run(go())
    except (BackupFailed, BusError, OSError) as exc:
        return _fail(err, exc)
    if as_json:
        rows = [
            {"stream": r.entry.name, "messages": r.messages, "consumers": r.consumers,
             "backed_up_messages": r.entry.messages, "backed_up_consumers": r.entry.consumers}
            for r in restored
        ]  # fmt: skip
        created = manifest.created_at.isoformat()
        _emit_json({"backup": str(directory), "created_at": created, "streams": rows})
        return 0
    table = Table(
        "stream",
        "messages",
        "consumers",
        title=f"restored from {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC",
    )
    for r in restored:
        table.add_row(r.entry.name, str(r.messages), str(r.consumers))
    out.print(table)
    for r in restored:
        if not r.matches:
            err.print(
                f"[yellow]note:[/] {r.entry.name} holds {r.messages} messages and {r.consumers} "
                f"consumers; the backup recorded {r.entry.messages} and {r.entry.consumers}"
            )
    out.print("restore complete: start the agents (`omoi up`) to resume in-flight work")
    return 0

"""The backup directory: one snapshot file per stream, and a manifest written last.

A backup is complete exactly when `manifest.json` exists: it is written to a temporary
name, flushed to disk and renamed only after every snapshot file is on disk. The manifest
records each file's size and SHA-256, so a truncated or altered file is found before
anything is restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agents.version import omoi_version
from bus.backup import SnapshotResult, is_omoi_stream

MANIFEST = "manifest.json"
MANIFEST_PARTIAL = "manifest.json.tmp"
SNAPSHOT_SUFFIX = ".tar.s2"
FORMAT = "omoi-backup"
FORMAT_VERSION = 1


class BackupInvalid(Exception):
    """The directory is not a complete, intact backup; `problems` says what is wrong."""

    def __init__(self, directory: Path, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{directory} is not a backup that can be restored:\n{lines}")


class BackupDirUnusable(Exception):
    """The directory given to back up into is not new or empty."""


class StreamEntry(BaseModel):
    """One stream in the backup, with what the server said it held at the snapshot."""

    model_config = ConfigDict(extra="ignore")

    name: str
    file: str
    size: int
    sha256: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int
    config: dict[str, Any]
    state: dict[str, Any]

    @classmethod
    def of(cls, result: SnapshotResult, file: str) -> StreamEntry:
        state = result.state
        return cls(
            name=result.name,
            file=file,
            size=result.size,
            sha256=result.sha256,
            messages=int(state.get("messages", 0)),
            bytes=int(state.get("bytes", 0)),
            first_seq=int(state.get("first_seq", 0)),
            last_seq=int(state.get("last_seq", 0)),
            consumers=int(state.get("consumer_count", 0)),
            config=result.config,
            state=state,
        )


class Manifest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["omoi-backup"] = "omoi-backup"
    format_version: int = FORMAT_VERSION
    omoi_version: str
    server_version: str
    created_at: datetime
    finished_at: datetime
    streams: list[StreamEntry]


def snapshot_file(stream: str) -> str:
    return f"{stream}{SNAPSHOT_SUFFIX}"


class BackupWriter:
    """Writes a backup into a new or empty directory; `abort` removes what it wrote."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: list[Path] = []
        self._created_dir = False

    def prepare(self) -> None:
        if self.directory.exists():
            if not self.directory.is_dir():
                raise BackupDirUnusable(f"{self.directory} exists and is not a directory")
            if any(self.directory.iterdir()):
                raise BackupDirUnusable(
                    f"{self.directory} is not empty; back up into a new or empty directory"
                )
        else:
            self.directory.mkdir(parents=True)
            self._created_dir = True

    def open(self, stream: str) -> tuple[str, Any]:
        name = snapshot_file(stream)
        path = self.directory / name
        self._written.append(path)
        return name, path.open("xb")

    @staticmethod
    def sync(handle: Any) -> None:
        handle.flush()
        os.fsync(handle.fileno())

    def finish(self, manifest: Manifest) -> Path:
        partial = self.directory / MANIFEST_PARTIAL
        self._written.append(partial)
        with partial.open("w") as f:
            f.write(manifest.model_dump_json(indent=2) + "\n")
            self.sync(f)
        final = self.directory / MANIFEST
        partial.rename(final)
        _sync_dir(self.directory)
        return final

    def abort(self) -> None:
        for path in self._written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.directory.rmdir()


def read_verified(directory: Path) -> Manifest:
    """The manifest of a complete backup whose every file is intact, or `BackupInvalid`."""
    if not directory.is_dir():
        raise BackupInvalid(directory, ["no such directory"])
    path = directory / MANIFEST
    if not path.is_file():
        raise BackupInvalid(directory, [_why_no_manifest(directory)])
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise BackupInvalid(
            directory, [f"{MANIFEST} is corrupt ({where}: {first['msg']})"]
        ) from None
    if manifest.format_version > FORMAT_VERSION:
        raise BackupInvalid(
            directory,
            [
                f"it is in backup format {manifest.format_version}, newer than this Omoi "
                f"({omoi_version()}) reads ({FORMAT_VERSION}); restore with a newer omoi"
            ],
        )
    problems = _entry_problems(manifest)
    if not problems:
        problems = [p for entry in manifest.streams if (p := _file_problem(directory, entry))]
    if problems:
        raise BackupInvalid(directory, problems)
    return manifest


def _why_no_manifest(directory: Path) -> str:
    if (directory / MANIFEST_PARTIAL).exists() or any(directory.glob(f"*{SNAPSHOT_SUFFIX}")):
        return f"it has no {MANIFEST}: the backup did not finish (take a new one)"
    return f"it has no {MANIFEST}: not an Omoi backup"


def _entry_problems(manifest: Manifest) -> list[str]:
    problems = []
    if not manifest.streams:
        problems.append(f"{MANIFEST} lists no streams")
    seen: set[str] = set()
    for entry in manifest.streams:
        if entry.name in seen:
            problems.append(f"{MANIFEST} lists {entry.name} twice")
        seen.add(entry.name)
        if not is_omoi_stream(entry.name) or entry.config.get("name") != entry.name:
            problems.append(f"{MANIFEST} has an entry that is not an Omoi stream: {entry.name!r}")
        if entry.file != snapshot_file(entry.name):
            problems.append(f"{MANIFEST} names an unexpected file for {entry.name}: {entry.file!r}")
    return problems


def _file_problem(directory: Path, entry: StreamEntry) -> str | None:
    path = directory / entry.file
    if not path.is_file():
        return f"{entry.file} (stream {entry.name}) is missing"
    size = path.stat().st_size
    if size < entry.size:
        return f"{entry.file} is truncated: {size} of {entry.size} bytes"
    if size != entry.size:
        return f"{entry.file} has {size} bytes, the manifest says {entry.size}"
    if file_sha256(path) != entry.sha256:
        return f"{entry.file} is corrupt: its SHA-256 does not match the manifest"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

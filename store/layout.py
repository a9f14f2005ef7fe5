"""The published layout: Parquet segments per kind, their names, and the omoi.sql script.

    published/
      events/seg-<first>-<last>.parquet        first/last: recorded_seq range of the rows
      dead_letters/seg-<first>-<last>.parquet
      audit_events/seg-<first>-<last>.parquet
      logs/seg-<first>-<last>.parquet
      spans/seg-<first>-<last>.parquet
      omoi.sql                                 views over the segments, for any DuckDB

Files appear only through `os.replace` of a finished temp file, so a reader never sees half
of one. The writer owns the directory; readers only list and read it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from store.sql import load_sql, quote_ident, quote_literal

KINDS: tuple[str, ...] = ("events", "dead_letters", "audit_events", "logs", "spans")

# The published columns, in order. The writer's tables have one more, recorded_seq, which is
# bookkeeping and stays out of the files.
PUBLIC_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (
        ("id", "VARCHAR"),
        ("type", "VARCHAR"),
        ("ticket_id", "VARCHAR"),
        ("task", "VARCHAR"),
        ("agent", "VARCHAR"),
        ("at", "TIMESTAMPTZ"),
        ("data", "JSON"),
        ("stream_seq", "BIGINT"),
        ("recorded_at", "TIMESTAMPTZ"),
    ),
    "dead_letters": (
        ("stream_seq", "BIGINT"),
        ("subject", "VARCHAR"),
        ("origin", "VARCHAR"),
        ("reason", "VARCHAR"),
        ("category", "VARCHAR"),
        ("origin_subject", "VARCHAR"),
        ("origin_seq", "BIGINT"),
        ("payload", "VARCHAR"),
        ("at", "TIMESTAMPTZ"),
    ),
    "audit_events": (
        ("id", "VARCHAR"),
        ("at", "TIMESTAMPTZ"),
        ("action", "VARCHAR"),
        ("outcome", "VARCHAR"),
        ("actor", "VARCHAR"),
        ("role", "VARCHAR"),
        ("via", "VARCHAR"),
        ("source", "VARCHAR"),
        ("client", "VARCHAR"),
        ("target", "VARCHAR"),
        ("status", "INTEGER"),
        ("detail", "VARCHAR"),
        ("count", "INTEGER"),
        ("stream_seq", "BIGINT"),
        ("recorded_at", "TIMESTAMPTZ"),
    ),
    "logs": (
        ("stream_seq", "BIGINT"),
        ("at", "TIMESTAMPTZ"),
        ("level", "VARCHAR"),
        ("logger", "VARCHAR"),
        ("message", "VARCHAR"),
        ("role", "VARCHAR"),
        ("agent", "VARCHAR"),
        ("ticket_id", "VARCHAR"),
        ("task", "VARCHAR"),
        ("subject", "VARCHAR"),
        ("trace_id", "VARCHAR"),
        ("span_id", "VARCHAR"),
        ("exc", "VARCHAR"),
        ("recorded_at", "TIMESTAMPTZ"),
    ),
    "spans": (
        ("span_id", "VARCHAR"),
        ("trace_id", "VARCHAR"),
        ("parent_id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("kind", "VARCHAR"),
        ("role", "VARCHAR"),
        ("agent", "VARCHAR"),
        ("ticket_id", "VARCHAR"),
        ("task", "VARCHAR"),
        ("at", "TIMESTAMPTZ"),
        ("end_at", "TIMESTAMPTZ"),
        ("duration_ms", "DOUBLE"),
        ("status", "VARCHAR"),
        ("status_message", "VARCHAR"),
        ("attributes", "JSON"),
        ("stream_seq", "BIGINT"),
        ("recorded_at", "TIMESTAMPTZ"),
    ),
}

SCRIPT_NAME = "omoi.sql"
# Zero-padded so that names sort in range order.
_SEGMENT_RE = re.compile(r"^seg-(\d{12,})-(\d{12,})\.parquet$")


@dataclass(frozen=True, order=True)
class Segment:
    """One published file holding the rows with recorded_seq in [first, last]."""

    first: int
    last: int
    path: Path


def segment_path(directory: Path, first: int, last: int) -> Path:
    return directory / f"seg-{first:012d}-{last:012d}.parquet"


def temp_path(path: Path) -> Path:
    # Not ending in .parquet, so the readers' `*.parquet` glob never matches it.
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def list_segments(directory: Path) -> list[Segment]:
    """Every segment file in `directory`, in range order; no directory means none."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _SEGMENT_RE.match(name)
        if m:
            found.append(Segment(int(m[1]), int(m[2]), directory / name))
    return sorted(found)


def visible(segments: list[Segment]) -> list[Segment]:
    """The segments to read: those whose rows no other segment also holds.

    A compaction writes the merged file before it removes the inputs, and a crash can stop it
    in between; reading only the covering file keeps every row exactly once meanwhile.
    """
    kept: list[Segment] = []
    reach = -1
    # Sorted by start, widest first: a segment is covered exactly when an earlier one
    # reaches as far as it does.
    for seg in sorted(segments, key=lambda s: (s.first, -s.last)):
        if seg.last > reach:
            kept.append(seg)
            reach = seg.last
    return kept


def select_list(kind: str) -> str:
    return ", ".join(quote_ident(name) for name, _ in PUBLIC_COLUMNS[kind])


def empty_select(kind: str) -> str:
    """A query with the kind's published columns and no rows, for when nothing is published."""
    cols = ", ".join(f"NULL::{typ} AS {quote_ident(name)}" for name, typ in PUBLIC_COLUMNS[kind])
    return f"SELECT {cols} WHERE false"


def parquet_source(paths: list[Path]) -> str:
    return "read_parquet([" + ", ".join(quote_literal(str(p)) for p in paths) + "])"


def render_script(published_dir: Path, has_files: dict[str, bool]) -> str:
    """omoi.sql: views over the segment files (or empty ones), then the analytics views.

    It globs the directories rather than naming files, so it stays valid while segments
    are added; it only changes when a kind goes from no files to some, or back.
    """
    parts = [
        "-- Omoi analytics over the published Parquet segments. Written by store.EventStore;",
        "-- do not edit. Use: duckdb -init omoi.sql   or   duckdb.sql(open('omoi.sql').read())",
    ]
    for kind in KINDS:
        if has_files.get(kind, False):
            pattern = str(published_dir.resolve() / kind / "*.parquet")
            source = f"SELECT {select_list(kind)} FROM read_parquet({quote_literal(pattern)})"
        else:
            source = empty_select(kind)
        parts.append(f"CREATE OR REPLACE VIEW {kind} AS {source};")
    parts.append(load_sql("views.sql"))
    return "\n".join(parts) + "\n"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk before the watermark says the file exists.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(tmp: Path, path: Path) -> None:
    """Move a finished temp file into place durably and atomically."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = temp_path(path)
    tmp.write_text(text, encoding="utf-8")
    install(tmp, path)

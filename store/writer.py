"""The writer: one DuckDB file the event consumer appends to, published as Parquet segments."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self

import duckdb
import pyarrow as pa

from store import layout
from store.errors import StoreError, clean_message
from store.records import (
    AUDIT_COLUMNS,
    LOG_COLUMNS,
    AuditRecord,
    DeadLetter,
    LogLine,
    RecordedEvent,
    audit_table,
    dead_letters_table,
    events_table,
    logs_table,
)
from store.segments import SegmentFiles
from store.span_records import SPAN_COLUMNS, SpanRow, spans_table
from store.sql import fetch_int, load_sql

# The records are re-exported: callers that write need nothing else from the package.
__all__ = ["AuditRecord", "DeadLetter", "EventStore", "LogLine", "RecordedEvent", "SpanRow"]

log = logging.getLogger(__name__)

_BATCH = "_omoi_batch"


class EventStore:
    """The analytics database, fed in batches, and the Parquet files readers use.

    Only one process may have a database file open for writing (DuckDB locks it). Methods
    are serialised by a lock, so threads may share an instance; that also keeps
    recorded_seq in commit order, which the publish watermark relies on.

    Args:
        path: The DuckDB database file; created if missing.
        published_dir: Where `publish` writes segments and omoi.sql. It belongs to this
            database: recorded_seq ranges name the files.
    """

    def __init__(self, path: Path, published_dir: Path) -> None:
        self.path = path
        self.published_dir = published_dir
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.RLock()

    # Lifecycle

    def open(self) -> Self:
        """Open (and create or migrate) the database; a no-op when already open."""
        with self._lock:
            if self._con is not None:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                con = duckdb.connect(str(self.path))
            except duckdb.Error as exc:
                raise StoreError(f"cannot open {self.path}: {clean_message(exc)}") from exc
            try:
                # Timestamps leave DuckDB in UTC whatever the host's zone.
                con.execute("SET TimeZone = 'UTC'")
                con.execute(load_sql("schema.sql"))
                con.execute(load_sql("views.sql"))
            except duckdb.Error as exc:
                con.close()
                raise StoreError(f"cannot prepare {self.path}: {clean_message(exc)}") from exc
            self._con = con
            log.info("event store open at %s", self.path)
            return self

    def close(self) -> None:
        """Close the database; safe to call repeatedly or before `open`."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _session(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection under the lock, with DuckDB errors turned into StoreError."""
        with self._lock:
            if self._con is None:
                raise StoreError("the event store is not open")
            try:
                yield self._con
            except duckdb.Error as exc:
                raise StoreError(f"{what} failed: {clean_message(exc)}") from exc
            except (pa.ArrowException, OSError) as exc:
                raise StoreError(f"{what} failed: {exc}") from exc

    # Writing

    def ingest(self, events: Sequence[RecordedEvent]) -> int:
        """Record a batch in one transaction; returns how many rows were new.

        Events already recorded (same id) are skipped, so a redelivered batch is harmless.
        """
        if not events:
            return 0
        with self._session("ingest") as con:
            return self._insert(
                con,
                events_table(events),
                'INSERT OR IGNORE INTO events (id, type, ticket_id, task, agent, "at", data, '
                'stream_seq, recorded_at) SELECT id, type, ticket_id, task, agent, "at", '
                f"data, stream_seq, now() FROM {_BATCH} ORDER BY stream_seq",
            )

    def ingest_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Record dead letters in one transaction; returns how many were new (by stream_seq)."""
        if not letters:
            return 0
        with self._session("ingest of dead letters") as con:
            return self._insert(
                con,
                dead_letters_table(letters),
                "INSERT OR IGNORE INTO dead_letters (stream_seq, subject, origin, reason, "
                'category, origin_subject, origin_seq, payload, "at") SELECT stream_seq, '
                'subject, origin, reason, category, origin_subject, origin_seq, payload, "at" '
                f"FROM {_BATCH} ORDER BY stream_seq",
            )

    def ingest_audit(self, records: Sequence[AuditRecord]) -> int:
        """Record audit entries in one transaction; returns how many were new (by id)."""
        if not records:
            return 0
        return self._ingest_columns("audit_events", AUDIT_COLUMNS, audit_table(records))

    def ingest_logs(self, lines: Sequence[LogLine]) -> int:
        """Record log lines in one transaction; returns how many were new (by stream_seq)."""
        if not lines:
            return 0
        return self._ingest_columns("logs", LOG_COLUMNS, logs_table(lines))

    def ingest_spans(self, rows: Sequence[SpanRow]) -> int:
        """Record spans in one transaction; returns how many were new (by span id)."""
        if not rows:
            return 0
        return self._ingest_columns("spans", SPAN_COLUMNS, spans_table(rows))

    def _ingest_columns(self, table: str, columns: Sequence[str], batch: pa.Table) -> int:
        """Insert `batch`, whose columns are the table's but `recorded_at`, new rows only."""
        with self._session(f"ingest into {table}") as con:
            names = ", ".join(f'"{name}"' for name in columns)
            return self._insert(
                con,
                batch,
                f"INSERT OR IGNORE INTO {table} ({names}, recorded_at) "
                f"SELECT {names}, now() FROM {_BATCH} ORDER BY stream_seq",
            )

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, batch: pa.Table, sql: str) -> int:
        # One set-based INSERT from Arrow: executemany runs a statement per row, ~2k rows/s.
        con.register(_BATCH, batch)
        try:
            con.begin()
            try:
                inserted = fetch_int(con, sql)
                con.commit()
            except BaseException:
                con.rollback()
                raise
        finally:
            con.unregister(_BATCH)
        return inserted

    # Publishing

    def publish(self) -> list[Path]:
        """Write what was recorded since the last publish as new segments; returns them.

        Also rewrites omoi.sql. Safe to call after a crash at any point of a previous
        publish: a segment whose watermark was not recorded is written again under the
        same name, so nothing is lost and nothing is published twice.
        """
        with self._session("publish") as con:
            written: list[Path] = []
            for kind in layout.KINDS:
                written += self._files(con, kind).publish()
            self._write_script()
            if written:
                log.info("published %d segment(s)", len(written))
            return written

    def compact(self, max_segments: int = 64) -> list[Path]:
        """Merge each kind's published segments into one when there are more than
        `max_segments`, so readers open few files. Returns the merged files."""
        with self._session("compact") as con:
            merged = [
                path
                for kind in layout.KINDS
                if (path := self._files(con, kind).compact(max_segments)) is not None
            ]
            self._write_script()
            return merged

    def prune(self, older_than: datetime) -> int:
        """Delete events and dead letters from before `older_than` from the database and
        the segments; returns the number of rows removed from the database.

        An event pruned here and then redelivered by the stream would be recorded again,
        so keep `older_than` behind the stream's retention.
        """
        if older_than.tzinfo is None:
            raise StoreError("prune needs a timezone-aware cutoff")
        with self._session("prune") as con:
            removed = 0
            for kind in layout.KINDS:
                removed += fetch_int(con, f'DELETE FROM {kind} WHERE "at" < ?', [older_than])
            for kind in layout.KINDS:
                files = self._files(con, kind)
                # If this removes a kind's last file, the script must stop globbing first:
                # read_parquet fails on a pattern that matches nothing.
                files.prune(older_than, before_emptying=partial(self._write_script, kind))
            self._write_script()
            log.info("pruned %d row(s) recorded before %s", removed, older_than.isoformat())
            return removed

    def counts(self) -> dict[str, int]:
        """Rows per table in the database: {"events": n, "dead_letters": m, ...}."""
        with self._session("count") as con:
            result = {}
            for kind in layout.KINDS:
                result[kind] = fetch_int(con, f"SELECT count(*) FROM {kind}")
            return result

    def _files(self, con: duckdb.DuckDBPyConnection, kind: str) -> SegmentFiles:
        return SegmentFiles(con, kind, self.published_dir / kind)

    def _write_script(self, emptying: str | None = None) -> None:
        has_files = {
            kind: kind != emptying and bool(layout.list_segments(self.published_dir / kind))
            for kind in layout.KINDS
        }
        self.published_dir.mkdir(parents=True, exist_ok=True)
        script = layout.render_script(self.published_dir, has_files)
        target = self.published_dir / layout.SCRIPT_NAME
        if not target.exists() or target.read_text(encoding="utf-8") != script:
            layout.write_text_atomic(target, script)

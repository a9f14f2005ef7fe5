"""Read-only SQL over the published segments, for the gateway and the CLI."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from store import layout
from store.errors import QueryError, ReadOnlyError, clean_message
from store.results import QueryResult, plain_rows
from store.sql import load_sql

__all__ = ["QueryResult", "Reader"]

log = logging.getLogger(__name__)

_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\s+(ANALYZE\s+)?", re.IGNORECASE)
_LOAD_TRIES = 3

Signature = tuple[tuple[str, str, int, int], ...]


class Reader:
    """Runs read-only queries against an in-memory copy of the published data.

    The copy is loaded from the Parquet segments into a fresh in-memory database, which is
    then locked: external access is switched off (no files, no network, no extensions) and
    the configuration frozen. Only a single SELECT (or EXPLAIN of one) is accepted; SHOW,
    DESCRIBE, SUMMARIZE and table functions such as `pragma_version()` are SELECTs and so
    allowed, while PRAGMA, SET, CALL, COPY, ATTACH, INSTALL/LOAD and all DDL/DML are refused.

    Each query first checks, at most once every `refresh_s`, whether the segment files
    changed; if so a new copy is loaded and swapped in, while queries already running
    finish on the old one. Thread-safe.

    Args:
        published_dir: The directory EventStore.publish writes.
        refresh_s: The least time between two looks at the directory.
        clock: Seconds, monotonic; injectable so tests need not sleep.
    """

    def __init__(
        self,
        published_dir: Path,
        *,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.published_dir = published_dir
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        # Held by the one thread that loads a new copy; the others go on with the old one.
        self._reload_lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._signature: Signature | None = None
        self._checked_at = 0.0

    def query(
        self, sql: str, params: Sequence[object] = (), *, max_rows: int = 10_000
    ) -> QueryResult:
        """Run one read statement, with `?` placeholders bound to `params`; keeps the
        first `max_rows` rows.

        Raises:
            ReadOnlyError: `sql` is not a single read statement, or tried to reach a file.
            QueryError: the SQL is invalid or failed.
        """
        if max_rows < 0:
            raise QueryError("max_rows must not be negative")
        cur = self._current().cursor()
        try:
            _check_read_only(cur, sql)
            cur.execute(sql, list(params) if params else None)
            columns = [d[0] for d in cur.description or []]
            types = [str(d[1]) for d in cur.description or []]
            rows = cur.fetchmany(max_rows + 1)
        except duckdb.PermissionException as exc:
            raise ReadOnlyError(f"read-only: {clean_message(exc)}") from exc
        except duckdb.Error as exc:
            raise QueryError(clean_message(exc)) from exc
        finally:
            cur.close()
        return QueryResult(
            columns=columns,
            rows=plain_rows(rows[:max_rows], types),
            truncated=len(rows) > max_rows,
        )

    def tables(self) -> list[str]:
        """The names of the tables and views a query can use, sorted."""
        cur = self._current().cursor()
        try:
            rows = cur.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        finally:
            cur.close()
        return [str(r[0]) for r in rows]

    def refresh(self) -> bool:
        """Look at the files now, whatever `refresh_s` says; True if a new copy was loaded."""
        with self._reload_lock:
            return self._reload(force=True)

    def close(self) -> None:
        """Drop the loaded copy; the next query loads it again."""
        with self._lock:
            con, self._con, self._signature = self._con, None, None
        if con is not None:
            con.close()

    # Loading

    def _current(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            con = self._con
            due = con is None or self._clock() - self._checked_at >= self.refresh_s
        if due and self._reload_lock.acquire(blocking=con is None):
            try:
                self._reload(force=False)
            finally:
                self._reload_lock.release()
        with self._lock:
            if self._con is None:
                raise QueryError("no data loaded")
            return self._con

    def _reload(self, *, force: bool) -> bool:
        """Load a new copy if the files changed. Call with `_reload_lock` held."""
        with self._lock:
            if self._con is not None:
                if not force and self._clock() - self._checked_at < self.refresh_s:
                    return False
                known = self._signature
            else:
                known = None
        try:
            found = self._load_if_changed(known)
        except (OSError, duckdb.Error) as exc:
            return self._load_failed(exc)
        with self._lock:
            self._checked_at = self._clock()
            if found is None:
                return False
            # The old copy is not closed: queries may still run on its cursors, and closing
            # a connection closes its cursors. It is freed when the last of them is.
            self._con, self._signature = found
        log.info("loaded published data (%d segment files)", len(found[1]))
        return True

    def _load_if_changed(
        self, known: Signature | None
    ) -> tuple[duckdb.DuckDBPyConnection, Signature] | None:
        for attempt in range(1, _LOAD_TRIES + 1):
            try:
                plan, signature = self._plan()
                if signature == known:
                    return None
                return _load(plan), signature
            except (OSError, duckdb.IOException):
                # A compaction or prune removed a file between listing and loading.
                if attempt == _LOAD_TRIES:
                    raise
                log.debug("segments changed while loading; listing again", exc_info=True)
        return None

    def _load_failed(self, exc: BaseException) -> bool:
        with self._lock:
            if self._con is None:
                msg = f"cannot load {self.published_dir}: {clean_message(exc)}"
                raise QueryError(msg) from exc
            self._checked_at = self._clock()
        log.warning("keeping the loaded data; reloading failed: %s", clean_message(exc))
        return False

    def _plan(self) -> tuple[dict[str, list[Path]], Signature]:
        plan: dict[str, list[Path]] = {}
        signature = []
        for kind in layout.KINDS:
            segs = layout.visible(layout.list_segments(self.published_dir / kind))
            plan[kind] = [s.path for s in segs]
            for seg in segs:
                st = seg.path.stat()
                signature.append((kind, seg.path.name, st.st_size, st.st_mtime_ns))
        return plan, tuple(signature)


def _load(plan: dict[str, list[Path]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        for kind, paths in plan.items():
            source = (
                f"SELECT {layout.select_list(kind)} FROM {layout.parquet_source(paths)}"
                if paths
                else layout.empty_select(kind)
            )
            con.execute(f"CREATE TABLE {kind} AS {source}")
        con.execute(load_sql("views.sql"))
        _materialise(con)
        # From here on no query can reach a file, the network or an extension, and no
        # SET can undo that.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


# Views whose rows are computed once per load instead of on every query (dependencies
# first). The published data only changes between loads, and these carry the window
# functions and joins over every task event that made queries over 1M events take 0.2-0.7 s;
# the views built on them (latency, retries, cost, ...) then read tables.
MATERIALISED = ("task_events", "task_attempts", "tickets", "tasks", "gate_verdicts")


def _materialise(con: duckdb.DuckDBPyConnection) -> None:
    for view in MATERIALISED:
        con.execute(f"CREATE TABLE _materialised AS FROM {view}")
        con.execute(f"DROP VIEW {view}")
        con.execute(f"ALTER TABLE _materialised RENAME TO {view}")


def _check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    statements = con.extract_statements(sql)
    if not statements:
        raise QueryError("no statement to run")
    if len(statements) > 1:
        raise ReadOnlyError(f"read-only: one statement at a time, got {len(statements)}")
    statement = statements[0]
    if statement.type == duckdb.StatementType.EXPLAIN:
        inner = con.extract_statements(_EXPLAIN_RE.sub("", statement.query, count=1))
        if len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT:
            return
        raise ReadOnlyError("read-only: only EXPLAIN of a SELECT is allowed")
    if statement.type != duckdb.StatementType.SELECT:
        raise ReadOnlyError(
            f"read-only: {statement.type.name} statements are not allowed, only a single "
            "SELECT (or EXPLAIN of one)"
        )

"""One kind's Parquet segments: publishing new rows, merging segments, pruning old rows.

Every file is written to a temp name and moved into place (`layout.install`), and the
publish watermark moves only after that, in the writer's database.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import duckdb

from store import layout
from store.sql import fetch_int, fetch_one, quote_literal

log = logging.getLogger(__name__)


class SegmentFiles:
    """The segments of `kind` ("events" or "dead_letters") in `directory`.

    Used by EventStore under its lock, with its connection; not thread-safe on its own.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, kind: str, directory: Path) -> None:
        self.con = con
        self.kind = kind
        self.directory = directory

    def publish(self) -> list[Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._drop_covered()
        mark = self._watermark()
        written: list[Path] = []
        # Segments past the watermark were moved into place by a publish that crashed before
        # recording it. Write each range again under its own name rather than folding it
        # into a new, larger segment: readers would see both files until the old one went.
        for seg in layout.list_segments(self.directory):
            if seg.first > mark:
                if self._export(seg.first, seg.last, seg.path):
                    written.append(seg.path)
                else:
                    seg.path.unlink(missing_ok=True)
                mark = seg.last
                self._set_watermark(mark)
        row = fetch_one(
            self.con,
            f"SELECT min(recorded_seq), max(recorded_seq) FROM {self.kind} WHERE recorded_seq > ?",
            [mark],
        )
        if row is not None and row[0] is not None:
            first, last = int(row[0]), int(row[1])
            path = layout.segment_path(self.directory, first, last)
            if self._export(first, last, path):
                written.append(path)
            self._set_watermark(last)
        return written

    def compact(self, max_segments: int) -> Path | None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._drop_covered()
        mark = self._watermark()
        # Only published segments: one past the watermark is re-published by `publish`.
        segs = [s for s in layout.list_segments(self.directory) if s.last <= mark]
        if len(segs) <= max(max_segments, 1):
            return None
        merged = layout.segment_path(self.directory, segs[0].first, segs[-1].last)
        tmp = layout.temp_path(merged)
        self._copy(f"SELECT * FROM {layout.parquet_source([s.path for s in segs])}", tmp)
        layout.install(tmp, merged)
        for seg in segs:
            if seg.path != merged:
                seg.path.unlink(missing_ok=True)
        log.info("compacted %d %s segments into %s", len(segs), self.kind, merged.name)
        return merged

    def prune(self, cutoff: datetime, before_emptying: Callable[[], None]) -> None:
        segs = layout.list_segments(self.directory)
        doomed: list[Path] = []
        for seg in segs:
            source = layout.parquet_source([seg.path])
            row = fetch_one(
                self.con,
                f'SELECT count(*), count(*) FILTER (WHERE "at" < ?) FROM {source}',
                [cutoff],
            )
            total, old = (int(row[0]), int(row[1])) if row else (0, 0)
            if old == 0:
                continue
            if old == total:
                doomed.append(seg.path)
                continue
            tmp = layout.temp_path(seg.path)
            cut = quote_literal(cutoff.isoformat())
            self._copy(f'SELECT * FROM {source} WHERE "at" >= {cut}::TIMESTAMPTZ', tmp)
            layout.install(tmp, seg.path)
        if doomed and len(doomed) == len(segs):
            before_emptying()
        for path in doomed:
            path.unlink(missing_ok=True)

    # Internals

    def _export(self, first: int, last: int, path: Path) -> bool:
        """Write the rows with recorded_seq in [first, last] to `path`; False if none."""
        count = fetch_int(
            self.con,
            f"SELECT count(*) FROM {self.kind} WHERE recorded_seq BETWEEN ? AND ?",
            [first, last],
        )
        if not count:
            return False
        tmp = layout.temp_path(path)
        self._copy(
            f"SELECT {layout.select_list(self.kind)} FROM {self.kind} "
            f"WHERE recorded_seq BETWEEN {int(first)} AND {int(last)} ORDER BY recorded_seq",
            tmp,
        )
        layout.install(tmp, path)
        return True

    def _copy(self, query: str, tmp: Path) -> None:
        # COPY takes no parameters, hence literals; every value here is ours, not a user's.
        try:
            self.con.execute(
                f"COPY ({query}) TO {quote_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)"
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _drop_covered(self) -> None:
        """Remove segments a larger one also holds: leftovers of an interrupted compaction."""
        segs = layout.list_segments(self.directory)
        for seg in set(segs) - set(layout.visible(segs)):
            log.info("removing %s, merged into a larger segment", seg.path.name)
            seg.path.unlink(missing_ok=True)
        for name in os.listdir(self.directory):
            if name.endswith(".tmp"):
                # A temp file from a crashed write; its content will be written again.
                (self.directory / name).unlink(missing_ok=True)

    def _watermark(self) -> int:
        return fetch_int(self.con, "SELECT last_seq FROM _published WHERE kind = ?", [self.kind])

    def _set_watermark(self, last: int) -> None:
        fetch_one(self.con, "INSERT OR REPLACE INTO _published VALUES (?, ?)", [self.kind, last])

"""The memory store: past tasks' lessons in a DuckDB file of their own, searched by BM25
and, when the recorder has an embedding model, by meaning too.

Full-text search is done here, in SQL over an inverted index (`memory_terms`), rather than
with DuckDB's `fts` extension: nothing can be downloaded at run time, and the
`duckdb-extension-fts` package is built for DuckDB 1.5 only, while the store needs 2.x.
An inverted index also takes each memory as it comes (the extension's index must be
rebuilt after every insert). Scoring is Okapi BM25 (k1 1.2, b 0.75).

A lesson's vector (`memory_vectors`, when embeddings are on) is kept in the file and held
in memory for search (store/vectors.py: exact cosine similarity; the `vss` extension has
the same packaging problem as `fts`, and an exact scan of 10k vectors takes a few
milliseconds). A search with a vector ranks both ways and fuses the two rankings by
reciprocal rank (k 60), so a lesson that shares no word with the query is still found when
it means the same.

One writer process (the recorder) owns the file; its searches and writes share one
connection under a lock, each a few milliseconds.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import duckdb
import pyarrow as pa

from schemas.memory import MemoryHit, MemoryRecord
from store.errors import StoreError
from store.vectors import VectorIndex

K1 = 1.2
B = 0.75
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be but by do does for from has have in into is it its of on or "
    "that the their then there these this to was were will with without you your we our "
    "should must can not no all any each so than too very just also use using make made".split()
)
_SUFFIXES = ("ing", "ed", "es", "s")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id VARCHAR PRIMARY KEY, ticket_id VARCHAR, task VARCHAR, recorded_at TIMESTAMPTZ,
    length INTEGER, record VARCHAR
);
CREATE TABLE IF NOT EXISTS memory_terms (memory_id VARCHAR, term VARCHAR, tf INTEGER);
CREATE TABLE IF NOT EXISTS memory_vectors (memory_id VARCHAR PRIMARY KEY, vector FLOAT[]);
"""
RRF_K = 60
# Each ranking gives this many candidates (times the limit) to the fusion.
CANDIDATES = 4
_SEARCH = f"""
WITH q AS (SELECT unnest($terms::VARCHAR[]) AS term),
stats AS (SELECT count(*)::DOUBLE AS n, coalesce(avg(length), 1)::DOUBLE AS avgdl FROM memories),
df AS (
    SELECT t.term, count(*)::DOUBLE AS df FROM memory_terms t JOIN q USING (term) GROUP BY t.term
)
SELECT m.id, m.record,
       sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))
           * t.tf * ({K1} + 1)
           / (t.tf + {K1} * (1 - {B} + {B} * m.length / stats.avgdl))) AS score
FROM memory_terms t
JOIN df USING (term)
JOIN memories m ON m.id = t.memory_id
CROSS JOIN stats
WHERE $exclude IS NULL OR m.ticket_id <> $exclude
GROUP BY m.id, m.record
ORDER BY score DESC, m.id
LIMIT $limit
"""


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def terms(text: str) -> Counter[str]:
    """The words search matches on: lower case, no stop words, crudely stemmed."""
    return Counter(stem(w) for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in _STOP)


def _indexed(record: MemoryRecord) -> Counter[str]:
    # The title and the summary say what the task was about: they count twice.
    return terms(record.text()) + terms(f"{record.title}\n{record.summary}")


class MemoryStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._vectors = VectorIndex()

    def open(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path))
            self._con.execute(_SCHEMA)
            self._vectors = VectorIndex()
            self._vectors.add(
                self._con.execute(
                    "SELECT v.memory_id, m.ticket_id, v.vector FROM memory_vectors v "
                    "JOIN memories m ON m.id = v.memory_id ORDER BY v.rowid"
                ).fetchall()
            )
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the memory store {self.path}: {exc}") from exc
        return self

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError("the memory store is not open")
        return self._con

    def add(self, records: Sequence[MemoryRecord]) -> int:
        """Keep the memories not kept yet (by id); how many were new."""
        unique = {r.id: r for r in records}
        if not unique:
            return 0
        with self._lock:
            con = self.con
            have = {
                row[0]
                for row in con.execute(
                    "SELECT id FROM memories WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                    [list(unique)],
                ).fetchall()
            }
            new = [r for r in unique.values() if r.id not in have]
            if not new:
                return 0
            indexed = {r.id: _indexed(r) for r in new}
            # Columns, not rows: DuckDB takes an Arrow table at once, a row at a time slowly.
            rows = pa.table(
                {
                    "id": [r.id for r in new],
                    "ticket_id": [r.ticket_id for r in new],
                    "task": [r.task for r in new],
                    "recorded_at": [r.at for r in new],
                    "length": [sum(indexed[r.id].values()) for r in new],
                    "record": [r.model_dump_json() for r in new],
                }
            )
            postings = [(r.id, term, tf) for r in new for term, tf in indexed[r.id].items()]
            index = pa.table(
                {
                    "memory_id": [p[0] for p in postings],
                    "term": [p[1] for p in postings],
                    "tf": pa.array([p[2] for p in postings], pa.int32()),
                }
            )
            con.execute("BEGIN")
            try:
                con.register("new_memories", rows)
                con.register("new_terms", index)
                con.execute("INSERT INTO memories SELECT * FROM new_memories")
                con.execute("INSERT INTO memory_terms SELECT * FROM new_terms")
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise StoreError(f"memories not stored: {exc}") from exc
            finally:
                con.unregister("new_memories")
                con.unregister("new_terms")
        return len(new)

    def search(
        self,
        text: str,
        limit: int = 5,
        exclude_ticket: str | None = None,
        vector: Sequence[float] | None = None,
    ) -> list[MemoryHit]:
        """The best matches: by BM25 alone, or fused with the nearest by `vector` (each
        hit's score is then its fused rank score)."""
        wanted = sorted(terms(text))
        pool = limit * CANDIDATES if vector else limit
        with self._lock:
            words = (
                self.con.execute(
                    _SEARCH, {"terms": wanted, "exclude": exclude_ticket, "limit": pool}
                ).fetchall()
                if wanted
                else []
            )
            nearest = self._vectors.nearest(vector, pool, exclude_ticket) if vector else []
            found = dict(
                self.con.execute(
                    "SELECT id, record FROM memories WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                    [[memory_id for memory_id, _ in nearest]],
                ).fetchall()
                if nearest
                else []
            )
        near = [(m, found[m], score) for m, score in nearest if m in found]
        if not vector:
            return [_hit(record, score) for _, record, score in words]
        fused: dict[str, float] = {}
        records: dict[str, str] = {}
        for ranking in (words, near):
            for rank, (memory_id, record, _) in enumerate(ranking, 1):
                fused[memory_id] = fused.get(memory_id, 0.0) + 1 / (RRF_K + rank)
                records[memory_id] = record
        best = sorted(fused, key=lambda m: (-fused[m], m))[:limit]
        return [_hit(records[m], fused[m] * 1000) for m in best]

    def add_vectors(self, vectors: dict[str, Sequence[float]]) -> int:
        """Keep the vectors of memories that are kept and have none yet; how many."""
        with self._lock:
            con = self.con
            rows = con.execute(
                "SELECT id, ticket_id FROM memories WHERE id IN (SELECT unnest(?::VARCHAR[])) "
                "AND id NOT IN (SELECT memory_id FROM memory_vectors) ORDER BY id",
                [list(vectors)],
            ).fetchall()
            new = [row[0] for row in rows]
            if new:
                floats = [[float(v) for v in vectors[m]] for m in new]
                table = pa.table({"memory_id": new, "vector": floats})
                con.register("new_vectors", table)
                try:
                    con.execute("INSERT INTO memory_vectors SELECT memory_id, "
                                "vector::FLOAT[] FROM new_vectors")  # fmt: skip
                except duckdb.Error as exc:
                    raise StoreError(f"vectors not stored: {exc}") from exc
                finally:
                    con.unregister("new_vectors")
                self._vectors.add((m, ticket, vectors[m]) for m, ticket in rows)
        return len(new)

    def unembedded(self, ids: Sequence[str]) -> list[str]:
        """Which of these kept memories have no vector yet."""
        with self._lock:
            rows = self.con.execute(
                "SELECT id FROM memories WHERE id IN (SELECT unnest(?::VARCHAR[])) "
                "AND id NOT IN (SELECT memory_id FROM memory_vectors) ORDER BY id",
                [list(ids)],
            ).fetchall()
        return [row[0] for row in rows]

    def forget(self, memory_id: str) -> bool:
        with self._lock:
            con = self.con
            found = con.execute("SELECT count(*) FROM memories WHERE id = ?", [memory_id])
            if not (row := found.fetchone()) or not row[0]:
                return False
            con.execute("DELETE FROM memory_terms WHERE memory_id = ?", [memory_id])
            con.execute("DELETE FROM memory_vectors WHERE memory_id = ?", [memory_id])
            self._vectors.remove(memory_id)
            con.execute("DELETE FROM memories WHERE id = ?", [memory_id])
        return True

    def count(self) -> int:
        with self._lock:
            row = self.con.execute("SELECT count(*) FROM memories").fetchone()
        return int(row[0]) if row else 0


def _hit(record: str, score: float) -> MemoryHit:
    return MemoryHit(memory=MemoryRecord.model_validate_json(record), score=round(score, 4))

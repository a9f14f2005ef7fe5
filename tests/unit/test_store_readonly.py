"""The analytics store's read-only guard: a reader runs reads, and refuses everything
else (writes, settings, files, extensions) with the statement named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import EventStore, QueryError, Reader, ReadOnlyError
from tests.unit.test_store import Clock, lifecycle


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "omoi.duckdb", tmp_path / "published") as s:
        yield s


@pytest.fixture
def reader(store: EventStore) -> Reader:
    return Reader(store.published_dir, refresh_s=1.0, clock=Clock())


@pytest.fixture
def published(store: EventStore) -> EventStore:
    store.ingest(lifecycle())
    store.publish()
    return store


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("DROP TABLE events", ReadOnlyError),
        ("INSERT INTO events (id) VALUES ('x')", ReadOnlyError),
        ("DELETE FROM events", ReadOnlyError),
        ("UPDATE events SET type = 'x'", ReadOnlyError),
        ("CREATE TABLE x AS SELECT 1", ReadOnlyError),
        ("CREATE TEMP VIEW x AS SELECT 1", ReadOnlyError),
        ("COPY events TO '{tmp}/x.csv'", ReadOnlyError),
        ("COPY (SELECT 1) TO '{tmp}/x.csv'", ReadOnlyError),
        ("EXPORT DATABASE '{tmp}/x.csv'", ReadOnlyError),
        ("ATTACH '{tmp}/x.csv' AS x", ReadOnlyError),
        ("SELECT * FROM read_csv('/etc/passwd')", ReadOnlyError),
        ("SELECT * FROM read_text('/etc/hostname')", ReadOnlyError),
        ("SELECT * FROM glob('/*')", ReadOnlyError),
        ("INSTALL httpfs", ReadOnlyError),
        ("LOAD httpfs", ReadOnlyError),
        ("SET threads = 1", ReadOnlyError),
        ("SET enable_external_access = true", ReadOnlyError),
        ("RESET lock_configuration", ReadOnlyError),
        ("USE memory", ReadOnlyError),
        ("PRAGMA version", ReadOnlyError),
        ("CALL pragma_version()", ReadOnlyError),
        ("CHECKPOINT", ReadOnlyError),
        ("BEGIN TRANSACTION", ReadOnlyError),
        ("PIVOT events ON type", ReadOnlyError),
        ("EXPLAIN DELETE FROM events", ReadOnlyError),
        ("SELECT 1; DROP TABLE events", ReadOnlyError),
        ("SELECT * FROM query('DROP TABLE events')", QueryError),
        ("SELECT * FROM nowhere", QueryError),
        ("SELEC 1", QueryError),
        ("", QueryError),
    ],
)
def test_reader_refuses_anything_but_a_read(
    published: EventStore, reader: Reader, tmp_path: Path, sql: str, error: type[Exception]
) -> None:
    check = "SELECT count(*), min(id), max(id), count(DISTINCT type) FROM events"
    before, tables = reader.query(check).rows, reader.tables()
    with pytest.raises(error):
        reader.query(sql.format(tmp=tmp_path))
    assert not (tmp_path / "x.csv").exists()
    assert reader.query(check).rows == before and reader.tables() == tables
    assert reader.query("SELECT current_setting('enable_external_access')").rows == [(False,)]


def test_refusal_names_the_statement(reader: Reader) -> None:
    with pytest.raises(ReadOnlyError, match=r"^read-only: DROP statements are not allowed"):
        reader.query("DROP TABLE events")
    with pytest.raises(ReadOnlyError, match="read-only: Permission Error"):
        reader.query("SELECT * FROM read_text('/etc/hostname')")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM pragma_version()",
        "DESCRIBE events",
        "SHOW TABLES",
        "SUMMARIZE task_attempts",
        "EXPLAIN SELECT * FROM tickets",
        "FROM events LIMIT 1",
        "WITH x AS (SELECT 1 AS n) SELECT n FROM x;",
    ],
)
def test_reader_allows_reads(published: EventStore, reader: Reader, sql: str) -> None:
    assert reader.query(sql).rows

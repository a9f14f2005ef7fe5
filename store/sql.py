"""Small SQL helpers shared by the writer and the reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def load_sql(name: str) -> str:
    """The text of one of the package's .sql files (schema.sql, views.sql)."""
    return (Path(__file__).parent / name).read_text(encoding="utf-8")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def fetch_one(
    con: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None = None
) -> tuple[Any, ...] | None:
    """The first row of a query, with the result consumed.

    DuckDB 2.0 refuses `register()` and other work on a connection whose last result was
    not read to the end, and `fetchone()` does not read to the end.
    """
    rows = con.execute(query, params).fetchall()
    return rows[0] if rows else None


def fetch_int(con: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None = None) -> int:
    """A query's single integer, 0 when it gives no row or NULL."""
    row = fetch_one(con, query, params)
    return int(row[0]) if row and row[0] is not None else 0

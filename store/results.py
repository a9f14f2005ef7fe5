"""Query results as plain, JSON-friendly Python values."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class QueryResult:
    """The rows of one query, at most `max_rows` of them.

    Values are plain Python: str, int, float, bool, None, datetime/date/time (timestamps are
    aware, in UTC), lists and dicts of those. DuckDB's other types are converted so that a
    gateway can serialise them without surprises: DECIMAL -> float, INTERVAL -> float
    seconds, UUID -> str, BLOB -> hex str. JSON columns arrive as their JSON text.
    """

    columns: list[str]
    rows: list[tuple[Any, ...]]
    # True when the query had more rows than were kept.
    truncated: bool

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_csv(self) -> str:
        """The result as CSV with a header row: None is empty, timestamps are ISO 8601 and
        lists or dicts are JSON."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([_csv_cell(v) for v in row])
        return out.getvalue()


def plain(value: Any) -> Any:
    """`value` converted as QueryResult describes."""
    if value is None or isinstance(value, str | bool | int | float | datetime | date | time):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return str(value)


# Column types whose values DuckDB already returns as plain Python (lists of them too).
_PLAIN_TYPE = re.compile(
    r"(VARCHAR|JSON|BOOLEAN|(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?)|DOUBLE|FLOAT|DATE|TIME"
    r"|TIMESTAMP( WITH TIME ZONE)?)(\[\])*"
)


def plain_rows(rows: list[tuple[Any, ...]], types: list[str]) -> list[tuple[Any, ...]]:
    """The rows with `plain` values, converting only the columns whose type needs it: a listing
    of 10,000 rows of strings and timestamps is returned as it came."""
    convert = [i for i, t in enumerate(types) if not _PLAIN_TYPE.fullmatch(t)]
    if not convert:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for i in convert:
            values[i] = plain(values[i])
        out.append(tuple(values))
    return out


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return value

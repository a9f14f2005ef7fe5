"""The gateway's view of the analytics store: a small Protocol and the errors it may raise.

The store package arrives separately and is built around DuckDB; the gateway only needs
"run this read-only SQL and give me columns and rows", so it depends on that shape and
nothing else. `ErrorMappingReader` translates a concrete reader's exceptions into the two
the gateway maps to HTTP (403 and 400); anything else is a bug and surfaces as a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

log = logging.getLogger(__name__)


class SqlResult(Protocol):
    @property
    def columns(self) -> Sequence[str]: ...

    @property
    def rows(self) -> Sequence[Sequence[Any]]: ...

    @property
    def truncated(self) -> bool: ...


class SqlReader(Protocol):
    """Runs one read-only query. Synchronous (DuckDB is); the gateway calls it in a thread."""

    def query(self, sql: str, params: Sequence[object] = (), *, max_rows: int) -> SqlResult: ...


class SqlError(Exception):
    """Root of what a reader may raise for the gateway to map onto a response."""


class SqlDenied(SqlError):
    """The statement is not a plain read (DROP, INSERT, COPY ...): 403."""


class SqlInvalid(SqlError):
    """The query failed: bad SQL, a missing view, a runtime error: 400."""


class SqlUnavailable(SqlError):
    """There is no store to ask (yet): 503."""


@dataclass(frozen=True)
class ErrorMappingReader:
    """Wraps a reader so its own exception types become `SqlDenied` / `SqlInvalid`."""

    inner: SqlReader
    denied: tuple[type[BaseException], ...]
    invalid: tuple[type[BaseException], ...]

    def query(self, sql: str, params: Sequence[object] = (), *, max_rows: int) -> SqlResult:
        try:
            return self.inner.query(sql, params, max_rows=max_rows)
        except self.denied as exc:
            raise SqlDenied(str(exc)) from exc
        except self.invalid as exc:
            raise SqlInvalid(str(exc)) from exc


def jsonable(value: Any) -> Any:
    """One cell as a JSON value. DuckDB hands back decimals, timestamps, blobs, UUIDs,
    intervals, NaN ...; none of those may turn a client's query into a 500."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return str(value)


def jsonable_rows(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [[jsonable(cell) for cell in row] for row in rows]

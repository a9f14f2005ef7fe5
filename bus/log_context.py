"""Fields every log line of the current asyncio task carries: subject, ticket, task.

The consumer runtime binds the subject of the message it is handling; handlers bind what
they learn from the payload. Each delivery is handled in its own asyncio task, whose
context is a copy, so one delivery's fields never show on another's lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

# What a log line may carry from the context: ids, never payloads (a payload can hold a
# secret the redactor only sees in a message's text).
FIELDS = ("agent", "subject", "ticket", "task", "trace_id", "span_id")

_KNOWN = frozenset(FIELDS)
_EMPTY: Mapping[str, str] = {}

_current: ContextVar[Mapping[str, str] | None] = ContextVar("omoi_log_fields", default=None)


def log_fields() -> Mapping[str, str]:
    return _current.get() or {}


def bind_log_fields(**fields: str | None) -> None:
    """Add `fields` to every later line of the current asyncio task."""
    _current.set(_merged(fields))


@contextmanager
def logging_context(**fields: str | None) -> Iterator[None]:
    """Add `fields` to the lines logged inside the block."""
    token = _current.set(_merged(fields))
    try:
        yield
    finally:
        _current.reset(token)


def _merged(fields: Mapping[str, str | None]) -> Mapping[str, str]:
    # On every delivery's path: a plain loop, no sets.
    merged = dict(_current.get() or _EMPTY)
    for name, value in fields.items():
        if name not in _KNOWN:
            raise ValueError(f"not log context fields: {sorted(set(fields) - _KNOWN)}")
        if value:
            merged[name] = value
    return merged

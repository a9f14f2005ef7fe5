"""The store's exceptions: one root, so callers can catch everything the store raises."""

from __future__ import annotations


class StoreError(Exception):
    """Anything that went wrong in the analytics store: bad input, an unusable file, SQL."""


class ReadOnlyError(StoreError):
    """A reader was asked to run something other than a plain read."""


class QueryError(StoreError):
    """A read query failed: bad SQL or a runtime error. The message is DuckDB's."""


def clean_message(exc: BaseException) -> str:
    """DuckDB's message without the caret diagram it appends, on one line.

    The diagram ("LINE 1: ...", then "^^^^") is meant for a terminal; in a JSON answer or a
    log line it is noise, and the first paragraph already names the problem.
    """
    text = str(exc).strip()
    first = text.split("\n\n", 1)[0]
    return (
        " ".join(line.strip() for line in first.splitlines() if line.strip()) or type(exc).__name__
    )

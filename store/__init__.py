"""The DuckDB analytics store fed from the event stream.

EventStore records events and dead letters in a DuckDB file and publishes them as Parquet
segments plus an `omoi.sql` script; Reader runs read-only SQL over the published files.
The views (tickets, tasks, task_attempts, ...) are defined in `views.sql`.
"""

from store.errors import QueryError, ReadOnlyError, StoreError
from store.reader import Reader
from store.records import DeadLetter, RecordedEvent
from store.results import QueryResult
from store.writer import EventStore

__all__ = [
    "DeadLetter",
    "EventStore",
    "QueryError",
    "QueryResult",
    "ReadOnlyError",
    "Reader",
    "RecordedEvent",
    "StoreError",
]

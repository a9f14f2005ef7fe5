"""The rows the store records: events, dead letters, audit entries and log lines, and their
Arrow batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
import pyarrow as pa

from bus import constants as c
from store.errors import StoreError

# A dead letter can be anything up to the server's max payload; the store keeps enough of
# it to see what it was.
MAX_PAYLOAD_BYTES = 64 * 1024

_TS = pa.timestamp("us", tz="UTC")
_EVENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("ticket_id", pa.string()),
        ("task", pa.string()),
        ("agent", pa.string()),
        ("at", _TS),
        ("data", pa.string()),
        ("stream_seq", pa.int64()),
    ]
)
_DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("stream_seq", pa.int64()),
        ("subject", pa.string()),
        ("origin", pa.string()),
        ("reason", pa.string()),
        ("category", pa.string()),
        ("origin_subject", pa.string()),
        ("origin_seq", pa.int64()),
        ("payload", pa.string()),
        ("at", _TS),
    ]
)
_AUDIT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("at", _TS),
        ("action", pa.string()),
        ("outcome", pa.string()),
        ("actor", pa.string()),
        ("role", pa.string()),
        ("via", pa.string()),
        ("source", pa.string()),
        ("client", pa.string()),
        ("target", pa.string()),
        ("status", pa.int32()),
        ("detail", pa.string()),
        ("count", pa.int32()),
        ("stream_seq", pa.int64()),
    ]
)
AUDIT_COLUMNS: tuple[str, ...] = tuple(_AUDIT_SCHEMA.names)
_LOG_SCHEMA = pa.schema(
    [
        ("stream_seq", pa.int64()),
        ("at", _TS),
        ("level", pa.string()),
        ("logger", pa.string()),
        ("message", pa.string()),
        ("role", pa.string()),
        ("agent", pa.string()),
        ("ticket_id", pa.string()),
        ("task", pa.string()),
        ("subject", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("exc", pa.string()),
    ]
)
LOG_COLUMNS: tuple[str, ...] = tuple(_LOG_SCHEMA.names)


NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _WireEvent(msgspec.Struct):
    # Open-world like schemas.Event (unknown fields are ignored), but `type` stays a plain
    # string: the store records event types from newer agents instead of rejecting them.
    # msgspec, not pydantic: the recorder parses tens of thousands of these a second, and
    # `data` is kept as the raw JSON it arrived as, never decoded and re-encoded.
    id: NonEmpty
    type: NonEmpty
    ticket_id: NonEmpty
    at: Annotated[datetime, msgspec.Meta(tz=True)]
    task: str | None = None
    agent: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"{}")


_EVENT_DECODER = msgspec.json.Decoder(_WireEvent)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One event as stored: `data` is its JSON text, `stream_seq` its OMOI_EVENTS sequence."""

    id: str
    type: str
    ticket_id: str
    task: str | None
    agent: str | None
    at: datetime
    data: str
    stream_seq: int

    @classmethod
    def from_event_json(cls, raw: bytes, stream_seq: int) -> RecordedEvent:
        """Parse an event message's bytes; raises StoreError if they are not an event."""
        try:
            event = _EVENT_DECODER.decode(raw)
        except msgspec.ValidationError as exc:
            raise StoreError(f"not an event (stream seq {stream_seq}): {exc}") from exc
        except msgspec.DecodeError as exc:
            raise StoreError(
                f"not an event (stream seq {stream_seq}): invalid JSON: {exc}"
            ) from exc
        data = bytes(event.data).strip()
        if not data.startswith(b"{"):
            raise StoreError(f"not an event (stream seq {stream_seq}): data is not an object")
        return cls(
            id=event.id,
            type=event.type,
            ticket_id=event.ticket_id,
            task=event.task,
            agent=event.agent,
            at=event.at,
            data=data.decode(),
            stream_seq=stream_seq,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter stream, keyed by its OMOI_DLQ sequence."""

    stream_seq: int
    subject: str
    origin: str | None
    reason: str | None
    category: str | None
    origin_subject: str | None
    origin_seq: int | None
    payload: str
    at: datetime

    @classmethod
    def from_message(
        cls,
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None,
        stream_seq: int,
        at: datetime,
    ) -> DeadLetter:
        """Build from a message on `omoi.dlq.<origin>`; raises StoreError on a naive `at`."""
        if at.tzinfo is None:
            raise StoreError(f"dead letter {stream_seq}: 'at' must be timezone-aware")
        headers = headers or {}
        prefix = c.DLQ_SUBJECTS.removesuffix(">")
        origin = subject[len(prefix) :] if subject.startswith(prefix) else None
        seq_text = headers.get(c.HDR_ORIGIN_SEQ)
        try:
            origin_seq = int(seq_text) if seq_text is not None else None
        except ValueError:
            origin_seq = None
        return cls(
            stream_seq=stream_seq,
            subject=subject,
            origin=origin or None,
            reason=headers.get(c.HDR_REASON),
            category=headers.get(c.HDR_ERROR_CATEGORY),
            origin_subject=headers.get(c.HDR_ORIGIN_SUBJECT),
            origin_seq=origin_seq,
            payload=data[:MAX_PAYLOAD_BYTES].decode("utf-8", errors="replace"),
            at=at,
        )


def events_table(events: Sequence[RecordedEvent]) -> pa.Table:
    for e in events:
        if e.at.tzinfo is None:
            raise StoreError(f"event {e.id!r}: 'at' must be timezone-aware")
    return pa.Table.from_pydict(
        {name: [getattr(e, name) for e in events] for name in _EVENT_SCHEMA.names},
        schema=_EVENT_SCHEMA,
    )


def dead_letters_table(letters: Sequence[DeadLetter]) -> pa.Table:
    return pa.Table.from_pydict(
        {name: [getattr(d, name) for d in letters] for name in _DEAD_LETTER_SCHEMA.names},
        schema=_DEAD_LETTER_SCHEMA,
    )


class _WireAudit(msgspec.Struct):
    # Open-world like the events: fields from newer writers are ignored, and action and
    # outcome stay plain strings so a new action is recorded rather than refused.
    id: NonEmpty
    at: Annotated[datetime, msgspec.Meta(tz=True)]
    action: NonEmpty
    outcome: NonEmpty
    actor: NonEmpty
    role: str | None = None
    via: str = ""
    source: str = ""
    client: str = ""
    target: str = ""
    status: int | None = None
    detail: str = ""
    count: int = 1


_AUDIT_DECODER = msgspec.json.Decoder(_WireAudit)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit entry (`schemas.audit.AuditEntry`) as stored, keyed by its id."""

    id: str
    at: datetime
    action: str
    outcome: str
    actor: str
    role: str | None
    via: str
    source: str
    client: str
    target: str
    status: int | None
    detail: str
    count: int
    stream_seq: int

    @classmethod
    def from_json(cls, raw: bytes, stream_seq: int) -> AuditRecord:
        """Parse an audit message's bytes; raises StoreError if they are not an entry."""
        try:
            entry = _AUDIT_DECODER.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise StoreError(f"not an audit entry (stream seq {stream_seq}): {exc}") from exc
        return cls(stream_seq=stream_seq, **msgspec.structs.asdict(entry))


def audit_table(records: Sequence[AuditRecord]) -> pa.Table:
    return pa.Table.from_pydict(
        {name: [getattr(r, name) for r in records] for name in _AUDIT_SCHEMA.names},
        schema=_AUDIT_SCHEMA,
    )


class _WireLogLine(msgspec.Struct):
    # What `agents.logs.JsonFormatter` writes; fields from newer writers are ignored.
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    level: NonEmpty
    message: str
    logger: str = ""
    agent: str | None = None
    subject: str | None = None
    ticket: str | None = None
    task: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    exc: str | None = None


_LOG_DECODER = msgspec.json.Decoder(_WireLogLine)
_LOGS_PREFIX = c.LOGS_SUBJECTS.removesuffix(">")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line an agent logged, keyed by its OMOI_LOGS sequence. `role` and `agent` come
    from the subject it was shipped on (`omoi.logs.<role>.<agent>`): the server lets a
    process ship only under its own role. `subject` is the message the line is about."""

    stream_seq: int
    at: datetime
    level: str
    logger: str
    message: str
    role: str | None
    agent: str | None
    ticket_id: str | None
    task: str | None
    subject: str | None
    trace_id: str | None
    span_id: str | None
    exc: str | None

    @classmethod
    def from_message(cls, subject: str, raw: bytes, stream_seq: int) -> LogLine:
        """Parse a shipped line; raises StoreError if it is not one."""
        try:
            line = _LOG_DECODER.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise StoreError(f"not a log line (stream seq {stream_seq}): {exc}") from exc
        role, _, agent = subject.removeprefix(_LOGS_PREFIX).partition(".")
        return cls(
            stream_seq=stream_seq,
            at=line.ts,
            level=line.level.lower(),
            logger=line.logger,
            message=line.message,
            role=role or None,
            agent=agent or line.agent,
            ticket_id=line.ticket,
            task=line.task,
            subject=line.subject,
            trace_id=line.trace_id,
            span_id=line.span_id,
            exc=line.exc,
        )


def logs_table(lines: Sequence[LogLine]) -> pa.Table:
    return pa.Table.from_pydict(
        {name: [getattr(line, name) for line in lines] for name in _LOG_SCHEMA.names},
        schema=_LOG_SCHEMA,
    )

"""Spans of Omoi's work, each in the trace of the ticket it is about.

Code that does the work opens spans here; only the process's edge (`agents.tracing`) decides
where they go, by installing a tracer provider. With none installed (tracing off, tests of a
single agent in-process) every call is a cheap no-op.

A ticket's own spans have ids derived from the ticket (`bus.trace_context`): the ticket, its
phases and its tasks. Any process can record a child of them without asking for its parent,
and one recorded twice (a redelivery) is the same span, stored once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)

from bus.log_context import log_fields, logging_context
from bus.span_shipper import TASK_ATTRIBUTE, TICKET_ATTRIBUTE
from bus.trace_context import ticket_span_id, ticket_trace_id

Attributes = Mapping[str, str | bool | int | float]

_NOT_A_TICKET = "_agents"
_NO_TRACER: Tracer = trace.NoOpTracer()
_tracer: Tracer = _NO_TRACER
# The ids the next span takes (trace, span), for the ticket's own spans: read by the id
# generator of `agents.tracing`.
_next_ids: ContextVar[tuple[int, int] | None] = ContextVar("omoi_next_span_ids", default=None)


def use_provider(provider: TracerProvider | None) -> None:
    """Send this process's spans to `provider` from now on (None: record none)."""
    global _tracer
    _tracer = provider.get_tracer("omoi") if provider is not None else _NO_TRACER


def next_ids() -> tuple[int, int] | None:
    return _next_ids.get()


@contextmanager
def work_span(
    name: str,
    *,
    ticket: str | None = None,
    task: str | None = None,
    parent: str | None = None,
    attributes: Attributes | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span around the block, current inside it, and its id in the log context (so the
    block's lines and messages name it).

    `ticket` defaults to the log context's. Its parent is `parent` (a span id in the
    ticket's trace), else the current span, else the ticket's own span. An exception out of
    the block marks it failed, with the exception's type as its status.
    """
    ticket = ticket or log_fields().get("ticket")
    span = _tracer.start_span(
        name, context=_parent_context(ticket, parent), kind=kind,
        attributes=_about(ticket, task, attributes),
    )  # fmt: skip
    ids = span.get_span_context()
    try:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            if not ids.is_valid:
                yield span
                return
            with logging_context(trace_id=f"{ids.trace_id:032x}", span_id=f"{ids.span_id:016x}"):
                yield span
    except Exception as exc:
        status = getattr(span, "status", None)  # what the block said, if it said anything
        if status is None or status.status_code is StatusCode.UNSET:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()


def mark_failed(span: Span, reason: str) -> None:
    """Say that what the span timed failed (a gate, a check, an attempt), and why."""
    span.set_status(Status(StatusCode.ERROR, reason[:200]))


def record_span(
    name: str,
    *,
    ticket: str | None = None,
    start: datetime,
    end: datetime,
    span_id: str | None = None,
    parent: str | None = None,
    root: bool = False,
    task: str | None = None,
    attributes: Attributes | None = None,
    error: str | None = None,
) -> None:
    """A span that is already over: what a state change closed (a phase, a task), with
    the times the state recorded. `span_id` fixes its id (the ticket's own spans); `root`
    makes it the trace's root (the ticket), else its parent is `parent`, the current span
    or the ticket's. `ticket` defaults to the log context's."""
    ticket = ticket or log_fields().get("ticket")
    context = Context() if root else _parent_context(ticket, parent)
    token = None
    if span_id and ticket:
        token = _next_ids.set((int(ticket_trace_id(ticket), 16), int(span_id, 16)))
    try:
        span = _tracer.start_span(
            name, context=context, start_time=_ns(start),
            attributes=_about(ticket, task, attributes),
        )  # fmt: skip
    finally:
        if token is not None:
            _next_ids.reset(token)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error[:200]))
    span.end(end_time=max(_ns(end), _ns(start)))


def _parent_context(ticket: str | None, parent: str | None) -> Context | None:
    if parent is None and trace.get_current_span().get_span_context().is_valid:
        return None  # under the current span
    if not ticket or ticket == _NOT_A_TICKET:
        return None
    context = SpanContext(
        trace_id=int(ticket_trace_id(ticket), 16),
        span_id=int(parent or ticket_span_id(ticket), 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


def _about(ticket: str | None, task: str | None, attributes: Attributes | None) -> Attributes:
    about: dict[str, str | bool | int | float] = dict(attributes or {})
    if ticket and ticket != _NOT_A_TICKET:
        about[TICKET_ATTRIBUTE] = ticket
    if task:
        about[TASK_ATTRIBUTE] = task
    return about


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)

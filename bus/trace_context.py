"""W3C trace context on the bus: messages about a ticket carry a `traceparent` header.

A ticket is one trace, and its trace id is derived from the ticket id: every process (and
`omoi logs`, or any tool) finds a ticket's trace without a lookup, and a message that lost
its header still lands in the right trace. The span id in a header names the handling that
sent the message: each delivery a consumer handles is a span of its own, a child of the
span that sent it, and what the handler publishes carries that span's id.

Both ids ride in the log context (`trace_id`, `span_id`), so log lines carry them too.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Mapping

from bus.log_context import bind_log_fields, log_fields

HEADER = "traceparent"
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Tickets that are no tickets: agent lifecycle events are published under this id.
_NOT_A_TICKET = "_agents"
# Its own generator: drawing from the module's shared one would move the state that seeded
# code (and Hypothesis, which checks) relies on.
_SPAN_IDS = random.Random()


@functools.lru_cache(maxsize=4096)
def ticket_trace_id(ticket_id: str) -> str:
    """The trace id of a ticket: 32 hex digits, the same in every process."""
    return hashlib.sha256(f"omoi.trace.{ticket_id}".encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=4096)
def derived_span_id(ticket_id: str, *parts: str) -> str:
    """The span id of a ticket's own spans (the ticket, a phase, a task): the same in
    every process, so whoever records a child names its parent without asking anyone."""
    key = "\x00".join(("omoi.span", ticket_id, *parts))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ticket_span_id(ticket_id: str) -> str:
    return derived_span_id(ticket_id)


def phase_span_id(ticket_id: str, phase: str, visit: int = 0) -> str:
    """A phase's span; `visit` counts returns to it (a failed test sends a ticket back)."""
    parts = ("phase", phase, str(visit)) if visit else ("phase", phase)
    return derived_span_id(ticket_id, *parts)


def task_span_id(ticket_id: str, task: str) -> str:
    return derived_span_id(ticket_id, "task", task)


def new_span_id() -> str:
    # Random, as W3C asks, but not secret: the fast generator, on every delivery's path.
    return f"{_SPAN_IDS.getrandbits(64) or 1:016x}"


def parse(header: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a `traceparent` value; None unless it is a valid
    version-00 one (all-zero ids are invalid)."""
    m = _TRACEPARENT_RE.match(header.strip().lower()) if header else None
    if m is None or m[1] == _ZERO_TRACE or m[2] == _ZERO_SPAN:
        return None
    return m[1], m[2]


def format_traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"


def headers_for(ticket_id: str) -> dict[str, str]:
    """The trace header of a message about `ticket_id`, sent from the current span (the
    ticket's own span outside any); none for what is not about a ticket."""
    if not ticket_id or ticket_id == _NOT_A_TICKET:
        return {}
    span = log_fields().get("span_id") or ticket_span_id(ticket_id)
    return {HEADER: format_traceparent(ticket_trace_id(ticket_id), span)}


def delivery_span(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The log context of handling a delivery: a span of its own, in the trace its header
    names (if any)."""
    found = parse((headers or {}).get(HEADER))
    if found is None:
        return {"span_id": new_span_id()}
    return {"trace_id": found[0], "span_id": new_span_id()}


def bind_ticket(ticket_id: str, task: str | None = None) -> None:
    """Say in the log context which ticket (and task) the work is about, with its trace."""
    trace = ticket_trace_id(ticket_id) if ticket_id and ticket_id != _NOT_A_TICKET else None
    bind_log_fields(ticket=ticket_id, task=task, trace_id=trace)

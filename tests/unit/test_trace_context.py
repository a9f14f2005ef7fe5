"""Trace context: ids derived from tickets, `traceparent` parsing, spans of deliveries."""

from __future__ import annotations

import re

import pytest

from bus import trace_context as tc
from bus.log_context import log_fields, logging_context

HEX = re.compile(r"^[0-9a-f]+$")


def test_a_tickets_trace_id_is_the_same_everywhere_and_its_own() -> None:
    trace = tc.ticket_trace_id("T-1")
    assert trace == tc.ticket_trace_id("T-1")
    assert len(trace) == 32 and HEX.match(trace)
    assert trace != tc.ticket_trace_id("T-2")


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("00-" + "a" * 32 + "-" + "b" * 16 + "-01", ("a" * 32, "b" * 16)),
        ("00-" + "A" * 32 + "-" + "B" * 16 + "-00", ("a" * 32, "b" * 16)),
        ("01-" + "a" * 32 + "-" + "b" * 16 + "-01", None),  # a version we do not know
        ("00-" + "0" * 32 + "-" + "b" * 16 + "-01", None),  # all-zero ids are invalid
        ("00-" + "a" * 32 + "-" + "0" * 16 + "-01", None),
        ("00-" + "a" * 31 + "-" + "b" * 16 + "-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_traceparent_is_parsed_as_w3c_says(header: str | None, parsed: object) -> None:
    assert tc.parse(header) == parsed


def test_a_message_is_sent_from_the_current_span_in_its_tickets_trace() -> None:
    with logging_context(span_id="c" * 16):
        header = tc.headers_for("T-1")[tc.HEADER]
    assert tc.parse(header) == (tc.ticket_trace_id("T-1"), "c" * 16)
    # Outside any span, a message is sent from the ticket's own span.
    outside = tc.parse(tc.headers_for("T-1")[tc.HEADER])
    assert outside == (tc.ticket_trace_id("T-1"), tc.ticket_span_id("T-1"))
    assert tc.headers_for("_agents") == {}


def test_handling_a_delivery_is_a_new_span_in_the_senders_trace() -> None:
    sent = tc.format_traceparent("a" * 32, "b" * 16)
    span = tc.delivery_span({tc.HEADER: sent})
    assert span["trace_id"] == "a" * 32
    assert len(span["span_id"]) == 16 and span["span_id"] != "b" * 16
    assert set(tc.delivery_span({tc.HEADER: "nonsense"})) == {"span_id"}
    assert set(tc.delivery_span(None)) == {"span_id"}


def test_binding_a_ticket_binds_its_trace() -> None:
    with logging_context():
        tc.bind_ticket("T-9", "build")
        assert dict(log_fields()) == {
            "ticket": "T-9",
            "task": "build",
            "trace_id": tc.ticket_trace_id("T-9"),
        }
    assert "ticket" not in log_fields()


def test_a_tickets_own_span_ids_are_the_same_everywhere_and_distinct() -> None:
    ids = {
        tc.ticket_span_id("T-1"),
        tc.ticket_span_id("T-2"),
        tc.phase_span_id("T-1", "design"),
        tc.phase_span_id("T-1", "design", 1),
        tc.phase_span_id("T-1", "testing"),
        tc.task_span_id("T-1", "design"),
        tc.task_span_id("T-1", "a"),
    }
    assert len(ids) == 7
    assert all(len(i) == 16 and int(i, 16) for i in ids)
    assert tc.task_span_id("T-1", "a") == tc.derived_span_id("T-1", "task", "a")

"""Traces: one ticket is one trace, whose spans come from every process that worked on it,
reach an OTLP collector and the store, and read as a waterfall."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.trace_context import phase_span_id, task_span_id, ticket_span_id, ticket_trace_id
from tests.helpers import omoi_sql, wait_until
from tests.integration.test_up import Up, connect, omoi_cli, up_env
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TICKET = "TR1"
PROCESSES = {"omoi-gateway", "omoi-planner", "omoi-worker", "omoi-validator"}


def gated_ticket() -> dict[str, Any]:
    return {
        "id": TICKET,
        "title": "traced",
        "tasks": [
            {"name": "notes", "phase": "requirements",
             "command": "mkdir -p docs && echo ok > docs/requirements.md"},
            {"name": "build", "phase": "implementation", "command": "echo x > build.txt",
             "depends_on": ["notes"]},
        ],
        "gates": {"requirements": {"checks": [{"kind": "file", "path": "docs/requirements.md"}]}},
    }  # fmt: skip


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture
async def traced_up(tmp_path: Path, receiver: OtlpReceiver) -> AsyncIterator[Up]:
    u = Up(tmp_path, tmp_path / "omoi-data", tmp_path / "up.log")
    u.extra_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OMOI_STORE_PUBLISH_INTERVAL_S": "0.2",
    }
    yield u
    if u.proc is not None and u.proc.returncode is None:
        u.proc.kill()
        await u.proc.wait()


def by_name(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    named: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


async def test_a_ticket_is_one_trace_from_four_processes_in_otlp_and_the_store(
    traced_up: Up, receiver: OtlpReceiver
) -> None:
    up = traced_up
    await up.start()
    bus, events = await connect(up)
    token = (up.data_dir / "auth" / "gateway-admin.token").read_text().strip()
    trace_id = ticket_trace_id(TICKET)
    try:
        async with httpx.AsyncClient(base_url=up.state["http_url"], timeout=10) as http:
            reply = await http.post(
                "/api/v1/tickets",
                json=gated_ticket(),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert reply.status_code == 201, reply.text
        await events.wait_type(TICKET, "ticket.done", timeout=60)

        async def complete() -> bool:
            spans = receiver.trace(trace_id)
            return "ticket" in by_name(spans) and {s.service for s in spans} >= PROCESSES

        await wait_until(complete, timeout=30, interval=0.2)
    finally:
        await events.stop()
        await bus.close()

    spans = receiver.trace(trace_id)
    named = by_name(spans)
    assert {s.service for s in spans} >= PROCESSES
    (ticket,) = named["ticket"]
    assert ticket.parent_id is None and ticket.span_id == ticket_span_id(TICKET)
    assert ticket.service == "omoi-planner" and ticket.attributes["omoi.status"] == "done"
    phase = next(s for s in named["phase requirements"])
    assert phase.span_id == phase_span_id(TICKET, "requirements")
    assert phase.parent_id == ticket.span_id
    tasks = {s.attributes["omoi.task"]: s for s in named["task"]}
    assert tasks["notes"].span_id == task_span_id(TICKET, "notes")
    assert tasks["notes"].parent_id == phase.span_id
    attempts = {s.attributes["omoi.task"]: s for s in named["attempt"]}
    assert attempts["notes"].parent_id == tasks["notes"].span_id
    assert attempts["notes"].service == "omoi-worker"
    assert attempts["notes"].attributes["omoi.outcome"] == "succeeded"
    (gate,) = named["gate requirements"]
    assert gate.service == "omoi-validator" and gate.parent_id == phase.span_id
    (check,) = named["check"]
    assert check.parent_id == gate.span_id
    (submitted,) = named["submit"]
    assert submitted.service == "omoi-gateway" and submitted.parent_id == ticket.span_id
    # The HTTP request itself is a span too (Litestar's plugin), in a trace of its own.
    assert any(s.service == "omoi-gateway" and "POST" in s.name for s in receiver.spans)

    # The store has the same trace, as the `spans` view.
    env = {**up_env(), "OMOI_DATA_DIR": str(up.data_dir)}

    async def stored() -> Any:
        q = f"SELECT name, role FROM spans WHERE trace_id = '{trace_id}' ORDER BY \"at\""
        rows = (await omoi_sql(env, q))[1]
        return rows if rows and {r["role"] for r in rows} >= {"planner", "worker"} else None

    rows = await wait_until(stored, timeout=30, interval=0.5)
    assert {"ticket", "task", "attempt", "gate requirements", "submit"} <= {r["name"] for r in rows}
    code, out, err = await omoi_cli(up.cwd, "trace", TICKET, "--data-dir", str(up.data_dir))
    assert code == 0, err
    lines = out.splitlines()
    assert "ticket" in lines[0] and "planner" in lines[0]  # the root first
    assert any("└ attempt notes" in line and "worker" in line for line in lines)
    assert any("└ gate requirements" in line and "validator" in line for line in lines)
    # The ticket's page draws the same waterfall, from the gateway's own store reader.
    async with httpx.AsyncClient(base_url=up.state["http_url"], timeout=10) as http:
        page = await http.get(f"/tickets/{TICKET}", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200
    assert f'data-span="{ticket_span_id(TICKET)}" data-depth="0"' in page.text
    assert 'role-validator" data-span=' in page.text and ">gate requirements<" in page.text
    assert await up.stop() == 0

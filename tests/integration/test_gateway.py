"""The HTTP gateway against a real nats-server, planner and shell worker."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import duckdb
import httpx
import pytest

from agents.settings import Settings
from agents.validator.agent import Validator
from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from bus.auth import Credentials
from bus.trace_context import ticket_span_id, ticket_trace_id
from gateway.app import create_app
from gateway.context import GatewayOptions
from gateway.serve import serving
from gateway.sql import ErrorMappingReader, SqlReader
from schemas import WORK_PHASES, Heartbeat, TicketStatus, utcnow
from schemas.token import ApiToken, Role, mint
from tests.helpers import EventLog, Running, ticket_finished, wait_until

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
PROBLEM = "application/problem+json"
PHASES = [p.value for p in WORK_PHASES]


class ReadOnlyViolation(Exception):
    pass


class DuckReader:
    """A real DuckDB, in memory, holding the store's three views with a little data.

    DuckDB's own parser decides what is a read, as the store does."""

    def __init__(self) -> None:
        self.db = duckdb.connect(":memory:")
        self.db.execute(
            """
            CREATE TABLE finished (minute TIMESTAMP, succeeded INTEGER, failed INTEGER);
            INSERT INTO finished VALUES
                ('2026-01-01 10:00', 4, 0), ('2026-01-01 10:01', 6, 1), ('2026-01-01 10:02', 3, 2);
            CREATE VIEW throughput_per_minute AS SELECT * FROM finished;
            CREATE VIEW latency_by_phase_capability AS SELECT * FROM (VALUES
                ('design', 'shell', 10, 5.0, 20.0, 30.0, 100.0, 250.0),
                ('testing', 'shell', 4, 8.0, 40.0, 60.0, 900.0, 1500.0))
                t(phase, capability, attempts, schedule_to_start_p50_ms, schedule_to_start_p95_ms,
                  schedule_to_start_p99_ms, run_p50_ms, run_p95_ms);
            CREATE VIEW retry_causes AS SELECT * FROM (VALUES ('exit_code', 5), ('timeout', 2))
                t(error_category, count);
            CREATE VIEW logs AS SELECT * FROM (VALUES
                (1, TIMESTAMPTZ '2026-01-01 10:00:00+00', 'info', 'planner', 'planner-1', 'lg-1',
                 NULL, 'ticket lg-1 created with 1 tasks'),
                (2, TIMESTAMPTZ '2026-01-01 10:00:01+00', 'warning', 'worker', 'worker-1', 'lg-1',
                 'a', 'lg-1.a attempt 1 failed, retry in 0.05s'),
                (3, TIMESTAMPTZ '2026-01-01 10:00:02+00', 'info', 'worker', 'worker-2', 'other',
                 'a', 'a line about another ticket'))
                t(stream_seq, "at", level, role, agent, ticket_id, task, message);
            CREATE VIEW spans AS SELECT * FROM (VALUES
                ('{tr}', '{root}', NULL, 'ticket', 'planner', 'planner-1', NULL,
                 TIMESTAMPTZ '2026-01-01 10:00:00+00', TIMESTAMPTZ '2026-01-01 10:00:10+00',
                 10000.0, 'ok', NULL, '{{}}'),
                ('{tr}', 'a1', '{root}', 'attempt', 'worker', 'worker-1', 'a',
                 TIMESTAMPTZ '2026-01-01 10:00:02+00', TIMESTAMPTZ '2026-01-01 10:00:07+00',
                 5000.0, 'error', 'exit code 3 <boom>', '{{}}'))
                t(trace_id, span_id, parent_id, name, role, agent, task, "at", end_at,
                  duration_ms, status, status_message, attributes);
            CREATE VIEW alerts AS SELECT * FROM (VALUES
                ('backlog', 'warning', 'firing', 'backlog/q', 'queue_depth of q is 900',
                 TIMESTAMPTZ '2026-01-01 10:00:00+00'),
                ('worker-failing', 'critical', 'firing', 'worker-failing/w-1',
                 'w-1 failed <5> of 5', TIMESTAMPTZ '2026-01-01 09:00:00+00'),
                ('old', 'critical', 'resolved', 'old/x', 'over',
                 TIMESTAMPTZ '2026-01-01 08:00:00+00'))
                t(rule, severity, status, key, summary, started_at);
            """.format(tr=ticket_trace_id("lg-1"), root=ticket_span_id("lg-1"))
        )

    def query(self, sql: str, params: Sequence[object] = (), *, max_rows: int) -> Any:
        kinds = {s.type for s in duckdb.extract_statements(sql)}
        if kinds != {duckdb.StatementType.SELECT}:
            raise ReadOnlyViolation(f"only a SELECT may run here, not {sorted(map(str, kinds))}")
        cur = self.db.cursor()  # one cursor per thread: the gateway queries off the loop
        try:
            cur.execute(sql, list(params) if params else None)
            columns = [d[0] for d in cur.description or []]
            rows = cur.fetchmany(max_rows + 1)
        finally:
            cur.close()
        return _Result(columns, rows[:max_rows], len(rows) > max_rows)


class _Result:
    def __init__(self, columns: list[str], rows: list[Any], truncated: bool) -> None:
        self.columns, self.rows, self.truncated = columns, rows, truncated


def duck_reader() -> SqlReader:
    return ErrorMappingReader(DuckReader(), denied=(ReadOnlyViolation,), invalid=(duckdb.Error,))


async def make_token(bus: Bus, role: Role = Role.ADMIN, name: str = "test", **kw: Any) -> str:
    """A token of `role`, stored as `omoi token create` stores it; its text."""
    text, record = mint(role, name, created_by="test", **kw)
    tokens = await bus.bucket(c.TOKENS_BUCKET, ApiToken)
    assert await tokens.create(record.id, record)
    return text


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def gateway_client(
    settings: Settings,
    bus: Bus | None,
    reader: SqlReader | None = None,
    *,
    token: str | None = None,
    **options: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway on a real socket, signed with `token` (else a new admin's)."""
    opts = GatewayOptions(**{"request_timeout_s": 2.0, **options})
    app = create_app(settings=settings, bus=bus, reader=reader, options=opts)
    if token is None and bus is not None:
        token = await make_token(bus)
    headers = bearer(token) if token else {}
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, timeout=20, headers=headers) as client,
    ):
        yield client


@pytest.fixture
async def api(settings: Settings, bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(settings, bus, duck_reader(), keepalive_s=0.3) as client:
        yield client


def graph(*names: str, command: str = "true") -> list[dict[str, Any]]:
    """A chain of shell tasks, one per phase (the rest in deployment), each needing the last."""
    return [
        {"name": n, "phase": PHASES[min(i, 4)], "command": command}
        | ({"depends_on": [names[i - 1]]} if i else {})
        for i, n in enumerate(names)
    ]


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    return body


# Submitting


async def test_submit_over_http_runs_to_done(
    api: httpx.AsyncClient, events: EventLog, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    r = await api.post("/api/v1/tickets", json={"title": "via http", "tasks": graph("a", "b", "c")})
    assert r.status_code == 201, r.text
    ticket_id = r.json()["ticket_id"]
    assert r.json()["status"] == "accepted"
    assert r.headers["location"] == f"/api/v1/tickets/{ticket_id}"
    await events.wait_type(ticket_id, "ticket.done")
    ticket = (await api.get(r.headers["location"])).json()
    assert (ticket["status"], ticket["phase"]) == ("done", "done")
    assert ticket["phase_history"][0]["from"] == "requirements"  # wire names, not Python's
    tasks = (await api.get(f"/api/v1/tickets/{ticket_id}/tasks")).json()
    assert [(t["name"], t["status"]) for t in tasks] == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "succeeded"),
    ]
    task = (await api.get(f"/api/v1/tickets/{ticket_id}/tasks/b")).json()
    assert task["id"] == f"{ticket_id}.b"
    assert_problem(await api.get(f"/api/v1/tickets/{ticket_id}/tasks/nope"), 404)


async def test_idempotency_key_never_makes_two_tickets(
    api: httpx.AsyncClient, bus: Bus, events: EventLog, start_planner: Start
) -> None:
    await start_planner()
    body = {"title": "once", "tasks": graph("only")}
    for key, expected in (("order-42", "order-42"), ("not an id: spaces & dots.", None)):
        first = await api.post("/api/v1/tickets", json=body, headers={"Idempotency-Key": key})
        again = await api.post("/api/v1/tickets", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 201, again.text
        ticket_id = first.json()["ticket_id"]
        assert again.json()["ticket_id"] == ticket_id
        if expected:
            assert ticket_id == expected
        else:
            assert ticket_id.startswith("T-")
        await events.wait_type(ticket_id, "ticket.created")
    assert sorted(await bus.tickets.keys()) == sorted(["order-42", ticket_id])
    # The same key with a different body is a conflict, not a silent second ticket.
    other = await api.post(
        "/api/v1/tickets", json={"title": "other"}, headers={"Idempotency-Key": "order-42"}
    )
    assert assert_problem(other, 409)["category"] == "duplicate_id"
    # Without a key, every POST is a new ticket (like the CLI).
    a = (await api.post("/api/v1/tickets", json=body)).json()["ticket_id"]
    b = (await api.post("/api/v1/tickets", json=body)).json()["ticket_id"]
    assert a != b


async def test_invalid_bodies_are_problems(
    api: httpx.AsyncClient, settings: Settings, start_planner: Start
) -> None:
    await start_planner()
    schema = await api.post(
        "/api/v1/tickets",
        json={"title": "", "tasks": [{"name": "bad name", "phase": "nowhere"}], "colour": "red"},
    )
    fields = {e["field"] for e in assert_problem(schema, 422)["errors"]}
    assert {"title", "tasks.0.name", "tasks.0.phase", "colour"} <= fields
    not_json = await api.post(
        "/api/v1/tickets", content=b"{title:", headers={"content-type": "application/json"}
    )
    assert_problem(not_json, 400)
    not_object = await api.post("/api/v1/tickets", json=[1, 2])
    assert_problem(not_object, 422)
    too_big = await api.post(
        "/api/v1/tickets",
        json={"title": "big", "description": "x" * (settings.max_ticket_bytes + 1)},
    )
    assert_problem(too_big, 413)
    # What only the planner can judge (the graph) comes back as its rejection.
    cycle = [
        {"name": "a", "phase": "design", "command": "true", "depends_on": ["b"]},
        {"name": "b", "phase": "design", "command": "true", "depends_on": ["a"]},
    ]
    rejected = await api.post("/api/v1/tickets", json={"title": "loop", "tasks": cycle})
    assert "cycle" in assert_problem(rejected, 422)["detail"]
    assert_problem(await api.post("/api/v1/tickets/x/move", json={"phase": "nowhere"}), 422)
    assert_problem(await api.get("/api/v1/tickets?limit=0"), 400)
    assert_problem(await api.get("/api/v1/tickets/has.dot"), 400)
    assert_problem(await api.get("/api/v1/no/such/route"), 404)
    assert_problem(await api.delete("/api/v1/tickets"), 405)


async def test_no_planner_means_stored_submissions_and_503_commands(
    settings: Settings, bus: Bus
) -> None:
    async with gateway_client(settings, bus, request_timeout_s=0.5) as api:
        r = await api.post(
            "/api/v1/tickets", json={"title": "later"}, headers={"Idempotency-Key": "k"}
        )
        # The intake stream holds it; a planner will take it when one runs.
        assert (r.status_code, r.json()["status"], r.json()["ticket_id"]) == (202, "stored", "k")
        assert r.headers["location"] == "/api/v1/tickets/k"
        busy = await api.post("/api/v1/tickets/k/cancel")
        assert assert_problem(busy, 503)["type"].endswith("no-planner")
        assert busy.headers["retry-after"]


# Reading and steering


async def test_list_filter_paginate_and_commands(
    api: httpx.AsyncClient, events: EventLog, start_planner: Start
) -> None:
    await start_planner()  # no worker: tickets wait in their first phase with tasks
    for n in range(4):
        r = await api.post(
            "/api/v1/tickets", json={"id": f"t{n}", "title": f"t{n}", "tasks": graph("x", "y")}
        )
        assert r.status_code == 201
        await events.wait_type(f"t{n}", "task.queued")
    page = (await api.get("/api/v1/tickets", params={"limit": 3})).json()
    assert page["total"] == 4
    assert [t["id"] for t in page["items"]] == ["t3", "t2", "t1"]  # newest first
    rest = (await api.get("/api/v1/tickets", params={"limit": 3, "offset": 3})).json()
    assert [t["id"] for t in rest["items"]] == ["t0"]

    ok = await api.post("/api/v1/tickets/t1/cancel", json={"reason": "not needed"})
    assert ok.status_code == 200 and ok.json()["ticket_id"] == "t1"
    await events.wait_type("t1", "ticket.cancelled")
    assert_problem(await api.post("/api/v1/tickets/t1/cancel"), 409)
    assert_problem(await api.post("/api/v1/tickets/missing/cancel"), 404)
    cancelled = (await api.get("/api/v1/tickets", params={"status": "cancelled"})).json()
    assert [t["id"] for t in cancelled["items"]] == ["t1"]
    assert (await api.get("/api/v1/tickets", params={"status": "done"})).json()["total"] == 0

    skip = await api.post("/api/v1/tickets/t2/move", json={"phase": "deployment"})
    assert assert_problem(skip, 409)["category"] == "invalid_transition"
    assert (await api.post("/api/v1/tickets/t2/move", json={"phase": "blocked"})).status_code == 200
    await events.wait_type("t2", "ticket.phase_changed", to="blocked")
    blocked = (await api.get("/api/v1/tickets", params={"phase": "blocked"})).json()
    assert [t["id"] for t in blocked["items"]] == ["t2"]
    assert_problem(await api.post("/api/v1/tickets/nope/move", json={"phase": "design"}), 404)

    r = await api.post("/api/v1/tickets/t3/tasks/x/cancel", json={"reason": "stop"})
    assert r.status_code == 200 and r.json()["task_id"] == "t3.x"
    await events.wait_type("t3", "task.cancelled", task="x")
    assert_problem(await api.post("/api/v1/tickets/t3/tasks/x/cancel"), 409)
    assert_problem(await api.post("/api/v1/tickets/t3/tasks/zz/cancel"), 404)
    assert_problem(await api.get("/api/v1/tickets/missing"), 404)


async def test_agents_with_age_and_health(
    api: httpx.AsyncClient, bus: Bus, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    worker = await start_worker()
    old = Heartbeat(
        agent_id="gone-1", role="worker", interval_s=1, at=utcnow() - timedelta(seconds=10)
    )
    await bus.heartbeats.put(old.agent_id, old)
    agents = {a["agent_id"]: a for a in (await api.get("/api/v1/heartbeats")).json()}
    assert agents[worker.id]["health"] == "ok" and agents[worker.id]["age_s"] >= 0
    assert {a["role"] for a in agents.values()} >= {"planner", "worker"}
    assert agents["gone-1"]["health"] == "stale" and agents["gone-1"]["age_s"] >= 10
    # The live ones answer the service API; a heartbeat alone is not an agent there.
    live = {a["agent_id"] for a in (await api.get("/api/v1/agents")).json()}
    assert worker.id in live and "gone-1" not in live


async def test_sql_over_the_store(api: httpx.AsyncClient, settings: Settings, bus: Bus) -> None:
    r = await api.post("/api/v1/sql", json={"sql": "SELECT * FROM retry_causes ORDER BY 2 DESC"})
    assert r.json() == {
        "columns": ["error_category", "count"],
        "rows": [["exit_code", 5], ["timeout", 2]],
        "truncated": False,
    }
    cut = await api.post("/api/v1/sql", json={"sql": "SELECT * FROM range(10)", "max_rows": 3})
    assert (len(cut.json()["rows"]), cut.json()["truncated"]) == (3, True)
    # DuckDB values JSON has no type for still answer, not 500.
    odd = "SELECT 'nan'::DOUBLE, now(), 1.5::DECIMAL(4,2), '\\x01'::BLOB, uuid(), INTERVAL 2 SECOND"
    row = (await api.post("/api/v1/sql", json={"sql": odd})).json()["rows"][0]
    assert (row[0], row[2], row[3], row[5]) == (None, 1.5, "AQ==", 2.0)
    assert_problem(await api.post("/api/v1/sql", json={"sql": "DROP VIEW retry_causes"}), 403)
    assert_problem(await api.post("/api/v1/sql", json={"sql": "SELEC nonsense"}), 400)
    assert_problem(await api.post("/api/v1/sql", json={"sql": "SELECT * FROM missing"}), 400)
    assert_problem(await api.post("/api/v1/sql", json={"sql": ""}), 422)
    async with gateway_client(settings, bus, reader=None) as plain:
        assert_problem(await plain.post("/api/v1/sql", json={"sql": "SELECT 1"}), 503)


# Live events


async def read_sse(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Server-sent events as dicts of their fields; a comment-only block has `comment`."""
    block: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if block:
                yield block
            block = {}
        elif line.startswith(":"):
            block["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            block[name] = f"{block[name]}\n{value}" if name in block else value


async def collect(
    stream: AsyncIterator[dict[str, str]], until: Callable[[dict[str, str]], bool]
) -> list[dict[str, str]]:
    """Events (not comments, not `ready`) up to and including the first matching `until`."""
    out: list[dict[str, str]] = []
    async with asyncio.timeout(30):
        async for block in stream:
            if "id" in block:
                out.append(block)
                if until(block):
                    return out
    raise AssertionError(f"stream ended before the awaited event; got {out}")


async def test_sse_delivers_a_ticket_in_stream_order_and_resumes(
    api: httpx.AsyncClient, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    url = "/api/v1/tickets/live-1/events/stream"
    async with api.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = read_sse(response)
        assert (await anext(stream))["event"] == "ready"  # subscribed: now it is safe to submit
        body = {"id": "live-1", "title": "watch me", "tasks": graph("a", "b")}
        assert (await api.post("/api/v1/tickets", json=body)).status_code == 201
        seen = await collect(stream, lambda b: b["event"] == "ticket.done")
    ids = [int(b["id"]) for b in seen]
    assert ids == sorted(set(ids)), "ids must increase strictly"
    assert seen[0]["event"] == "ticket.created"
    for block in seen:
        event = json.loads(block["data"])
        assert (event["type"], event["ticket_id"]) == (block["event"], "live-1")
    assert {"task.queued", "task.started", "task.succeeded"} <= {b["event"] for b in seen}

    # A reconnect with Last-Event-ID gets exactly the rest, then only keep-alives.
    cut = len(seen) // 2
    headers = {"Last-Event-ID": seen[cut - 1]["id"]}
    async with api.stream("GET", url, headers=headers) as response:
        stream = read_sse(response)
        assert (await anext(stream))["event"] == "ready"
        rest = await collect(stream, lambda b: b["event"] == "ticket.done")
        assert (await anext(stream)) == {"comment": "keep-alive"}
    assert [(b["id"], b["event"]) for b in rest] == [(b["id"], b["event"]) for b in seen[cut:]]

    # `since` does the same from the URL, and `replay` starts at the beginning of everything.
    async with api.stream("GET", f"{url}?since={seen[-2]['id']}") as response:
        assert [b["id"] for b in await collect(read_sse(response), lambda b: True)] == [
            seen[-1]["id"]
        ]
    async with api.stream("GET", "/api/v1/events/stream?replay=true") as response:
        everything = await collect(read_sse(response), lambda b: b["event"] == "ticket.done")
    assert [b["id"] for b in everything if '"live-1"' in b["data"]] == [b["id"] for b in seen]
    assert_problem(await api.get(url, headers={"Last-Event-ID": "yesterday"}), 400)


# Health, readiness, lifecycle


async def test_health_and_readiness_follow_nats(
    settings: Settings, nats_server: EmbeddedNatsServer, admin: Credentials
) -> None:
    assert settings.nats_url
    provisioner = await Bus.connect(
        settings.nats_url, "provisioner", topology=settings.topology(), credentials=admin
    )
    token = await make_token(provisioner, Role.VIEWER)
    await provisioner.close()
    await nats_server.stop()
    # The app owns its connection here, as `python -m gateway` does, and starts without NATS.
    options = GatewayOptions(connect_wait_s=0.2)
    # As its own role, which may not provision: a planner does, once NATS is back.
    app = create_app(settings.nats_url, settings=settings, options=options)
    async with (
        serving(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10, headers=bearer(token)) as client,
    ):

        async def ready(status: int) -> bool:
            return (await client.get("/api/v1/ready")).status_code == status

        for prefix in ("", "/api/v1"):  # probes at the root, and with the API
            assert (await client.get(f"{prefix}/health")).json() == {"status": "ok"}
            assert_problem(await client.get(f"{prefix}/ready"), 503)
        # Without NATS a token cannot be checked (503); no token at all is a 401 regardless.
        assert_problem(await client.get("/api/v1/tickets"), 503)
        assert_problem(await client.get("/api/v1/tickets", headers={"Authorization": ""}), 401)

        await nats_server.start()
        planner = await Bus.connect(
            settings.nats_url,
            name="provisioner",
            topology=settings.topology(),
            credentials=settings.credentials("planner"),
        )
        await planner.close()
        await wait_until(lambda: ready(200), timeout=15)
        assert (await client.get("/ready")).json() == {"status": "ready"}
        assert (await client.get("/api/v1/tickets")).json()["total"] == 0

        await nats_server.stop()
        await wait_until(lambda: ready(503), timeout=15)
        assert (await client.get("/api/v1/health")).status_code == 200
        # During the outage a read rides it out for the gateway's patience, then answers
        # 503 rather than hanging until the client gives up (this client waits 10 s).
        outage = assert_problem(await client.get("/api/v1/tickets"), 503)
        assert outage["type"].endswith("nats-unavailable")


async def test_gateway_waits_for_a_topology_that_is_provisioned_later(
    settings: Settings, nats_server: EmbeddedNatsServer, admin: Credentials
) -> None:
    # A gateway without a topology of its own (as behind an `omoi up` elsewhere) keeps
    # connecting until somebody provisions one.
    assert settings.nats_url
    options = GatewayOptions(connect_wait_s=0.2, bus_patience_s=0.5)
    app = create_app(settings.nats_url, settings=settings, options=options)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        assert "not connected" in assert_problem(await client.get("/ready"), 503)["detail"]
        waiting = bearer("omoi_aaaaaaaaaaaa_" + "A" * 43)  # well-formed, so it waits for NATS
        assert_problem(await client.get("/api/v1/tickets", headers=waiting), 503)
        provisioner = await Bus.connect(
            settings.nats_url,
            name="provisioner",
            topology=settings.topology(),
            credentials=settings.credentials("planner"),
        )
        await provisioner.close()
        # Tokens are an operator's (or admin's) to make, not the planner's.
        operator = await Bus.connect(settings.nats_url, "token maker", credentials=admin)
        token = await make_token(operator, Role.VIEWER)
        await operator.close()

        async def ready() -> bool:
            return (await client.get("/ready")).status_code == 200

        await wait_until(ready, timeout=40)
        tickets = await client.get("/api/v1/tickets", headers=bearer(token))
        assert tickets.json()["total"] == 0


async def test_openapi_is_served(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/schema/openapi.json")).json()
    assert "/api/v1/tickets" in schema["paths"]
    assert "TicketSubmission" in schema["components"]["schemas"]
    assert (await api.get("/schema")).status_code == 200


async def test_dashboard_pages_render_state(
    api: httpx.AsyncClient, events: EventLog, bus: Bus, start_planner: Start, start_worker: Start
) -> None:
    await start_planner()
    await start_worker()
    fails = [{"name": "boom", "phase": "design", "command": "exit 3", "max_retries": 0}]
    await api.post("/api/v1/tickets", json={"id": "ok-1", "title": "fine", "tasks": graph("a")})
    await api.post("/api/v1/tickets", json={"id": "bad-1", "title": "breaks", "tasks": fails})
    await bus.nc.publish(c.SUBMIT_SUBJECT, b"not json at all")
    await events.wait_type("ok-1", "ticket.done")
    await events.wait_type("bad-1", "ticket.failed")
    await events.wait(lambda e: e.type == "ticket.rejected")
    await wait_until(lambda: _dlq_has(bus))

    page = (await api.get("/")).text
    assert 'data-ticket-id="ok-1" data-phase="done"' in page
    assert 'data-ticket-id="bad-1" data-phase="design"' in page and 'data-status="failed"' in page
    assert 'data-type="task.failed"' in page and "exit_code" in page
    assert "payload is not valid JSON" in page  # the dead letter's Omoi-Reason
    for chart in ("throughput", "latency", "causes"):
        assert f'data-chart="{chart}" data-has-data="true"' in page
    detail = (await api.get("/tickets/ok-1")).text
    assert 'data-task="a"' in detail and 'data-status="succeeded"' in detail
    assert_problem(await api.get("/tickets/nope"), 404)
    assert (await api.get("/static/dashboard.js")).status_code == 200


async def _dlq_has(bus: Bus) -> bool:
    return bool((await bus.js.stream_info(c.DLQ_STREAM)).state.messages)


async def test_the_ticket_page_shows_branches_merges_locks_and_assignments(
    api: httpx.AsyncClient,
    events: EventLog,
    bus: Bus,
    settings: Settings,
    running: Running,
    start_planner: Start,
    start_worker: Start,
) -> None:
    await start_planner()
    await start_worker()
    await running.start(Validator(bus, settings, env=dict(os.environ)))
    release = settings.data_dir.parent / "release-br-1"
    payload = {
        "id": "br-1",
        "title": "branches",
        "gates": {"implementation": {"checks": [{"kind": "diff"}]}},
        "tasks": [
            {"name": "left", "phase": "implementation", "command": "echo l > l.txt"},
            # Waits on a file outside every workspace: it may run in a worktree of its own.
            {"name": "right", "phase": "implementation", "resources": ["db:migrations"],
             "command": f"echo r > r.txt; while [ ! -f {release} ]; do sleep 0.05; done"},
        ],
    }  # fmt: skip
    assert (await api.post("/api/v1/tickets", json=payload)).status_code == 201
    await events.wait_type("br-1", "task.started", task="right")
    holding = (await api.get("/tickets/br-1")).text
    assert 'data-lock="named.db.migrations"' in holding
    assert "locks db:migrations (exclusive)" in holding
    assert 'class="small assignment"' in holding and "on worker-" in holding
    release.touch()
    ticket = await wait_until(lambda: ticket_finished(bus, "br-1"), timeout=60)
    assert ticket.status is TicketStatus.DONE, ticket.reason
    done = (await api.get("/tickets/br-1")).text
    assert 'data-branch="omoi/task/left" data-kind="work"' in done
    assert 'data-branch="omoi/task/right" data-kind="work"' in done
    assert 'data-branch="omoi/task/merge-implementation" data-kind="merge"' in done
    assert "data-lock=" not in done  # released

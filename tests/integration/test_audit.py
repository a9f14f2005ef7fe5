"""Audit entries end to end: the gateway and the CLI publish them, the recorder stores them,
and they are rows of the `audit_log` view (asked for through the gateway's own SQL route)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js.errors import APIError

from agents.recorder.agent import Recorder
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from bus.audit import AuditTrail
from bus.auth import Credentials
from gateway.__main__ import PublishedStore
from gateway.app import create_app
from gateway.context import GatewayOptions
from gateway.serve import serving
from schemas.audit import AuditAction, AuditEntry, AuditOutcome
from schemas.token import Role
from tests.helpers import Running, audit_entries, wait_until
from tests.integration.test_gateway import bearer, make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OMOI = str(Path(sys.executable).parent / "omoi")
Start = Callable[..., Awaitable[Any]]
COLUMNS = "action, outcome, actor, role, via, source, target, status, count, detail"


async def omoi(settings: Settings, *args: str) -> tuple[int, str, str]:
    assert settings.nats_url
    proc = await asyncio.create_subprocess_exec(
        OMOI, *args, env={**os.environ, "NATS_URL": settings.nats_url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def audit_rows(api: httpx.AsyncClient, token: str, where: str) -> list[dict[str, Any]]:
    sql = f"SELECT {COLUMNS} FROM audit_log WHERE {where} ORDER BY stream_seq"
    r = await api.post("/api/v1/sql", json={"sql": sql}, headers=bearer(token))
    if r.status_code != 200:  # nothing published yet
        return []
    body = r.json()
    return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


async def test_what_clients_do_and_try_lands_in_the_audit_log(
    settings: Settings, bus: Bus, running: Running, start_planner: Start
) -> None:
    s = settings.model_copy(update={"store_publish_interval_s": 0.2})
    await running.start(Recorder(bus, s))
    await start_planner()
    options = GatewayOptions(
        request_timeout_s=2.0, token_rate_limit=("minute", 40), audit_fold_s=0.2
    )
    app = create_app(settings=s, bus=bus, reader=PublishedStore(s.published_dir), options=options)
    admin, viewer = await make_token(bus, Role.ADMIN), await make_token(bus, Role.VIEWER)
    submitter = await make_token(bus, Role.SUBMITTER, name="ci")
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as api:
        # A flood of requests without a token: folded, but every one is counted.
        for _ in range(5):
            assert (await api.get("/api/v1/agents")).status_code == 401
        # A role too low, a submission taken and one refused, a command, tokens.
        assert (await api.get("/api/v1/tokens", headers=bearer(viewer))).status_code == 403
        body = {"id": "audited-1", "title": "audited", "tasks": []}
        assert (await api.post("/api/v1/tickets", json=body, headers=bearer(submitter))).is_success
        bad = await api.post("/api/v1/tickets", json={"title": ""}, headers=bearer(submitter))
        assert bad.status_code == 422
        cancel = await api.post("/api/v1/tickets/audited-1/cancel", headers=bearer(admin))
        assert cancel.status_code in (200, 409), cancel.text
        made = await api.post("/api/v1/tokens", json={"role": "viewer"}, headers=bearer(admin))
        assert made.status_code == 201
        new_id = made.json()["id"]
        assert (await api.delete(f"/api/v1/tokens/{new_id}", headers=bearer(admin))).is_success
        # The CLI audits what it does to tokens, as its NATS identity.
        code, out, err = await omoi(s, "token", "create", "--role", "viewer", "--name", "cli")
        assert code == 0, err
        cli_id = out.strip().split("_")[1]
        # Past the limit (40 a minute for the viewer's token).
        statuses = [
            (await api.get("/api/v1/tickets", headers=bearer(viewer))).status_code
            for _ in range(41)
        ]
        assert statuses[-1] == 429

        async def recorded(where: str, n: int = 1) -> list[dict[str, Any]]:
            async def probe() -> list[dict[str, Any]]:
                rows = await audit_rows(api, admin, where)
                return rows if sum(r["count"] for r in rows) >= n else []

            return await wait_until(probe, timeout=30, interval=0.2)

        failures = await recorded("action = 'auth.failure' AND target = 'GET /api/v1/agents'", 5)
        assert sum(r["count"] for r in failures) == 5 and len(failures) <= 2  # folded
        assert failures[0] | {"count": 1} == failures[0] | {
            "outcome": "denied", "actor": "anonymous", "role": None, "via": "http",
            "source": "127.0.0.1", "status": 401,
        }  # fmt: skip
        viewer_id, submitter_id = viewer.split("_")[1], submitter.split("_")[1]
        denied = (await recorded("action = 'auth.denied'"))[0]
        assert (denied["actor"], denied["role"], denied["status"]) == (
            f"token:{viewer_id}",
            "viewer",
            403,
        )
        # The gateway's entries (the planner also records what it admits, `via` nats).
        submits = await recorded("action = 'ticket.submit' AND via = 'http'", 2)
        assert [(r["outcome"], r["status"], r["actor"]) for r in submits] == [
            ("ok", 201, f"token:{submitter_id}"),
            ("rejected", 422, f"token:{submitter_id}"),
        ]
        assert submits[0]["target"] == "audited-1"
        command = (await recorded("action = 'ticket.cancel' AND via = 'http'"))[0]
        assert (command["target"], command["role"]) == ("audited-1", "admin")
        created = await recorded("action = 'token.create'", 2)
        assert {(r["target"], r["via"], r["actor"]) for r in created} >= {
            (new_id, "http", f"token:{admin.split('_')[1]}"),
            (cli_id, "nats", "nats:operator"),
        }
        revoked = (await recorded("action = 'token.revoke'"))[0]
        assert (revoked["target"], revoked["outcome"], revoked["status"]) == (new_id, "ok", 204)
        limited = (await recorded("action = 'rate_limit.hit'"))[0]
        assert (limited["actor"], limited["status"]) == (f"token:{viewer_id}", 429)
        assert "40 requests per minute" in limited["detail"]


async def test_the_audit_stream_is_append_only(bus: Bus) -> None:
    info = await bus.js.stream_info(c.AUDIT_STREAM)
    assert info.config.deny_delete and info.config.deny_purge
    assert info.config.subjects == [c.AUDIT_SUBJECTS]
    await bus.js.publish(c.audit_subject("token.create"), b"{}")
    with pytest.raises(APIError):
        await bus.js.delete_msg(c.AUDIT_STREAM, 1)
    with pytest.raises(APIError):
        await bus.js.purge_stream(c.AUDIT_STREAM)
    assert (await bus.js.stream_info(c.AUDIT_STREAM)).state.messages == 1


def entry(**fields: Any) -> AuditEntry:
    base = {"action": AuditAction.AUTH_FAILURE, "outcome": AuditOutcome.DENIED}
    return AuditEntry(**{**base, "actor": "anonymous", "source": "10.0.0.7", **fields})


async def test_a_flood_is_folded_into_two_entries_that_count_it_all(bus: Bus) -> None:
    trail = AuditTrail(bus, fold_s=0.2)
    for _ in range(10):
        trail.record(entry(target="GET /api/v1/tickets"), fold=True)
    trail.record(entry(target="GET /api/v1/agents"), fold=True)  # not identical: its own
    trail.record(entry(target="GET /api/v1/agents"))  # not folded: always sent
    await trail.flush()
    stored = await audit_entries(bus)
    counts = sorted((e.target, e.count) for e in stored)
    assert counts == [
        ("GET /api/v1/agents", 1), ("GET /api/v1/agents", 1),
        ("GET /api/v1/tickets", 1), ("GET /api/v1/tickets", 9),
    ]  # fmt: skip
    assert len({e.id for e in stored}) == 4


async def test_an_entry_that_cannot_be_stored_is_logged_not_raised(
    settings: Settings, bus: Bus, admin: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    assert settings.nats_url
    # No stream takes omoi.audit.> any more (a stream can be deleted; its entries cannot).
    await bus.js.delete_stream(c.AUDIT_STREAM)
    impatient = await Bus.connect(
        settings.nats_url, name="impatient", patience_s=0.3, credentials=admin
    )
    try:
        trail = AuditTrail(impatient)
        trail.record(entry(target="token abc"))  # returns at once
        with caplog.at_level(logging.WARNING, logger="bus.audit"):
            await trail.flush()
    finally:
        await impatient.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "bus.audit"]
    assert any("audit entry not stored: auth.failure token abc by anonymous" in m for m in warned)

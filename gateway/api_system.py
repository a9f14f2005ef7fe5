"""`/api/v1`: liveness, readiness, agents and read-only SQL over the analytics store."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Controller, Response, get, post
from litestar.params import JSONBody

from bus import BusError, streams
from gateway import reads
from gateway.api_tickets import BEARER, PUBLIC, problems
from gateway.context import Ctx
from gateway.models import SqlAnswer, SqlQuery, Status
from gateway.problems import problem_response
from gateway.sql import SqlUnavailable, jsonable_rows

log = logging.getLogger(__name__)

# Readiness must answer quickly even when NATS hangs.
_READY_TIMEOUT_S = 2.0


class ProbeController(Controller):
    """Liveness and readiness; served at the root (for probes) and under /api/v1."""

    path = "/"
    tags = ("system",)

    # Probes need no token: a load balancer or `omoi up` has none.
    @get(
        "/health",
        summary="Liveness: the process serves HTTP (NATS is not consulted)",
        opt=PUBLIC,
    )
    async def health(self) -> Status:
        return Status(status="ok")

    @get(
        "/ready",
        summary="Readiness: connected to NATS and the topology exists",
        opt=PUBLIC,
        responses=problems(503, auth=False),
    )
    async def ready(self, ctx: Ctx) -> Response[Any]:
        bus = ctx.connected
        reason = ""
        if bus is None or not bus.connected:
            reason = "not connected to NATS (yet)"
        else:
            try:
                provisioned = await asyncio.wait_for(streams.provisioned(bus), _READY_TIMEOUT_S)
            except (TimeoutError, BusError) as exc:
                provisioned, reason = False, f"NATS did not answer: {exc!r}"
            if not provisioned and not reason:
                reason = "the Omoi topology is not provisioned on this server"
        if reason:
            return problem_response(503, kind="not-ready", detail=reason)
        return Response(Status(status="ready"))


class SystemController(Controller):
    path = "/"
    tags = ("system",)
    security = BEARER

    @get(
        "/agents",
        summary="Agents by heartbeat, with age and health",
        tags=["agents"],
        responses=problems(),
    )
    async def agents(self, ctx: Ctx) -> list[reads.AgentView]:
        return await reads.agents(ctx.bus, ctx.options.stale_beats)

    @post(
        "/sql",
        status_code=200,
        summary="One read-only query over the analytics store",
        description="403 for anything but a read, 400 for a failing query, 503 without a store. "
        "A viewer may ask: the store is read-only (`audit_log` included).",
        tags=["store"],
        responses=problems(403, 413),
    )
    async def sql(self, ctx: Ctx, data: JSONBody[SqlQuery]) -> SqlAnswer:
        reader = ctx.reader
        if reader is None:
            raise SqlUnavailable("this gateway has no analytics store configured")
        # DuckDB blocks; keep it off the event loop.
        result = await asyncio.to_thread(reader.query, data.sql, max_rows=data.max_rows)
        return SqlAnswer(
            columns=[str(col) for col in result.columns],
            rows=jsonable_rows(result.rows),
            truncated=bool(result.truncated),
        )

"""`/api/v1`: liveness, readiness, agents (live and by heartbeat) and read-only SQL over the
analytics store."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.params import JSONBody, QueryParameter

from bus import BusError, streams
from bus.permissions import AGENT_ROLES
from bus.registry import discover
from gateway import reads
from gateway.api_tickets import BEARER, PUBLIC, problems
from gateway.context import Ctx
from gateway.models import SqlAnswer, SqlQuery, Status
from gateway.problems import problem_response
from gateway.sql import SqlUnavailable, jsonable_rows
from schemas.registry import AgentListing
from schemas.task import CAPABILITY_PATTERN

log = logging.getLogger(__name__)

# Readiness must answer quickly even when NATS hangs.
_READY_TIMEOUT_S = 2.0
_AGENT_ROLE = f"^({'|'.join(AGENT_ROLES)})$"


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
        summary="Live agents, found through the NATS service API",
        description="Every agent that answers `$SRV.STATS` within the search window, by role "
        "and id: its card (role, phases, capabilities, labels, slots, Omoi version) and its "
        "status now (ready, running tasks). Filters combine; an agent that has stopped or "
        "hangs is not listed (`/heartbeats` shows the stale).",
        tags=["agents"],
        responses=problems(),
    )
    async def agents(
        self,
        ctx: Ctx,
        capability: Annotated[
            str | None,
            QueryParameter(
                pattern=CAPABILITY_PATTERN, description="only agents that take this capability"
            ),
        ] = None,
        label: Annotated[
            str | None,
            QueryParameter(pattern=CAPABILITY_PATTERN, description="only agents with this label"),
        ] = None,
        role: Annotated[
            str | None, QueryParameter(pattern=_AGENT_ROLE, description="only agents of this role")
        ] = None,
    ) -> list[AgentListing]:
        return await discover(
            ctx.bus,
            role=role,
            capability=capability,
            label=label,
            timeout_s=ctx.options.discovery_timeout_s,
            stall_s=ctx.options.discovery_stall_s,
        )

    @get(
        "/heartbeats",
        summary="Agents by heartbeat, with age and health",
        description="Every heartbeat in `omoi_heartbeats`, `stale` after missed beats: also "
        "the agents that stopped answering, until their heartbeat expires.",
        tags=["agents"],
        responses=problems(),
    )
    async def heartbeats(self, ctx: Ctx) -> list[reads.AgentView]:
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

"""Audit entries for what clients do through the gateway, built from the request.

`Audited` wraps a submission or a command: whatever way it ends (accepted, refused by the
planner, NATS failing), one entry says so. Entries leave through the context's
`AuditTrail`, so the request never waits for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from bus import BusError
from gateway.auth import Principal
from gateway.context import GatewayContext
from gateway.problems import ApiProblem, http_problem, validation_problem
from schemas.audit import AuditAction, AuditEntry, AuditOutcome, clip

MAX_CLIENT = 200
# Where the app keeps its context (`app.state`), for exception handlers.
STATE_KEY = "omoi_gateway"

Connection = ASGIConnection[Any, Any, Any, Any]


def principal_of(connection: Connection) -> Principal | None:
    user = connection.scope.get("user")
    return user if isinstance(user, Principal) else None


def entry_for(
    connection: Connection,
    action: AuditAction,
    outcome: AuditOutcome,
    *,
    target: str = "",
    status: int | None = None,
    detail: str = "",
    principal: Principal | None = None,
) -> AuditEntry:
    who = principal or principal_of(connection)
    return AuditEntry(
        action=action,
        outcome=outcome,
        actor=who.actor if who else "anonymous",
        role=who.role.value if who else None,
        via="http",
        source=connection.client.host if connection.client else "",
        client=clip(connection.headers.get("user-agent", ""), MAX_CLIENT),
        target=target,
        status=status,
        detail=clip(detail),
    )


@dataclass
class Audited:
    """One audit entry for an `async with` block: ok with `status`, or how it failed."""

    ctx: GatewayContext
    connection: Connection
    action: AuditAction
    target: str = ""
    status: int = 200
    detail: str = ""

    async def __aenter__(self) -> Audited:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome, status, detail = AuditOutcome.OK, self.status, self.detail
        if isinstance(exc, ApiProblem):
            status, detail = exc.status_code, exc.detail
            outcome = AuditOutcome.ERROR if status >= 500 else AuditOutcome.REJECTED
        elif isinstance(exc, BusError):
            outcome, status, detail = AuditOutcome.ERROR, 503, f"NATS failed: {exc}"
        elif exc is not None:
            outcome, status, detail = AuditOutcome.ERROR, 500, f"{type(exc).__name__}: {exc}"
        self.ctx.record(
            entry_for(
                self.connection,
                self.action,
                outcome,
                target=self.target,
                status=status,
                detail=detail,
            )
        )


def refusals_audited(action: AuditAction) -> ExceptionHandlersMap:
    """Exception handlers for a route whose request Litestar itself may refuse before the
    handler runs (a body that breaks the schema, is not JSON, is too big): the refusal is
    audited as `action`, then answered as everywhere else. A guard's refusal (an
    `ApiProblem`) keeps the app's handler, and is audited as an authentication failure."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if isinstance(exc, ValidationException):
            response = validation_problem(request, exc)
        else:
            assert isinstance(exc, HTTPException)
            response = http_problem(request, exc)
        ctx = request.app.state.get(STATE_KEY)
        if isinstance(ctx, GatewayContext):
            body = response.content if isinstance(response.content, dict) else {}
            entry = entry_for(
                request,
                action,
                AuditOutcome.REJECTED,
                target=str(request.path_params.get("ticket_id", "")),
                status=response.status_code,
                detail=str(body.get("detail", "")),
            )
            ctx.record(entry)
        return response

    return {ValidationException: handle, HTTPException: handle}

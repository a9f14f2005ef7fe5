"""Every error leaves the gateway as RFC 9457 problem details (`application/problem+json`).

Handlers raise `ApiProblem`; Litestar's own exceptions (validation, 404 routing, 405, 413)
and bus failures (`bus.BusError`) are converted here, in one place, so no route has to think
about it.
"""

from __future__ import annotations

import logging
from enum import Enum
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from pydantic import BaseModel, Field

from bus import BusError
from gateway.sql import SqlDenied, SqlError, SqlInvalid, SqlUnavailable

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:omoi:problem:"
# Where a failed check lives in the request; anything else (body) is a 422.
_PARAM_SOURCES = frozenset({"query", "path", "header", "cookie"})
_DETAILS = {
    404: "no such resource; the API lives under /api/v1 and its schema at /schema",
    405: "this resource does not take that method",
    413: "the request body is larger than this gateway accepts",
}


class FieldError(BaseModel):
    field: str
    message: str
    source: str = "body"


class Problem(BaseModel):
    """The documented shape of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    errors: list[FieldError] | None = Field(default=None, description="validation failures")
    category: str | None = Field(default=None, description="the planner's error category")
    ticket_id: str | None = None


class ApiProblem(HTTPException):
    """Raised by routes: becomes a problem response with `type` = urn:omoi:problem:<kind>."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail=detail, status_code=status, headers=headers)
        self.kind = kind
        self.title = title or HTTPStatus(status).phrase
        self.fields = extra


def problem_response(
    status: int,
    *,
    kind: str | None,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + kind if kind else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **{k: v for k, v in extra.items() if v is not None},
    }
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _api_problem(_: Request[Any, Any, Any], exc: ApiProblem) -> Response[dict[str, Any]]:
    return problem_response(
        exc.status_code,
        kind=exc.kind,
        detail=exc.detail,
        title=exc.title,
        headers=exc.headers,
        **exc.fields,
    )


def validation_errors(extra: Any) -> list[dict[str, str]]:
    if not isinstance(extra, list):
        return []
    out = []
    for item in extra:
        if isinstance(item, dict):
            source = item.get("source") or "body"
            out.append(
                {
                    "field": str(item.get("key") or "(body)"),
                    "message": str(item.get("message", "")),
                    # Litestar reports parameters by its ParamType enum, the body as "body".
                    "source": str(source.value if isinstance(source, Enum) else source),
                }
            )
    return out


def validation_problem(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    errors = validation_errors(exc.extra)
    # A body that parses but breaks the schema is a 422; malformed parameters are a 400.
    in_params = errors and all(e["source"] in _PARAM_SOURCES for e in errors)
    status = 400 if in_params or not errors else 422
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or exc.detail
    return problem_response(
        status,
        kind="invalid-parameters" if status == 400 else "invalid-body",
        detail=detail,
        errors=errors or None,
    )


def http_problem(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    kind = {413: "payload-too-large", 404: "not-found", 405: "method-not-allowed"}.get(status)
    if status == 400 and "JSON" in exc.detail:
        # Litestar's one plain 400 on a body: it could not decode it ("JSON is malformed").
        kind = "malformed-json"
    elif status == 403 and "CSRF" in exc.detail:
        # A dashboard form posted without its CSRF token (or from another site).
        kind = "csrf-failed"
    detail = exc.detail if exc.detail != HTTPStatus(status).phrase else _DETAILS.get(status, "")
    return problem_response(status, kind=kind, detail=detail, headers=exc.headers)


def _sql(_: Request[Any, Any, Any], exc: SqlError) -> Response[dict[str, Any]]:
    if isinstance(exc, SqlDenied):
        return problem_response(403, kind="sql-read-only", detail=str(exc))
    if isinstance(exc, SqlInvalid):
        return problem_response(400, kind="sql-error", detail=str(exc))
    # SqlUnavailable, or a reader's error it did not classify: the store is what failed.
    kind = "store-unavailable" if isinstance(exc, SqlUnavailable) else "store-error"
    return problem_response(503, kind=kind, detail=str(exc))


def _bus(request: Request[Any, Any, Any], exc: BusError) -> Response[dict[str, Any]]:
    log.warning("%s %s: NATS failed: %r", request.method, request.url.path, exc)
    return problem_response(
        503, kind="nats-unavailable", detail=f"the message bus did not answer: {exc}"
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(500, kind="internal", detail="an unexpected error; see the logs")


def exception_handlers() -> ExceptionHandlersMap:
    return {
        ApiProblem: _api_problem,
        ValidationException: validation_problem,
        HTTPException: http_problem,
        SqlError: _sql,
        BusError: _bus,
        Exception: _unexpected,
    }

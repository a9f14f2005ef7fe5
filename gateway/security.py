"""Authentication at the edge: a middleware says who is asking, guards say whether they may.

The middleware only looks (a bearer token, else the session cookie) and leaves its finding
in the scope: `user` (a `Principal`) or `auth` (an `AuthFailure`). So the rate limits
after it can count per token or per address, and routes that need nobody (`/health`,
`/ready`, the sign-in page) are not refused for a stale cookie. The guards refuse: 401
(with `WWW-Authenticate: Bearer`), 403 for a role too low, 431 for an oversized header,
each one audited. A route's required role is its `opt["role"]` (None: open to all).

The session cookie authenticates reads only: a change through the API needs a bearer
token, so no other site can make a signed-in browser change anything (the dashboard's own
forms are CSRF-protected on top).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect
from litestar.types import ASGIApp, Guard, Receive, Scope, Send

from gateway.audit import Connection, entry_for, principal_of
from gateway.auth import (
    MISSING,
    SESSION_COOKIE,
    AuthFailure,
    Principal,
    check_bearer,
)
from gateway.context import GatewayContext
from gateway.problems import ApiProblem
from schemas.audit import AuditAction, AuditOutcome
from schemas.token import Role

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READS_ONLY = AuthFailure(
    "missing", "the dashboard's session only reads the API; a change needs a bearer token"
)


class AuthMiddleware:
    def __init__(self, app: ASGIApp, ctx: GatewayContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            found = await identify(self.ctx, scope)
            scope["user"] = found if isinstance(found, Principal) else None
            scope["auth"] = found if isinstance(found, AuthFailure) else None
        await self.app(scope, receive, send)


async def identify(ctx: GatewayContext, scope: Scope) -> Principal | AuthFailure | None:
    header: bytes | None = None
    cookies: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            header = value
        elif name == b"cookie":
            cookies.append(value)
    if header is not None:
        limit = ctx.options.max_auth_header_bytes
        if len(header) > limit:
            detail = f"the Authorization header has {len(header)} bytes; at most {limit} are read"
            return AuthFailure("oversized", detail)
        return await check_bearer(ctx.tokens, header.decode("latin-1"))
    session = session_cookie(cookies)
    if session is not None:
        return await ctx.sessions.check(ctx.tokens, session)
    return None


def session_cookie(headers: list[bytes]) -> str | None:
    for header in headers:
        for part in header.decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and value:
                return value
    return None


def required_role(handler: BaseRouteHandler) -> Role | None:
    role = handler.opt.get("role", Role.VIEWER)
    return None if role is None else Role(role)


def audit_failure(ctx: GatewayContext, connection: Connection, failure: AuthFailure) -> int:
    """Audit a request without valid credentials (floods folded); the status it gets."""
    status = 431 if failure.kind == "oversized" else 401
    target = f"{connection.scope.get('method', '')} {connection.url.path}"
    entry = entry_for(
        connection,
        AuditAction.AUTH_FAILURE,
        AuditOutcome.DENIED,
        target=target,
        status=status,
        detail=failure.detail,
    )
    ctx.record(entry, fold=True)
    return status


def refuse(ctx: GatewayContext, connection: Connection, failure: AuthFailure) -> ApiProblem:
    """The problem for a request without valid credentials, audited."""
    if failure.kind == "unavailable":
        return ApiProblem(503, "nats-unavailable", failure.detail, headers={"Retry-After": "5"})
    if audit_failure(ctx, connection, failure) == 431:
        return ApiProblem(431, "header-too-large", failure.detail)
    challenge = 'Bearer realm="omoi"'
    if failure.kind != "missing":
        challenge += ', error="invalid_token"'
    return ApiProblem(401, "unauthorized", failure.detail, headers={"WWW-Authenticate": challenge})


async def second_look(ctx: GatewayContext, connection: Connection) -> Principal | None:
    """A bearer token the gateway's copy did not know, asked of the server once: it may
    have been made a moment ago. Only guards call this, so it happens after the limits."""
    failure = connection.scope.get("auth")
    header = connection.headers.get("authorization")
    if failure is None or failure.kind != "unknown" or header is None:
        return None
    found = await check_bearer(ctx.tokens, header, read=True)
    if isinstance(found, Principal):
        connection.scope["user"], connection.scope["auth"] = found, None
        return found
    return None


def forbid(ctx: GatewayContext, connection: Connection, who: Principal, needed: Role) -> ApiProblem:
    detail = f"this needs the {needed} role; token {who.token_id} is a {who.role}"
    target = f"{connection.scope.get('method', '')} {connection.url.path}"
    ctx.record(
        entry_for(
            connection, AuditAction.AUTH_DENIED, AuditOutcome.DENIED,
            target=target, status=403, detail=detail,
        ),
        fold=True,
    )  # fmt: skip
    return ApiProblem(403, "insufficient-role", detail)


def api_guard(ctx: GatewayContext) -> Guard:
    async def guard(connection: Connection, handler: BaseRouteHandler) -> None:
        needed = required_role(handler)
        if needed is None:
            return
        who = principal_of(connection) or await second_look(ctx, connection)
        if who is None:
            raise refuse(ctx, connection, connection.scope.get("auth") or MISSING)
        if who.via == "session" and connection.scope.get("method") not in SAFE_METHODS:
            raise refuse(ctx, connection, READS_ONLY)
        if not who.role.at_least(needed):
            raise forbid(ctx, connection, who, needed)

    return guard


class SignInRequired(Exception):
    """A dashboard page asked for without a valid session: off to the sign-in page."""

    def __init__(self, path: str, clear_cookie: bool) -> None:
        super().__init__(path)
        self.path = path
        self.clear_cookie = clear_cookie


def page_guard(ctx: GatewayContext) -> Guard:
    """Pages send an anonymous browser to sign in; fragments and forms answer like the API."""

    async def guard(connection: Connection, handler: BaseRouteHandler) -> None:
        needed = required_role(handler)
        if needed is None:
            return
        who = principal_of(connection) or await second_look(ctx, connection)
        is_page = connection.scope.get("method") == "GET" and not handler.opt.get("fragment")
        if who is None and is_page:
            failure = connection.scope.get("auth")
            if failure is not None and failure.kind == "unavailable":
                raise refuse(ctx, connection, failure)
            if failure is not None:
                audit_failure(ctx, connection, failure)
            raise SignInRequired(connection.url.path, clear_cookie=failure is not None)
        if who is None:
            raise refuse(ctx, connection, connection.scope.get("auth") or MISSING)
        if not who.role.at_least(needed):
            raise forbid(ctx, connection, who, needed)

    return guard


def to_sign_in(_: Request[Any, Any, Any], exc: SignInRequired) -> Response[Any]:
    response: Response[Any] = Redirect(f"/login?next={quote(exc.path)}", status_code=303)
    if exc.clear_cookie:
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response

"""Signing in to the dashboard: with a token on `/login`, or with a one-time sign-in link.

A successful sign-in sets the session cookie (HttpOnly, SameSite=Strict, Secure over
https) and goes back to the page that asked. Every form here carries Litestar's CSRF
token (`CSRFConfig`, double submit), so another site can neither sign a browser in nor
out. A sign-in link is a record in `omoi_tokens` that `signs_in_as` another token: it
works once (a compare-and-set marks it used), before it expires, and never as a bearer.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from bus import Bucket, BusError
from gateway.api_tickets import PUBLIC
from gateway.audit import entry_for
from gateway.auth import SESSION_COOKIE, AuthFailure, Principal, check_token, known
from gateway.context import Ctx, GatewayContext
from gateway.security import audit_failure, refuse
from schemas.audit import AuditAction, AuditOutcome
from schemas.common import utcnow
from schemas.token import ApiToken, parse_token

log = logging.getLogger(__name__)

AnyRequest = Request[Any, Any, Any]
NextPath = Annotated[str, QueryParameter(name="next", max_length=2000)]
LinkToken = Annotated[str, QueryParameter(max_length=200)]
USED = AuthFailure("unknown", "this sign-in link is unknown, was used already or was revoked")


def safe_next(path: str | None) -> str:
    """Only a path on this site: never `//evil.example` or an absolute URL."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")):
        return "/"
    return path


def session_cookie(ctx: GatewayContext, request: AnyRequest, record: ApiToken) -> Cookie:
    secure = ctx.options.secure_cookies
    return Cookie(
        key=SESSION_COOKIE,
        value=ctx.sessions.issue(record),
        path="/",
        max_age=int(ctx.options.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" if secure is None else secure,
    )


def _signed_in(
    ctx: GatewayContext, request: AnyRequest, record: ApiToken, how: str, next_path: str
) -> Response[Any]:
    who = Principal(record.id, record.role, record.name, "session")
    ctx.record(
        entry_for(
            request, AuditAction.SIGN_IN, AuditOutcome.OK,
            target=record.id, status=303, detail=how, principal=who,
        )
    )  # fmt: skip
    response: Response[Any] = Redirect(safe_next(next_path), status_code=303)
    response.set_cookie(session_cookie(ctx, request, record))
    return response


def _login_page(error: str = "", next_path: str = "/", status: int = 200) -> Template:
    context = {"error": error, "next": safe_next(next_path)}
    return Template("login.html", context=context, status_code=status)


async def consume_link(ctx: GatewayContext, text: str) -> ApiToken | AuthFailure:
    """The token a sign-in link signs in as, once; or why not."""
    parsed = parse_token(text)
    if parsed is None:
        return AuthFailure("malformed", "not a sign-in link")
    tokens = ctx.tokens
    if tokens is None:
        return AuthFailure("unavailable", "tokens cannot be checked: not connected to NATS")
    link = await known(tokens, parsed[0])
    if link is None or not link.matches(text) or link.used_at is not None:
        return USED
    if link.signs_in_as is None:
        return AuthFailure("malformed", f"token {link.id} is an API token, not a sign-in link")
    if link.expired():
        return AuthFailure("expired", f"this sign-in link expired at {link.expires_at}")
    if not await _use_once(tokens, link):
        return USED  # another request (or gateway) used it first
    target = await known(tokens, link.signs_in_as)
    if target is None or target.expired():
        return AuthFailure(
            "unknown", f"the token the link signs in as ({link.signs_in_as}) is gone"
        )
    return target


async def _use_once(tokens: Bucket[ApiToken], link: ApiToken) -> bool:
    def use(current: ApiToken) -> ApiToken | None:
        if current.used_at is not None:
            return None
        current.used_at = utcnow()
        return current

    if await tokens.update(link.id, use) is None:
        return False
    try:
        await tokens.delete(link.id)
    except BusError as exc:
        log.warning("a used sign-in link (%s) stays in the bucket: %r", link.id, exc)
    return True


class LoginController(Controller):
    path = "/"
    include_in_schema = False

    @get("/login", opt=PUBLIC)
    async def login_page(self, next_path: NextPath = "/") -> Template:
        return _login_page(next_path=next_path)

    @post("/login", status_code=303, opt=PUBLIC)
    async def login(self, ctx: Ctx, request: AnyRequest) -> Response[Any]:
        form = await request.form()
        text, next_path = str(form.get("token", "")).strip(), str(form.get("next", "/"))
        found = await check_token(ctx.tokens, text, via="session", read=True)
        if isinstance(found, AuthFailure):
            if found.kind == "unavailable":
                raise refuse(ctx, request, found)
            audit_failure(ctx, request, found)
            return _login_page(found.detail, next_path, status=401)
        record = await known(ctx.tokens, found.token_id) if ctx.tokens else None
        if record is None:
            return _login_page("the token was revoked just now", next_path, status=401)
        return _signed_in(ctx, request, record, "token", next_path)

    @get("/login/link", opt=PUBLIC)
    async def link(self, ctx: Ctx, request: AnyRequest, token: LinkToken = "") -> Response[Any]:
        found = await consume_link(ctx, token.strip())
        if isinstance(found, AuthFailure):
            if found.kind == "unavailable":
                raise refuse(ctx, request, found)
            audit_failure(ctx, request, found)
            return _login_page(found.detail, status=401)
        return _signed_in(ctx, request, found, "sign-in link", "/")

    @post("/logout", status_code=303, opt=PUBLIC)
    async def logout(self) -> Response[Any]:
        response: Response[Any] = Redirect("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

"""Rate limits: Litestar's `RateLimitMiddleware`, per token and per client address.

Two instances run after the authentication middleware: one counts requests that carry a
valid token (keyed by the token's id, wherever they come from), the other the requests
that do not (keyed by the client's address: the sign-in page, failed attempts), so
guessing tokens is limited before anything is checked twice. A request over its limit
gets a 429 problem with `Retry-After` (seconds until the window resets) and the
`RateLimit-*` headers, and an audit entry (a flood is folded into one per second).

Litestar keeps each key's history as a list of timestamps in its store and re-encodes
it on every request; at thousands per minute that is 0.2-0.3 ms a request. Only the
list's length is ever used, so it is stored as a count instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import (
    DURATION_VALUES,
    CacheObject,
    RateLimitConfig,
    RateLimitMiddleware,
)
from litestar.stores.base import Store
from litestar.types import Receive, Scope, Send

from gateway.audit import entry_for
from gateway.auth import Principal
from gateway.context import GatewayContext, RateLimit
from gateway.problems import ApiProblem
from schemas.audit import AuditAction, AuditOutcome

# Probes and the stylesheet are never limited.
UNLIMITED = ["^/health$", "^/ready$", "^/api/v1/health$", "^/api/v1/ready$", "^/static/"]


def _token_key(request: Request[Any, Any, Any]) -> str:
    user = request.scope.get("user")
    return f"token:{user.token_id}" if isinstance(user, Principal) else "token:?"


def _address_key(request: Request[Any, Any, Any]) -> str:
    return f"addr:{request.client.host if request.client else '?'}"


def _has_token(request: Request[Any, Any, Any]) -> bool:
    return isinstance(request.scope.get("user"), Principal)


def _has_none(request: Request[Any, Any, Any]) -> bool:
    return not _has_token(request)


@dataclass
class OmoiRateLimitConfig(RateLimitConfig):
    ctx: GatewayContext | None = None
    what: str = "token"


class OmoiRateLimit(RateLimitMiddleware):
    config: OmoiRateLimitConfig

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as exc:
            raise self._refusal(scope, dict(exc.headers or {})) from None

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> ApiProblem:
        request: Request[Any, Any, Any] = scope["litestar_app"].request_class(scope)
        wait = max(int(headers.get(self.config.rate_limit_reset_header_key, "1")), 1)
        unit = self.unit
        detail = (
            f"more than {self.max_requests} requests per {unit} for this {self.config.what}; "
            f"retry in {wait} s"
        )
        ctx = self.config.ctx
        if ctx is not None:
            entry = entry_for(
                request,
                AuditAction.RATE_LIMITED,
                AuditOutcome.DENIED,
                target=f"{request.method} {request.url.path}",
                status=429,
                detail=detail,
            )
            ctx.record(entry, fold=True)
        return ApiProblem(
            429, "rate-limited", detail, headers={**headers, "Retry-After": str(wait)}
        )

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        now = int(time.time())
        raw = await store.get(key)
        if raw:
            count, _, reset = raw.partition(b":")
            if int(reset) > now:
                return CacheObject(history=[0] * int(count), reset=int(reset))
        return CacheObject(history=[], reset=now + DURATION_VALUES[self.unit])

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        cache_object.history.append(0)
        ttl = max(math.ceil(cache_object.reset - time.time()), 1)
        value = f"{len(cache_object.history)}:{cache_object.reset}"
        await store.set(key, value, expires_in=ttl)


def rate_limits(ctx: GatewayContext) -> list[DefineMiddleware]:
    """The middleware for `ctx.options`' limits (none for a limit set to None)."""
    out = []
    for limit, key, applies, what in (
        (ctx.options.token_rate_limit, _token_key, _has_token, "token"),
        (ctx.options.address_rate_limit, _address_key, _has_none, "address"),
    ):
        if limit is None:
            continue
        config = _config(ctx, limit, key, applies, what)
        out.append(config.middleware)
    return out


def _config(ctx: GatewayContext, limit: RateLimit, key: Any, applies: Any, what: str) -> Any:
    return OmoiRateLimitConfig(
        rate_limit=limit,
        exclude=UNLIMITED,
        identifier_for_request=key,
        check_throttle_handler=applies,
        middleware_class=OmoiRateLimit,
        # One store per limit: a token's key and an address's never meet anyway.
        store=f"rate_limit_{what}",
        ctx=ctx,
        what=what,
    )

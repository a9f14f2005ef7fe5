"""Rate limits: Litestar's `RateLimitMiddleware`, per token and per client address.

Two instances run after the authentication middleware: one counts requests that carry a
valid token (keyed by the token's id, wherever they come from), the other the requests
that do not (keyed by the client's address: the sign-in page, failed attempts), so
guessing tokens is limited before anything is checked twice. A request over its limit
gets a 429 problem with `Retry-After` (seconds until the window resets) and the
`RateLimit-*` headers, and an audit entry (a flood is folded into one per second).

Litestar's middleware is configured as usual (`RateLimitConfig`: the limit, exclusions,
header names), but counts differently: stock, it builds a Request, takes three locks and
reads and writes its store (with every timestamp of the window) on each request, 55 to
160 us of CPU, a sixth of a core at 1,000 requests/s. Here the count of each key's fixed
window lives in a dict shared by the instances of one limit (Litestar makes one per
route), which costs a few microseconds. Each gateway process counts on its own, as with
Litestar's default memory store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import (
    DURATION_VALUES,
    CacheObject,
    RateLimitConfig,
    RateLimitMiddleware,
)
from litestar.types import Receive, Scope, Send

from gateway.audit import entry_for
from gateway.auth import Principal
from gateway.context import GatewayContext, RateLimit
from gateway.problems import ApiProblem
from schemas.audit import AuditAction, AuditOutcome

# Probes and the stylesheet are never limited.
UNLIMITED = ["^/health$", "^/ready$", "^/api/v1/health$", "^/api/v1/ready$", "^/static/"]
# Windows of keys gone quiet are dropped once there are this many.
MAX_KEYS = 10_000

Key = Callable[[Scope], str | None]


def token_key(scope: Scope) -> str | None:
    user = scope.get("user")
    return f"token:{user.token_id}" if isinstance(user, Principal) else None


def address_key(scope: Scope) -> str | None:
    if isinstance(scope.get("user"), Principal):
        return None
    client = scope.get("client")
    return f"addr:{client[0] if client else '?'}"


@dataclass
class OmoiRateLimitConfig(RateLimitConfig):
    ctx: GatewayContext | None = None
    what: str = "token"
    # Which requests this limit counts, under what key (None: not counted here).
    key: Key = token_key
    # key -> [requests so far, when the window resets (unix s)]
    windows: dict[str, list[int]] = field(default_factory=dict)


class OmoiRateLimit(RateLimitMiddleware):
    config: OmoiRateLimitConfig

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.config.key(scope)
        if key is not None:
            now = int(time.time())
            windows = self.config.windows
            window = windows.get(key)
            if window is None or window[1] <= now:
                if len(windows) >= MAX_KEYS:
                    for gone in [k for k, w in windows.items() if w[1] <= now]:
                        del windows[gone]
                window = windows[key] = [0, now + DURATION_VALUES[self.unit]]
            if window[0] >= self.max_requests:
                raise self._refusal(scope, window, now)
            window[0] += 1
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, window: list[int], now: int) -> ApiProblem:
        wait = max(window[1] - now, 1)
        headers = self.create_response_headers(
            CacheObject(history=[0] * window[0], reset=window[1])
        )
        detail = (
            f"more than {self.max_requests} requests per {self.unit} for this "
            f"{self.config.what}; retry in {wait} s"
        )
        ctx = self.config.ctx
        if ctx is not None:
            request: Request[Any, Any, Any] = scope["litestar_app"].request_class(scope)
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


def rate_limits(ctx: GatewayContext) -> list[DefineMiddleware]:
    """The middleware for `ctx.options`' limits (none for a limit set to None)."""
    out = []
    for limit, key, what in (
        (ctx.options.token_rate_limit, token_key, "token"),
        (ctx.options.address_rate_limit, address_key, "address"),
    ):
        if limit is not None:
            out.append(_config(ctx, limit, key, what).middleware)
    return out


def _config(ctx: GatewayContext, limit: RateLimit, key: Key, what: str) -> OmoiRateLimitConfig:
    return OmoiRateLimitConfig(
        rate_limit=limit,
        exclude=UNLIMITED,
        middleware_class=OmoiRateLimit,
        # The RateLimit-* headers go with the 429 only: on every answer they cost more
        # than the counting.
        set_rate_limit_headers=False,
        ctx=ctx,
        what=what,
        key=key,
    )

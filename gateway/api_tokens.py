"""`/api/v1/tokens`: API tokens, for admins (the CLI's `omoi token` does the same over NATS).

A token is shown once, in the answer that creates it; afterwards only its id, role and
name are. Revoking deletes its key, so it stops working (and its sessions end) as soon
as each gateway's copy of `omoi_tokens` has seen the delete, within moments.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, PathParameter
from pydantic import BaseModel, ConfigDict, Field

from bus.mirror import MirroredBucket
from gateway.api_tickets import BEARER, problems
from gateway.audit import Audited, principal_of, refusals_audited
from gateway.context import Ctx, GatewayContext
from gateway.problems import ApiProblem
from schemas.audit import AuditAction
from schemas.token import MAX_NAME, TOKEN_ID_PATTERN, ApiToken, Role, mint

ADMIN = {"role": Role.ADMIN}
TokenId = Annotated[str, PathParameter(pattern=TOKEN_ID_PATTERN, description="a token id")]
MAX_TTL_S = 10 * 365 * 24 * 3600


class TokenView(BaseModel):
    """A token as it is listed: never its secret, nor its hash."""

    id: str
    role: Role
    name: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None

    @classmethod
    def of(cls, record: ApiToken) -> TokenView:
        return cls.model_validate(record.model_dump(include=set(cls.model_fields)))


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str = Field(default="", max_length=MAX_NAME)
    ttl_s: float | None = Field(default=None, gt=0, le=MAX_TTL_S, description="expires after")


class CreatedToken(TokenView):
    token: str = Field(description="the token itself; shown this once")


def _tokens(ctx: GatewayContext) -> MirroredBucket[ApiToken]:
    if ctx.tokens is None:
        raise ApiProblem(503, "nats-unavailable", "not connected to NATS (yet)")
    return ctx.tokens


class TokenController(Controller):
    path = "/tokens"
    tags = ("tokens",)
    security = BEARER

    @get("/", summary="Every API token (sign-in links left out)", opt=ADMIN, responses=problems())
    async def list_tokens(self, ctx: Ctx) -> list[TokenView]:
        records = await _tokens(ctx).values()
        found = [TokenView.of(r) for r in records if r.signs_in_as is None]
        return sorted(found, key=lambda t: (t.created_at, t.id))

    @post(
        "/",
        status_code=201,
        summary="Make a token",
        opt=ADMIN,
        exception_handlers=refusals_audited(AuditAction.TOKEN_CREATE),
        responses=problems(),
    )
    async def create(
        self, ctx: Ctx, request: Request[Any, Any, Any], data: JSONBody[NewToken]
    ) -> CreatedToken:
        who = principal_of(request)
        by = who.actor if who else ""
        text, record = mint(data.role, data.name, created_by=by, ttl_s=data.ttl_s)
        async with Audited(ctx, request, AuditAction.TOKEN_CREATE, target=record.id) as audit:
            audit.status, audit.detail = 201, f"role {record.role}, name {record.name!r}"
            await _tokens(ctx).create(record.id, record)
        return CreatedToken(token=text, **TokenView.of(record).model_dump())

    @delete(
        "/{token_id:str}",
        status_code=204,
        summary="Revoke a token",
        opt=ADMIN,
        responses=problems(404),
    )
    async def revoke(self, ctx: Ctx, request: Request[Any, Any, Any], token_id: TokenId) -> None:
        tokens = _tokens(ctx)
        async with Audited(ctx, request, AuditAction.TOKEN_REVOKE, target=token_id) as audit:
            audit.status = 204
            if await tokens.value(token_id) is None:
                raise ApiProblem(404, "not-found", f"no token {token_id!r}")
            await tokens.delete(token_id)

"""`POST /api/v1/webhooks/github` and `/jira`: providers' webhook deliveries, verified,
then acted on.

No bearer token: the provider signs each delivery with the shared secret
(`OMOI_GITHUB_WEBHOOK_SECRET` in `X-Hub-Signature-256`, `OMOI_JIRA_WEBHOOK_SECRET` in
`X-Hub-Signature`), and that signature is the credential. A wrong or missing one is a
401, a signed body that is not the event it says a 400 (with a dead letter of the body);
both are audited, and neither reaches the planner. What a good delivery asks for
(`gateway.github_hooks.decide`, `gateway.jira_hooks.decide`) goes to the planner as a
trusted submission or a command: the signature says it is the configured provider's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Controller, Request, post
from pydantic import BaseModel, SecretStr

from gateway import jira_hooks, submit
from gateway.api_tickets import PUBLIC, problems
from gateway.audit import entry_for
from gateway.context import Ctx, GatewayContext
from gateway.github_hooks import (
    Command,
    Decision,
    HookConfig,
    Ignore,
    MalformedDelivery,
    decide,
    signed,
)
from gateway.jira_hooks import JiraConfig
from gateway.problems import ApiProblem
from schemas.audit import AuditAction, AuditOutcome

log = logging.getLogger(__name__)

MAX_BODY = 5 * 1024 * 1024  # GitHub caps a delivery's payload at 25 MB; ours are far smaller


class WebhookResult(BaseModel):
    ok: bool = True
    outcome: Literal["ticket", "command", "ignored", "duplicate"]
    ticket_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Hook:
    """One provider's deliveries: its secret, where it signs and names them, what they mean."""

    provider: str
    secret: SecretStr | None
    signature: str  # the header with `sha256=<hmac>`
    delivery: str  # the header naming the delivery, kept across the provider's retries
    decide: Callable[[str, bytes], Decision]
    event: str | None = None  # the header naming the event (GitHub's); None: in the body


class WebhookController(Controller):
    path = "/webhooks"
    tags = ("webhooks",)

    @post(
        "/github",
        status_code=202,
        summary="A GitHub webhook delivery",
        description="Signed with the shared secret (`X-Hub-Signature-256`). An issue given "
        "the configured label becomes a ticket; a closed `omoi/<ticket>` pull request ends "
        "its ticket; a review asking for changes becomes a follow-up task.",
        opt=PUBLIC,
        security=[],
        request_max_body_size=MAX_BODY,
        responses=problems(401, 404, 409, auth=False),
    )
    async def github(self, ctx: Ctx, request: Request[Any, Any, Any]) -> WebhookResult:
        s = ctx.settings
        config = HookConfig(label=s.github_label, clone_url=s.github_clone_url,
                            workflow=s.github_workflow)  # fmt: skip
        hook = Hook(
            "github", s.github_webhook_secret, "x-hub-signature-256", "x-github-delivery",
            lambda event, raw: decide(event, raw, config), event="x-github-event",
        )  # fmt: skip
        return await _receive(ctx, request, hook)

    @post(
        "/jira",
        status_code=202,
        summary="A Jira webhook delivery",
        description="An admin webhook signed with the shared secret (`X-Hub-Signature`). "
        "An issue moved to the configured status becomes a ticket.",
        opt=PUBLIC,
        security=[],
        request_max_body_size=MAX_BODY,
        responses=problems(401, 404, 409, auth=False),
    )
    async def jira(self, ctx: Ctx, request: Request[Any, Any, Any]) -> WebhookResult:
        s = ctx.settings
        config = JiraConfig(status=s.jira_status, repository=s.jira_repository,
                            workflow=s.jira_workflow, site=s.jira_url)  # fmt: skip
        hook = Hook(
            "jira", s.jira_webhook_secret, "x-hub-signature", "x-atlassian-webhook-identifier",
            lambda _event, raw: jira_hooks.decide(raw, config),
        )  # fmt: skip
        return await _receive(ctx, request, hook)


async def _receive(
    ctx: GatewayContext, request: Request[Any, Any, Any], hook: Hook
) -> WebhookResult:
    raw = await request.body()
    # Empty is unset too (compose passes `${VAR:-}`): no body is signed with nothing.
    if hook.secret is None or not hook.secret.get_secret_value():
        raise ApiProblem(404, "not-found", f"{hook.provider} webhooks are not configured here")
    delivery = f"{hook.provider}:" + request.headers.get(hook.delivery, "")[:100]
    event = request.headers.get(hook.event, "")[:100] if hook.event else hook.provider
    if not signed(hook.secret.get_secret_value(), raw, request.headers.get(hook.signature)):
        _audit(ctx, request, AuditOutcome.DENIED, 401, delivery, "bad or missing signature")
        raise ApiProblem(401, "unauthorized", f"the delivery's {hook.signature} is wrong")
    if delivery.endswith(":") or not event:
        raise await _malformed(ctx, request, raw, delivery, f"no {hook.delivery} or event header")
    if not ctx.webhooks.first(delivery):
        _audit(ctx, request, AuditOutcome.OK, 200, delivery, f"{event}: a redelivery")
        return WebhookResult(outcome="duplicate", detail="this delivery was taken before")
    try:
        return await _act(ctx, request, hook, event, delivery, raw)
    except BaseException:
        ctx.webhooks.forget(delivery)  # not handed on: the provider's redelivery may be
        raise


async def _act(
    ctx: GatewayContext, request: Request[Any, Any, Any], hook: Hook, event: str,
    delivery: str, raw: bytes,
) -> WebhookResult:  # fmt: skip
    try:
        decision = hook.decide(event, raw)
    except MalformedDelivery as exc:
        raise await _malformed(ctx, request, raw, delivery, f"{event}: {exc}") from None
    timeout = ctx.options.request_timeout_s
    if isinstance(decision, Ignore):
        _audit(ctx, request, AuditOutcome.OK, 202, delivery, f"{event}: {decision.reason}")
        return WebhookResult(outcome="ignored", detail=decision.reason)
    try:
        if isinstance(decision, Command):
            answer = await submit.command(ctx.bus, decision.subject, decision.update, timeout)
            result = WebhookResult(
                outcome="command", ticket_id=answer.ticket_id, detail=decision.update.action
            )
        else:
            payload = decision.submission.model_dump_json(exclude_none=True).encode()
            accepted = await submit.submit(
                ctx.bus, decision.ticket_id, payload, timeout, trusted=True
            )
            result = WebhookResult(
                outcome="ticket", ticket_id=accepted.ticket_id, detail=accepted.status
            )
    except ApiProblem as exc:
        _audit(ctx, request, AuditOutcome.REJECTED, exc.status_code, delivery, exc.detail)
        raise
    _audit(ctx, request, AuditOutcome.OK, 202, delivery, f"{event}: {result.outcome}")
    log.info("%s delivery %s (%s): %s %s", hook.provider, delivery, event, result.outcome,
             result.ticket_id)  # fmt: skip
    return result


def _audit(
    ctx: GatewayContext, request: Request[Any, Any, Any], outcome: AuditOutcome, status: int,
    delivery: str, detail: str,
) -> None:  # fmt: skip
    ctx.record(
        entry_for(
            request,
            AuditAction.WEBHOOK,
            outcome,
            target=delivery or "?",
            status=status,
            detail=detail,
        )
    )


async def _malformed(
    ctx: GatewayContext, request: Request[Any, Any, Any], raw: bytes, delivery: str, why: str
) -> ApiProblem:
    """The refusal of a signed delivery Omoi cannot read: audited, its body kept as a dead
    letter."""
    _audit(ctx, request, AuditOutcome.REJECTED, 400, delivery, why)
    try:
        await ctx.bus.dead_letter("webhooks", raw, why, "malformed_webhook")
    except Exception as exc:  # noqa: BLE001 - the refusal stands without its copy
        log.warning("dead letter of GitHub delivery %s not stored: %r", delivery, exc)
    return ApiProblem(400, "malformed-webhook", why)

"""`POST /api/v1/webhooks/github`: GitHub's webhook deliveries, verified, then acted on.

No bearer token: GitHub signs each delivery with the shared secret
(`OMOI_GITHUB_WEBHOOK_SECRET`, `X-Hub-Signature-256`), and that signature is the
credential. A wrong or missing one is a 401, a signed body that is not the event it says
a 400 (with a dead letter of the body); both are audited, and neither reaches the planner.
What a good delivery asks for (`gateway.github_hooks.decide`) goes to the planner as a
trusted submission or a command: the signature says it is the configured GitHub's.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from litestar import Controller, Request, post
from pydantic import BaseModel

from gateway import submit
from gateway.api_tickets import PUBLIC, problems
from gateway.audit import entry_for
from gateway.context import Ctx, GatewayContext
from gateway.github_hooks import Command, HookConfig, Ignore, MalformedDelivery, decide, signed
from gateway.problems import ApiProblem
from schemas.audit import AuditAction, AuditOutcome

log = logging.getLogger(__name__)

MAX_BODY = 5 * 1024 * 1024  # GitHub caps a delivery's payload at 25 MB; ours are far smaller


class WebhookResult(BaseModel):
    ok: bool = True
    outcome: Literal["ticket", "command", "ignored", "duplicate"]
    ticket_id: str | None = None
    detail: str = ""


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
        raw = await request.body()
        secret = ctx.settings.github_webhook_secret
        # Empty is unset too (compose passes `${VAR:-}`): no body is signed with nothing.
        if secret is None or not secret.get_secret_value():
            raise ApiProblem(404, "not-found", "GitHub webhooks are not configured here")
        delivery = request.headers.get("x-github-delivery", "")[:100]
        event = request.headers.get("x-github-event", "")[:100]
        if not signed(secret.get_secret_value(), raw, request.headers.get("x-hub-signature-256")):
            _audit(ctx, request, AuditOutcome.DENIED, 401, delivery, "bad or missing signature")
            raise ApiProblem(401, "unauthorized", "the delivery's X-Hub-Signature-256 is wrong")
        if not delivery or not event:
            await _malformed(ctx, request, raw, delivery, "no X-GitHub-Delivery or X-GitHub-Event")
        if not ctx.webhooks.first(delivery):
            _audit(ctx, request, AuditOutcome.OK, 200, delivery, f"{event}: a redelivery")
            return WebhookResult(outcome="duplicate", detail="this delivery was taken before")
        try:
            return await self._act(ctx, request, event, delivery, raw)
        except BaseException:
            ctx.webhooks.forget(delivery)  # not handed on: GitHub's redelivery may be
            raise

    async def _act(
        self, ctx: GatewayContext, request: Request[Any, Any, Any], event: str, delivery: str,
        raw: bytes,
    ) -> WebhookResult:  # fmt: skip
        config = HookConfig(
            label=ctx.settings.github_label,
            clone_url=ctx.settings.github_clone_url,
            workflow=ctx.settings.github_workflow,
        )
        try:
            decision = decide(event, raw, config)
        except MalformedDelivery as exc:
            await _malformed(ctx, request, raw, delivery, f"{event}: {exc}")
            raise AssertionError("unreachable") from None
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
        log.info(
            "GitHub delivery %s (%s): %s %s", delivery, event, result.outcome, result.ticket_id
        )
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
            target=f"github:{delivery or '?'}",
            status=status,
            detail=detail,
        )
    )


async def _malformed(
    ctx: GatewayContext, request: Request[Any, Any, Any], raw: bytes, delivery: str, why: str
) -> None:
    """Refuse a signed delivery Omoi cannot read: audited, its body kept as a dead letter."""
    _audit(ctx, request, AuditOutcome.REJECTED, 400, delivery, why)
    try:
        await ctx.bus.dead_letter("webhooks", raw, why, "malformed_webhook")
    except Exception as exc:  # noqa: BLE001 - the refusal stands without its copy
        log.warning("dead letter of GitHub delivery %s not stored: %r", delivery, exc)
    raise ApiProblem(400, "malformed-webhook", why)

"""The dashboard: server-rendered pages, plus the fragments its script swaps in live.

Pages render the KV state and remember where the event stream stood at that moment
(`since`), so the browser's EventSource continues from exactly there: nothing between the
render and the subscription is missed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from litestar import Controller, Request, get, post
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig

from bus import constants as c
from bus import streams
from bus.locks import ticket_locks
from gateway import reads, submit, views
from gateway.alerts_panel import firing_alerts, recent_interventions
from gateway.api_tickets import TicketId, problems
from gateway.audit import Audited
from gateway.charts import charts as draw_charts
from gateway.context import Ctx, GatewayContext
from gateway.models import MAX_REASON
from gateway.problems import ApiProblem
from gateway.ticket_logs import ticket_logs
from gateway.ticket_trace import ticket_trace, waterfall_svg
from schemas import CancelTicket, EventType, TicketState
from schemas.audit import AuditAction
from schemas.token import Role

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
# Every failure event: omoi.events.<ticket>.{task,gate,ticket}.failed.
FAILURES_SUBJECT = c.event_subject("*", "*.failed")


def template_config() -> TemplateConfig[Any]:
    def register(engine: JinjaTemplateEngine) -> None:
        engine.engine.filters.update(age=views.age, seconds=views.seconds)
        engine.engine.globals.update(
            event_types=[t.value for t in EventType],
            task_event_status={k.value: v.value for k, v in views.TASK_EVENT_STATUS.items()},
            phase_steps=views.phase_steps,
            task_duration=views.task_duration,
        )

    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=register)


async def _ticket(ctx: GatewayContext, ticket_id: str) -> TicketState:
    ticket = await ctx.bus.tickets.value(ticket_id)
    if ticket is None:
        raise ApiProblem(404, "not-found", f"no ticket {ticket_id!r}")
    return ticket


async def _failures(ctx: GatewayContext) -> dict[str, Any]:
    opts = ctx.options
    failed, dead = await asyncio.gather(
        streams.tail(
            ctx.bus,
            c.EVENTS_STREAM,
            FAILURES_SUBJECT,
            limit=opts.recent_failures,
            window=opts.failure_window,
        ),
        streams.tail(
            ctx.bus,
            c.DLQ_STREAM,
            c.DLQ_SUBJECTS,
            limit=opts.recent_dead_letters,
            window=opts.recent_dead_letters,
        ),
    )
    return {
        "failures": [f for e in failed if (f := views.failure(e)) is not None],
        "dead_letters": [reads.dead_letter(e) for e in dead],
    }


async def _detail(ctx: GatewayContext, ticket_id: str) -> dict[str, Any]:
    ticket = await _ticket(ctx, ticket_id)
    tasks = await reads.ticket_tasks(ctx.bus, ticket)
    locks = await ticket_locks(ctx.bus, ticket_id)
    return {
        "ticket": ticket,
        "columns": views.task_columns(tasks),
        "branches": views.branches(tasks),
        "locks": locks,
    }


# Fragments are fetched by the page's script: without a session they answer 401 (the
# script then goes to the sign-in page) instead of redirecting to a page it cannot use.
FRAGMENT = {"fragment": True}


class DashboardController(Controller):
    path = "/"
    tags = ("dashboard",)
    security = ({"session": []}, {"bearer": []})

    @get("/", summary="The dashboard", responses=problems())
    async def index(self, ctx: Ctx) -> Template:
        since = await streams.last_seq(ctx.bus, c.EVENTS_STREAM)
        found, agents, failures, drawn, alerts, interventions = await asyncio.gather(
            reads.tickets(ctx.bus, ctx.index, limit=ctx.options.dashboard_tickets),
            reads.agents(ctx.bus, ctx.options.stale_beats),
            _failures(ctx),
            draw_charts(ctx.reader),
            firing_alerts(ctx.reader),
            recent_interventions(ctx.reader),
        )
        return Template(
            "index.html",
            context={
                "since": since,
                "tickets": found[0],
                "total": found[1],
                "agents": agents,
                "charts": drawn,
                "alerts": alerts,
                "interventions": interventions,
                **failures,
            },
        )

    @get("/tickets/{ticket_id:str}", summary="One ticket's task graph", responses=problems(404))
    async def ticket_page(self, ctx: Ctx, ticket_id: TicketId) -> Template:
        since = await streams.last_seq(ctx.bus, c.EVENTS_STREAM)
        detail, logs, spans = await asyncio.gather(
            _detail(ctx, ticket_id),
            ticket_logs(ctx.reader, ticket_id, ctx.options.ticket_log_lines),
            ticket_trace(ctx.reader, ticket_id, ctx.options.ticket_trace_spans),
        )
        trace = waterfall_svg(spans, title=f"trace of {ticket_id}") if spans else None
        context = {"since": since, "logs": logs, "trace": trace, "spans": len(spans), **detail}
        return Template("ticket.html", context=context)

    @get(
        "/fragments/tickets/{ticket_id:str}/row",
        summary="A ticket's row (HTML)",
        responses=problems(404),
        opt=FRAGMENT,
    )
    async def ticket_row(self, ctx: Ctx, ticket_id: TicketId) -> Template:
        return Template("_ticket_row.html", context={"t": await _ticket(ctx, ticket_id)})

    @get(
        "/fragments/tickets/{ticket_id:str}/detail",
        summary="A ticket's task graph (HTML)",
        responses=problems(404),
        opt=FRAGMENT,
    )
    async def ticket_detail(self, ctx: Ctx, ticket_id: TicketId) -> Template:
        return Template("_ticket_detail.html", context=await _detail(ctx, ticket_id))

    @get(
        "/fragments/agents",
        summary="The agents table (HTML)",
        opt=FRAGMENT,
        responses=problems(),
    )
    async def agents(self, ctx: Ctx) -> Template:
        found = await reads.agents(ctx.bus, ctx.options.stale_beats)
        return Template("_agents.html", context={"agents": found})

    @get(
        "/fragments/failures",
        summary="Recent failures and dead letters (HTML)",
        opt=FRAGMENT,
        responses=problems(),
    )
    async def failures(self, ctx: Ctx) -> Template:
        return Template("_failures.html", context=await _failures(ctx))

    @get(
        "/fragments/charts",
        summary="The store's charts (HTML)",
        opt=FRAGMENT,
        responses=problems(),
    )
    async def charts(self, ctx: Ctx) -> Template:
        return Template("_charts.html", context={"charts": await draw_charts(ctx.reader)})

    @post(
        "/tickets/{ticket_id:str}/cancel",
        include_in_schema=False,
        opt={"role": Role.OPERATOR, **FRAGMENT},
    )
    async def cancel_ticket(
        self, ctx: Ctx, request: Request[Any, Any, Any], ticket_id: TicketId
    ) -> Redirect:
        """The ticket page's Cancel button (a form, so CSRF-protected)."""
        form = await request.form()
        reason = str(form.get("reason") or "cancelled from the dashboard")[:MAX_REASON]
        cmd = CancelTicket(ticket_id=ticket_id, reason=reason)
        async with Audited(ctx, request, AuditAction.TICKET_CANCEL, target=ticket_id):
            await submit.command(ctx.bus, c.CMD_TICKET_CANCEL, cmd, ctx.options.request_timeout_s)
        return Redirect(f"/tickets/{ticket_id}", status_code=303)

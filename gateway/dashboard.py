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

from litestar import Controller, get
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from bus import constants as c
from bus import streams
from gateway import reads, views
from gateway.api_tickets import TicketId, problems
from gateway.charts import charts as draw_charts
from gateway.context import Ctx, GatewayContext
from gateway.problems import ApiProblem
from schemas import EventType, TicketState

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
    return {"ticket": ticket, "columns": views.task_columns(tasks)}


class DashboardController(Controller):
    path = "/"
    tags = ("dashboard",)

    @get("/", summary="The dashboard")
    async def index(self, ctx: Ctx) -> Template:
        since = await streams.last_seq(ctx.bus, c.EVENTS_STREAM)
        found, agents, failures, drawn = await asyncio.gather(
            reads.tickets(ctx.bus),
            reads.agents(ctx.bus, ctx.options.stale_beats),
            _failures(ctx),
            draw_charts(ctx.reader),
        )
        return Template(
            "index.html",
            context={
                "since": since,
                "tickets": found[: ctx.options.dashboard_tickets],
                "total": len(found),
                "agents": agents,
                "charts": drawn,
                **failures,
            },
        )

    @get("/tickets/{ticket_id:str}", summary="One ticket's task graph", responses=problems(404))
    async def ticket_page(self, ctx: Ctx, ticket_id: TicketId) -> Template:
        since = await streams.last_seq(ctx.bus, c.EVENTS_STREAM)
        return Template("ticket.html", context={"since": since, **await _detail(ctx, ticket_id)})

    @get(
        "/fragments/tickets/{ticket_id:str}/row",
        summary="A ticket's row (HTML)",
        responses=problems(404),
    )
    async def ticket_row(self, ctx: Ctx, ticket_id: TicketId) -> Template:
        return Template("_ticket_row.html", context={"t": await _ticket(ctx, ticket_id)})

    @get(
        "/fragments/tickets/{ticket_id:str}/detail",
        summary="A ticket's task graph (HTML)",
        responses=problems(404),
    )
    async def ticket_detail(self, ctx: Ctx, ticket_id: TicketId) -> Template:
        return Template("_ticket_detail.html", context=await _detail(ctx, ticket_id))

    @get("/fragments/agents", summary="The agents table (HTML)")
    async def agents(self, ctx: Ctx) -> Template:
        found = await reads.agents(ctx.bus, ctx.options.stale_beats)
        return Template("_agents.html", context={"agents": found})

    @get("/fragments/failures", summary="Recent failures and dead letters (HTML)")
    async def failures(self, ctx: Ctx) -> Template:
        return Template("_failures.html", context=await _failures(ctx))

    @get("/fragments/charts", summary="The store's charts (HTML)")
    async def charts(self, ctx: Ctx) -> Template:
        return Template("_charts.html", context={"charts": await draw_charts(ctx.reader)})

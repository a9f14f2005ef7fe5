"""`/api/v1/tickets`: submit, list, inspect, and steer tickets and their tasks."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody, PathParameter, QueryParameter

from bus import constants as c
from gateway import reads, submit
from gateway.audit import Audited, principal_of, refusals_audited
from gateway.auth import trusted
from gateway.context import Ctx, GatewayContext
from gateway.models import (
    Accepted,
    CancelBody,
    CommandResult,
    DeliverBody,
    MoveBody,
    PriorityBody,
    TicketPage,
)
from gateway.problems import PROBLEM_MEDIA_TYPE, ApiProblem, Problem
from schemas import (
    CancelTask,
    CancelTicket,
    DeliverTicket,
    MoveTicket,
    Phase,
    SetPriority,
    TaskState,
    TicketState,
    TicketStatus,
    TicketSubmission,
    task_key,
)
from schemas.audit import AuditAction
from schemas.common import ID_PATTERN
from schemas.token import Role

log = logging.getLogger(__name__)

TicketId = Annotated[str, PathParameter(pattern=ID_PATTERN, description="a ticket id")]
TaskName = Annotated[str, PathParameter(pattern=ID_PATTERN, description="a task name")]
IDEMPOTENCY_HELP = (
    "Retrying with the same key never makes a second ticket: it becomes the ticket id when "
    "the body has none (a key that is not a valid id is replaced by a digest of it)."
)


# What any route behind a token may answer: no or a bad token, a role too low, too many
# requests, an oversized Authorization header.
AUTH_STATUSES = (401, 403, 429, 431)
BEARER: tuple[dict[str, list[str]], ...] = ({"bearer": []},)
# Open to anybody: the probes, the sign-in page.
PUBLIC = {"role": None}
SUBMITTER = {"role": Role.SUBMITTER}
OPERATOR = {"role": Role.OPERATOR}


def problems(*statuses: int, auth: bool = True) -> dict[int, ResponseSpec]:
    """OpenAPI for error responses. 400 (parameters), 422 (body) and 503 (NATS) can happen
    almost anywhere, and documenting them replaces Litestar's own, differently shaped, 400."""
    return {
        s: ResponseSpec(Problem, description="problem details", media_type=PROBLEM_MEDIA_TYPE)
        for s in sorted({400, 422, 503, *statuses, *(AUTH_STATUSES if auth else ())})
    }


async def _ticket(ctx: GatewayContext, ticket_id: str) -> TicketState:
    ticket = await ctx.bus.tickets.value(ticket_id)
    if ticket is None:
        raise ApiProblem(404, "not-found", f"no ticket {ticket_id!r}")
    return ticket


class TicketController(Controller):
    path = "/tickets"
    tags = ("tickets",)
    security = BEARER

    @post(
        "/",
        status_code=201,
        summary="Submit a ticket",
        description="The body is exactly what `omoi.tickets.submit` takes. " + IDEMPOTENCY_HELP,
        opt=SUBMITTER,
        exception_handlers=refusals_audited(AuditAction.TICKET_SUBMIT),
        responses={
            **problems(409, 413),
            202: ResponseSpec(
                Accepted, description="stored: no planner answered, a planner will process it"
            ),
        },
    )
    async def create(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        data: JSONBody[TicketSubmission],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(name="Idempotency-Key", description=IDEMPOTENCY_HELP, max_length=1000),
        ] = None,
    ) -> Response[Accepted]:
        # `data` is Litestar's parse, for the schema; the planner's parser on the raw bytes
        # is the one that counts, so the gateway accepts exactly what the bus accepts.
        raw = await request.body()
        async with Audited(ctx, request, AuditAction.TICKET_SUBMIT) as audit:
            ticket_id, payload = submit.prepare(raw, idempotency_key, ctx.settings.max_ticket_bytes)
            audit.target = ticket_id
            timeout = ctx.options.request_timeout_s
            # Operators' and admins' submissions may run commands; submitters' may not.
            rights = trusted(principal_of(request))
            accepted = await submit.submit(ctx.bus, ticket_id, payload, timeout, trusted=rights)
            audit.status = 201 if accepted.status == "accepted" else 202
            audit.detail = accepted.status
        return Response(
            accepted,
            status_code=201 if accepted.status == "accepted" else 202,
            headers={"Location": f"{request.url.path.rstrip('/')}/{accepted.ticket_id}"},
        )

    @get("/", summary="List tickets, newest first", responses=problems())
    async def list_tickets(
        self,
        ctx: Ctx,
        status: Annotated[TicketStatus | None, QueryParameter()] = None,
        phase: Annotated[Phase | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
    ) -> TicketPage:
        items, total = await reads.tickets(
            ctx.bus, ctx.index, status=status, phase=phase, limit=limit, offset=offset
        )
        return TicketPage(items=items, total=total, limit=limit, offset=offset)

    @get("/{ticket_id:str}", summary="One ticket", responses=problems(404))
    async def get_ticket(self, ctx: Ctx, ticket_id: TicketId) -> TicketState:
        return await _ticket(ctx, ticket_id)

    @get("/{ticket_id:str}/tasks", summary="A ticket's tasks", responses=problems(404))
    async def get_tasks(self, ctx: Ctx, ticket_id: TicketId) -> list[TaskState]:
        return await reads.ticket_tasks(ctx.bus, await _ticket(ctx, ticket_id))

    @get("/{ticket_id:str}/tasks/{name:str}", summary="One task", responses=problems(404))
    async def get_task(self, ctx: Ctx, ticket_id: TicketId, name: TaskName) -> TaskState:
        task = await ctx.bus.tasks.value(task_key(ticket_id, name))
        if task is None:
            raise ApiProblem(404, "not-found", f"no task {task_key(ticket_id, name)!r}")
        return task

    @post(
        "/{ticket_id:str}/cancel",
        status_code=200,
        summary="Cancel a ticket",
        opt=OPERATOR,
        exception_handlers=refusals_audited(AuditAction.TICKET_CANCEL),
        responses=problems(404, 409, 413),
    )
    async def cancel(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        ticket_id: TicketId,
        data: JSONBody[CancelBody | None] = None,
    ) -> CommandResult:
        body = data or CancelBody()
        cmd = CancelTicket(ticket_id=ticket_id, reason=body.reason)
        async with Audited(ctx, request, AuditAction.TICKET_CANCEL, target=ticket_id):
            return await submit.command(
                ctx.bus, c.CMD_TICKET_CANCEL, cmd, ctx.options.request_timeout_s
            )

    @post(
        "/{ticket_id:str}/move",
        status_code=200,
        summary="Move a ticket to another phase",
        description="Only the moves the README lists; anything else is a 409 naming them.",
        opt=OPERATOR,
        exception_handlers=refusals_audited(AuditAction.TICKET_MOVE),
        responses=problems(404, 409, 413),
    )
    async def move(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        ticket_id: TicketId,
        data: JSONBody[MoveBody],
    ) -> CommandResult:
        cmd = MoveTicket(ticket_id=ticket_id, phase=data.phase, reason=data.reason)
        async with Audited(ctx, request, AuditAction.TICKET_MOVE, target=ticket_id) as audit:
            audit.detail = f"to {data.phase}"
            return await submit.command(
                ctx.bus, c.CMD_TICKET_MOVE, cmd, ctx.options.request_timeout_s
            )

    @post(
        "/{ticket_id:str}/priority",
        status_code=200,
        summary="Set a ticket's priority",
        description="High and critical tickets' tasks are taken first; its queued tasks move.",
        opt=OPERATOR,
        exception_handlers=refusals_audited(AuditAction.TICKET_PRIORITY),
        responses=problems(404, 409, 413),
    )
    async def priority(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        ticket_id: TicketId,
        data: JSONBody[PriorityBody],
    ) -> CommandResult:
        cmd = SetPriority(ticket_id=ticket_id, priority=data.priority, reason=data.reason)
        async with Audited(ctx, request, AuditAction.TICKET_PRIORITY, target=ticket_id) as audit:
            audit.detail = f"to {data.priority}"
            return await submit.command(
                ctx.bus, c.CMD_TICKET_PRIORITY, cmd, ctx.options.request_timeout_s
            )

    @post(
        "/{ticket_id:str}/deliver",
        status_code=200,
        summary="Deliver a ticket again",
        description="After its push or pull request failed (`delivery.failed`): push its "
        "branch and open its pull request again.",
        opt=OPERATOR,
        exception_handlers=refusals_audited(AuditAction.TICKET_DELIVER),
        responses=problems(404, 409, 413),
    )
    async def deliver(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        ticket_id: TicketId,
        data: JSONBody[DeliverBody | None] = None,
    ) -> CommandResult:
        cmd = DeliverTicket(ticket_id=ticket_id, reason=(data or DeliverBody()).reason)
        async with Audited(ctx, request, AuditAction.TICKET_DELIVER, target=ticket_id):
            return await submit.command(
                ctx.bus, c.CMD_TICKET_DELIVER, cmd, ctx.options.request_timeout_s
            )

    @post(
        "/{ticket_id:str}/tasks/{name:str}/cancel",
        status_code=200,
        summary="Cancel one task",
        description="A running task is stopped within about a second.",
        opt=OPERATOR,
        exception_handlers=refusals_audited(AuditAction.TASK_CANCEL),
        responses=problems(404, 409, 413),
    )
    async def cancel_task(
        self,
        ctx: Ctx,
        request: Request[Any, Any, Any],
        ticket_id: TicketId,
        name: TaskName,
        data: JSONBody[CancelBody | None] = None,
    ) -> CommandResult:
        body = data or CancelBody()
        task_id = task_key(ticket_id, name)
        cmd = CancelTask(task_id=task_id, reason=body.reason)
        async with Audited(ctx, request, AuditAction.TASK_CANCEL, target=task_id):
            return await submit.command(
                ctx.bus, c.CMD_TASK_CANCEL, cmd, ctx.options.request_timeout_s
            )

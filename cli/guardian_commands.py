"""`omoi guardian list|approve|undo`: what the guardian did and proposes, and overriding it."""

from __future__ import annotations

import getpass
import socket
from typing import Annotated

import typer
from rich.table import Table

from bus import Bus, NoAnswer
from bus import constants as c
from cli.client import ClientError
from schemas.guardian import (
    Intervention,
    InterventionReply,
    InterventionRequest,
    InterventionStatus,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
guardian_app = typer.Typer(
    no_args_is_help=True, help="The guardian's interventions: list, approve, undo."
)


async def interventions(bus: Bus) -> list[Intervention]:
    book = await bus.bucket(c.INTERVENTIONS_BUCKET, Intervention)
    return sorted(await book.values(), key=lambda iv: iv.created_at)


async def ask(bus: Bus, subject: str, request: InterventionRequest) -> InterventionReply:
    try:
        raw = await bus.request(subject, request.to_json(), timeout=10.0)
    except NoAnswer:
        raise ClientError("no guardian answered; is `omoi up` (or a guardian) running?") from None
    return InterventionReply.model_validate_json(raw)


@guardian_app.command("list")
def list_cmd(
    status: Annotated[
        InterventionStatus | None, typer.Option(help="Only interventions in this status.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every intervention: what, on what, why, and where it stands."""
    from cli.app import dump, emit_json, out, run

    found = [iv for iv in run(interventions) if status is None or iv.status is status]
    if as_json:
        emit_json([dump(iv) for iv in found])
        return
    if not found:
        out.print("no interventions")
        return
    table = Table(title="guardian interventions")
    for column in ("id", "kind", "target", "status", "reason", "by"):
        table.add_column(column)
    for iv in found:
        by = iv.undone_by or iv.approved_by or iv.decided_by
        table.add_row(iv.id, iv.kind.value, iv.target, iv.status.value, iv.reason, by)
    out.print(table)


def _override(subject: str, intervention_id: str, reason: str, as_json: bool) -> None:
    from cli.app import dump, emit_json, err, out, run

    who = f"{getpass.getuser()}@{socket.gethostname()}"
    request = InterventionRequest(id=intervention_id, by=who, reason=reason)
    reply = run(lambda bus: ask(bus, subject, request))
    if as_json:
        emit_json(dump(reply))
    elif reply.ok and reply.intervention is not None:
        iv = reply.intervention
        out.print(f"{iv.id}: {iv.status.value} ({iv.outcome})")
    else:
        err.print(f"[red]error:[/] {reply.error}")
    if not reply.ok:
        raise typer.Exit(1)


@guardian_app.command("approve")
def approve_cmd(
    intervention_id: Annotated[str, typer.Argument(help="An id from `omoi guardian list`.")],
    reason: str = "",
    as_json: JsonFlag = False,
) -> None:
    """Carry out a proposed intervention."""
    _override(c.GUARDIAN_APPROVE, intervention_id, reason, as_json)


@guardian_app.command("undo")
def undo_cmd(
    intervention_id: Annotated[str, typer.Argument(help="An id from `omoi guardian list`.")],
    reason: str = "",
    as_json: JsonFlag = False,
) -> None:
    """Reverse an applied intervention: lift a quarantine, resume a paused ticket."""
    _override(c.GUARDIAN_UNDO, intervention_id, reason, as_json)

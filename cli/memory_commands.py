"""`omoi memory search|forget`: what past tasks taught, as a coding agent would be shown it,
and taking a lesson back."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from bus import Bus, NoAnswer
from bus import constants as c
from cli.client import ClientError
from schemas.memory import ForgetMemory, MemoryAnswer, MemoryQuery

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
memory_app = typer.Typer(no_args_is_help=True, help="Search Omoi's memory of past tasks.")


async def ask(bus: Bus, subject: str, body: BaseModel) -> MemoryAnswer:
    try:
        raw = await bus.request(subject, body.model_dump_json().encode(), timeout=10.0)
    except NoAnswer:
        raise ClientError("no recorder answered; is `omoi up` (or a recorder) running?") from None
    return MemoryAnswer.model_validate_json(raw)


@memory_app.command("search")
def search_cmd(
    text: Annotated[str, typer.Argument(help="Words, as a task's title and instructions.")],
    limit: Annotated[int, typer.Option(min=1, max=50)] = 5,
    as_json: JsonFlag = False,
) -> None:
    """The past tasks most like TEXT, best first, with what recurs among them."""
    from cli.app import dump, emit_json, err, out, run

    answer = run(lambda bus: ask(bus, c.MEMORY_SEARCH, MemoryQuery(text=text, limit=limit)))
    if as_json:
        emit_json(dump(answer))
    elif not answer.ok:
        err.print(f"[red]error:[/] {escape(answer.error or 'the search failed')}")
    elif not answer.hits:
        out.print("nothing remembered is like that")
    else:
        table = Table(title=f"memory ({answer.took_ms:.1f} ms)")
        for column in ("id", "score", "ticket", "task", "did", "went wrong first"):
            table.add_column(column)
        for hit in answer.hits:
            m = hit.memory
            table.add_row(
                m.id, f"{hit.score:.2f}", escape(m.title or m.ticket_id), m.task,
                escape(m.summary[:120]), escape("; ".join(m.errors)[:80]),
            )  # fmt: skip
        out.print(table)
        for hint in answer.playbook:
            out.print(f"playbook: {escape(hint)}")
    if not answer.ok:
        raise typer.Exit(1)


@memory_app.command("forget")
def forget_cmd(
    memory_id: Annotated[str, typer.Argument(help="An id from `omoi memory search`.")],
    as_json: JsonFlag = False,
) -> None:
    """Take a lesson out of the memory: no prompt is shown it again (audited)."""
    from cli.app import dump, emit_json, err, out, run

    answer = run(lambda bus: ask(bus, c.MEMORY_FORGET, ForgetMemory(id=memory_id)))
    if as_json:
        emit_json(dump(answer))
    elif answer.ok:
        out.print(f"forgot {memory_id}")
    else:
        err.print(f"[red]error:[/] {escape(answer.error or 'not forgotten')}")
    if not answer.ok:
        raise typer.Exit(1)

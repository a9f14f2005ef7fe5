"""`omoi logs`: search what the agents logged, and follow it live (the work is in `cli.logs`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from agents.settings import Settings
from bus import Bus
from cli.logs import LEVELS, LogFilter, follow, rows_as_lines


def logs_cmd(
    ticket: Annotated[str | None, typer.Option(help="Only lines about this ticket.")] = None,
    task: Annotated[str | None, typer.Option(help="Only lines about this task (its name).")] = None,
    level: Annotated[
        str | None, typer.Option(help=f"The least severity: {', '.join(LEVELS)}.")
    ] = None,
    grep: Annotated[
        str | None, typer.Option(help="Only lines whose message or traceback has this text.")
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Only lines of this agent (its id).")] = None,
    role: Annotated[str | None, typer.Option(help="Only lines of agents of this role.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="The newest lines to show at most.")] = 200,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Then show new lines as they come (Ctrl-C).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
) -> None:
    """Agents' log lines, from the store (`logs` view) and, with --follow, live from NATS."""
    from cli.app import err, run

    try:
        flt = LogFilter(ticket=ticket, task=task, level=level, grep=grep, agent=agent, role=role)
    except ValueError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    s = Settings.from_env(os.environ, data_dir=data_dir)
    after = _history(s.published_dir, flt, limit, as_json, follow_)
    if not follow_:
        return

    async def tail(bus: Bus) -> None:
        async for line in follow(bus, flt, after):
            _show(line, as_json)

    try:
        run(tail)
    except KeyboardInterrupt:
        pass


def _history(
    published_dir: Path, flt: LogFilter, limit: int, as_json: bool, follow_: bool
) -> int | None:
    """Show the store's newest matching lines; the stream sequence of the newest line it
    holds (matching or not), which a follow goes on after."""
    from cli.app import err
    from store.errors import StoreError
    from store.reader import Reader

    if not published_dir.is_dir():
        if not follow_:
            err.print(f"[red]error:[/] no store at {published_dir}; is a recorder running?")
            raise typer.Exit(1)
        err.print(f"[dim]no store at {published_dir}: new lines only[/]")
        return None
    reader = Reader(published_dir)
    sql, params = flt.query(limit)
    try:
        result = reader.query(sql, params, max_rows=limit)
        newest = reader.query("SELECT max(stream_seq) FROM logs").rows[0][0]
    except StoreError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    for line in rows_as_lines(result.columns, result.rows):
        _show(line, as_json)
    return int(newest) if newest else None


def _show(line: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(line, default=_plain) + "\n")
    else:
        sys.stdout.write(_text(line) + "\n")
    sys.stdout.flush()


def _text(line: dict[str, Any]) -> str:
    """`12:00:01.250 WARNING worker/w-1 T.build: message`, with the traceback below."""
    at = line["at"]
    when = at.strftime("%H:%M:%S.%f")[:-3] if isinstance(at, datetime) else str(at)
    about = ".".join(p for p in (line.get("ticket_id"), line.get("task")) if p)
    who = "/".join(p for p in (line.get("role"), line.get("agent")) if p)
    text = f"{when} {str(line['level']).upper():<8} {who} {about}: {line['message']}"
    if line.get("exc"):
        text += "\n" + _indented(str(line["exc"]).splitlines())
    return text


def _indented(lines: Sequence[str]) -> str:
    return "\n".join("    " + ln for ln in lines)


def _plain(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)

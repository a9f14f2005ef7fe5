"""`omoi trace TICKET`: the ticket's trace from the store, as a waterfall in the terminal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agents.settings import Settings
from store.traces import Bar, trace_query, waterfall

# Columns left of the bars: offset, duration, then the indented name.
_LABEL_WIDTH = 44


def trace_cmd(
    ticket: Annotated[str, typer.Argument(help="The ticket whose trace to show.")],
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
) -> None:
    """A ticket's spans (the store's `spans` view): what ran where, when and how long."""
    from cli.app import err, out
    from store.errors import StoreError
    from store.reader import Reader

    s = Settings.from_env(os.environ, data_dir=data_dir)
    if not s.published_dir.is_dir():
        err.print(f"[red]error:[/] no store at {s.published_dir}; is a recorder running?")
        raise typer.Exit(1)
    sql, params = trace_query(ticket)
    try:
        result = Reader(s.published_dir).query(sql, params, max_rows=2000)
    except StoreError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    bars = waterfall(result.columns, result.rows)
    if not bars:
        err.print(f"no spans of ticket {escape(ticket)} in the store (yet)")
        raise typer.Exit(1)
    width = max(shutil.get_terminal_size((120, 24)).columns - _LABEL_WIDTH - 24, 20)
    for bar in bars:
        out.print(render(bar, width), highlight=False, soft_wrap=True)


def render(bar: Bar, width: int) -> str:
    """`  0.120s   2.310s  └ attempt notes   ····████████······   worker`"""
    name = ("  " * bar.depth + ("└ " if bar.depth else "") + f"{bar.name} {bar.detail}").rstrip()
    lead = round(bar.offset * width)
    cells = max(1, round(bar.width * width))
    graph = "·" * lead + "█" * min(cells, width - lead if width > lead else 1)
    mark = "[red]✗[/]" if bar.failed else " "
    label = escape(name[: _LABEL_WIDTH - 20].ljust(_LABEL_WIDTH - 20))
    return (
        f"{bar.start_s:8.3f}s {bar.duration_s:8.3f}s {mark} {label} "
        f"{graph.ljust(width, '·')}  {escape(bar.role)}"
    )

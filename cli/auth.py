"""`omoi auth`: the NATS identities of a deployment you run yourself.

`omoi up` makes and uses its own (in `<data-dir>/auth`) without being asked; these
commands are for a cluster of your own nats-servers and agents on other machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bus.auth import AuthDir, CredentialsError
from bus.permissions import PERMISSIONS, RESPONSE_WINDOW, ROLES

auth_app = typer.Typer(no_args_is_help=True, help="NATS identities and permissions.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@auth_app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Where the seeds and server block go.")],
    rotate: Annotated[
        list[str] | None,
        typer.Option("--rotate", help="Make a new key for this role (repeatable)."),
    ] = None,
    owner: Annotated[
        int | None, typer.Option(help="Give the files to this uid (the containers' user).")
    ] = None,
) -> None:
    """Write a seed per role (kept if present) and the nats-server `authorization` block."""
    try:
        auth = AuthDir(directory).ensure(rotate=tuple(rotate or ()), owner=owner)
    except (CredentialsError, OSError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    out.print(f"identities in {auth.path} (one seed per role, mode 0600):")
    for role in ROLES:
        out.print(f"  {auth.seed_file(role).name:<14} {PERMISSIONS[role].notes}")
    out.print(
        f"\nIn every nats-server config: include {auth.server_block.name!r} (relative to that "
        "config), then `nats-server --signal reload`."
    )
    out.print(
        "On each machine, give an agent only its role's seed: "
        "OMOI_NATS_CREDENTIALS=/path/to/worker.nk omoi agent worker"
    )
    if rotate:
        out.print(
            f"rotated: {', '.join(rotate)}. Reload the servers, then restart those roles with "
            "their new seeds; the old keys stop working at the reload."
        )


@auth_app.command("show")
def show(role: Annotated[str, typer.Argument(help="A role.")]) -> None:
    """What a role may publish and subscribe to."""
    if role not in PERMISSIONS:
        err.print(f"[red]error:[/] unknown role {role!r}; one of {', '.join(ROLES)}")
        raise typer.Exit(1)
    perms = PERMISSIONS[role]
    out.print(f"[bold]{role}[/]: {perms.notes}")
    out.print("publish:")
    for subject in perms.publish:
        out.print(f"  {escape(subject)}")
    out.print("subscribe:")
    for subject in perms.subscribe:
        out.print(f"  {escape(subject)}")
    if perms.responds:
        out.print(f"and replies once to each request it receives, within {RESPONSE_WINDOW}")

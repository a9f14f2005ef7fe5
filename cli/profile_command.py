"""`omoi profile AGENT --seconds N`: a py-spy profile of a running agent, kept under
`<data-dir>/profiles/`. An agent on this machine is sampled directly; one on another host
through that host's supervisor (`omoi up` there), which profiles only its own children."""

from __future__ import annotations

import asyncio
import base64
import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, cast

import typer

from agents.profiling import SUFFIXES, ProfileError, ProfileFormat, profile_pid
from agents.supervisor_control import this_host
from bus import Bus, BusError
from bus import constants as c
from cli.client import ClientError
from schemas.supervisor import ProfileReply, ProfileRequest


async def take_profile(
    bus: Bus, agent_id: str, seconds: int, fmt: ProfileFormat, out: Path, idle: bool
) -> tuple[Path, str]:
    """The profile written to `out`, and where it was taken (`local` or the host)."""
    beat = await bus.heartbeats.value(agent_id)
    if beat is None or not beat.pid:
        raise ClientError(f"no live agent {agent_id!r} (see `omoi agents`)")
    host = c.host_token(beat.host) if beat.host else this_host()
    if host == this_host():
        try:
            await profile_pid(beat.pid, seconds, fmt, out, idle=idle)
        except ProfileError as exc:
            raise ClientError(str(exc)) from None
        return out, "local"
    asked = ProfileRequest(agent_id=agent_id, seconds=seconds, format=fmt, idle=idle)
    try:
        raw = await bus.request(
            c.supervisor_subject(host, "profile"), asked.to_json(), timeout=seconds + 60.0
        )
    except BusError as exc:
        raise ClientError(f"the supervisor of {host} did not answer: {exc}") from None
    reply = ProfileReply.model_validate_json(raw)
    if not reply.ok:
        raise ClientError(f"{host}: {reply.error}")
    await asyncio.to_thread(_write, out, gzip.decompress(base64.b64decode(reply.data)))
    return out, host


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def profile_cmd(
    agent_id: Annotated[str, typer.Argument(help="An agent id from `omoi agents`.")],
    seconds: Annotated[int, typer.Option(min=1, max=300, help="How long to sample.")] = 10,
    fmt: Annotated[
        str, typer.Option("--format", help="flamegraph (SVG), speedscope (JSON) or raw.")
    ] = "flamegraph",
    idle: Annotated[bool, typer.Option(help="Sample waiting threads too.")] = False,
    out: Annotated[Path | None, typer.Option(help="Where to write it.")] = None,
) -> None:
    """Profile a running agent with py-spy, without stopping it, and keep the result."""
    from cli.app import err, run, settings
    from cli.app import out as console

    if fmt not in SUFFIXES:
        err.print(f"[red]error:[/] --format is one of {', '.join(SUFFIXES)}")
        raise typer.Exit(2)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = out or settings().data_dir / "profiles" / f"{agent_id}-{stamp}.{SUFFIXES[fmt]}"
    chosen = cast(ProfileFormat, fmt)
    path, where = run(lambda bus: take_profile(bus, agent_id, seconds, chosen, target, idle))
    console.print(f"profile of {agent_id} ({where}, {seconds}s): {path}")

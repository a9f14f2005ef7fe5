"""The `omoi` command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from agents.errors import SettingsError
from agents.logs import configure_logging
from agents.redact import Redactor, install_log_redaction
from agents.runner import ROLES
from agents.runner import main as run_agent_main
from agents.settings import DEFAULT_NATS_PORT, Settings
from bus import AuthError, Bus
from bus import constants as c
from bus.auth import Credentials
from bus.registry import DISCOVERY_TIMEOUT_S
from cli import client, render
from cli.auth import auth_app
from cli.client import ClientError
from schemas import Phase

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Omoi: agents on NATS.")
ticket_app = typer.Typer(no_args_is_help=True, help="Inspect and steer tickets.")
task_app = typer.Typer(no_args_is_help=True, help="Inspect and cancel tasks.")
app.add_typer(ticket_app, name="ticket")
app.add_typer(task_app, name="task")
app.add_typer(auth_app, name="auth")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for an answer.")]


def settings() -> Settings:
    return Settings.from_env(os.environ)


def nats_url() -> tuple[str, str]:
    """The server to talk to, and where that came from: NATS_URL, else the `omoi up`
    running on the data dir (OMOI_DATA_DIR, default .omoi), else the default port."""
    s = settings()
    if s.nats_url:
        return s.nats_url, "NATS_URL"
    from cli import state

    running = state.running(s.data_dir)
    if running is not None:
        return running.nats_url, f"the omoi up running on {s.data_dir}"
    default = f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
    return default, f"the default: no NATS_URL and no omoi up running on {s.data_dir}"


def identity(role: str) -> Credentials | None:
    """The CLI's NATS identity: OMOI_NATS_CREDENTIALS, else the data dir's `role` seed."""
    try:
        return settings().credentials(role)
    except AuthError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def run[T](action: Callable[[Bus], Awaitable[T]]) -> T:
    url, source = nats_url()
    credentials = identity("operator")

    async def go() -> T:
        try:
            # A person waits for the answer: ride out a blip, not an outage.
            bus = await Bus.connect(
                url,
                name="omoi-cli",
                connect_timeout=3,
                max_reconnect_attempts=2,
                patience_s=5.0,
                credentials=credentials,
            )
        except Exception as exc:
            raise ClientError(f"cannot reach NATS at {url} ({source}): {exc}") from exc
        try:
            return await action(bus)
        finally:
            await bus.close()

    try:
        return asyncio.run(go())
    except ClientError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def dump(model: Any) -> Any:
    return model.model_dump(mode="json")


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="State directory.")] = Path(".omoi"),
    nats_port: Annotated[int, typer.Option(help="Embedded server port (0: any free)")] = 4222,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0: none here).")] = 2,
    planners: Annotated[
        int, typer.Option(min=1, help="Planner processes (they share the tickets' partitions).")
    ] = 1,
    http_port: Annotated[
        int, typer.Option(help="Gateway and dashboard port on 127.0.0.1 (0: any free; -1: off).")
    ] = 8000,
    demo: Annotated[bool, typer.Option(help="Submit a demo ticket and follow it.")] = False,
    logs: Annotated[
        bool,
        typer.Option(
            "--logs",
            help="Show the agents' logs here too (they always go to DATA_DIR/logs/).",
        ),
    ] = False,
    ready_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for every agent to be ready.")
    ] = 120.0,
) -> None:
    """Start NATS (unless NATS_URL is set), provision the topology, run the agents."""
    from cli.up import UpError
    from cli.up import up as run_up

    settings = Settings.from_env(os.environ, data_dir=data_dir)
    configure_logging(os.environ.get("OMOI_LOG_LEVEL", "INFO"), settings.log_format)
    on_ready = _demo if demo else None
    install_log_redaction(Redactor.from_settings(settings))
    scripted = None
    if demo and not settings.llm_model:
        from cli.demo import start_scripted_model

        settings, scripted = start_scripted_model(settings)
        out.print(f"no OMOI_LLM_MODEL set: agents use the SCRIPTED MODEL at {scripted.url}")
    try:
        asyncio.run(
            run_up(
                settings,
                nats_port=nats_port,
                workers=workers,
                planners=planners,
                http_port=None if http_port < 0 else http_port,
                ready_timeout=ready_timeout,
                on_line=_show_child_line if logs else None,
                on_ready=on_ready,
            )
        )
    except UpError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        if scripted is not None:
            scripted.stop()


def _show_child_line(name: str, line: str) -> None:
    err.print(f"{name:<9} | {line}", markup=False, highlight=False, emoji=False, soft_wrap=True)


async def _demo(s: Settings) -> None:
    from cli.demo import run_demo

    await run_demo(s, out)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def agent(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help=f"One of: {', '.join(ROLES)}")],
) -> None:
    """Run one agent process against NATS_URL (options: see `omoi agent ROLE --help`)."""
    if role not in ROLES:
        err.print(f"[red]error:[/] unknown role {role!r}; one of {', '.join(ROLES)}")
        raise typer.Exit(2)
    run_agent_main(role, ctx.args)


@app.command()
def submit(
    title: Annotated[str | None, typer.Option(help="Ticket title.")] = None,
    description: Annotated[str, typer.Option(help="Ticket description.")] = "",
    ticket_id: Annotated[str | None, typer.Option("--id", help="Client-chosen id.")] = None,
    priority: Annotated[str | None, typer.Option(help="low|normal|high|critical")] = None,
    workflow: Annotated[str | None, typer.Option(help="Workflow template name.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="JSON ticket file, - for stdin")
    ] = None,
    follow: Annotated[bool, typer.Option(help="Show live progress until it finishes.")] = False,
    as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:
    """Submit a ticket; prints its id."""
    flags = {"title": title, "id": ticket_id, "priority": priority, "workflow": workflow}
    payload = _ticket_payload(file, flags, description)

    async def go(bus: Bus) -> int:
        reply = await client.submit(bus, payload, timeout)
        if as_json and not follow:
            emit_json(dump(reply))
        elif reply.ok:
            out.print(reply.ticket_id)
            if reply.message != "accepted":
                err.print(reply.message)
        else:
            assert reply.error is not None
            err.print(f"[red]rejected:[/] {reply.error.category}: {reply.error.message}")
        if not reply.ok:
            return 1
        if follow:
            last = None
            async for event in client.follow(bus, str(reply.ticket_id)):
                last = event
                if as_json:
                    sys.stdout.write(event.model_dump_json() + "\n")
                else:
                    out.print(render.event_line(event))
            return 0 if last is not None and last.type == "ticket.done" else 1
        return 0

    raise typer.Exit(run(go))


def _ticket_payload(file: Path | None, flags: dict[str, Any], description: str) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
        try:
            payload = json.loads(text)
        except ValueError as exc:
            err.print(f"[red]error:[/] {file} is not JSON: {exc}")
            raise typer.Exit(2) from None
    payload.update({k: v for k, v in flags.items() if v is not None})
    if description:
        payload["description"] = description
    if "title" not in payload:
        err.print("[red]error:[/] a ticket needs a title (--title or in --file)")
        raise typer.Exit(2)
    payload.setdefault("id", client.new_ticket_id())
    return payload


@ticket_app.command("show")
def ticket_show(
    ticket_id: str,
    as_json: JsonFlag = False,
    show_context: Annotated[
        bool, typer.Option("--context", help="Show what each phase handed to the next.")
    ] = False,
) -> None:
    """A ticket, its phase history, its tasks and its gates."""
    t, tasks = run(lambda bus: client.ticket_with_tasks(bus, ticket_id))
    if as_json:
        emit_json(
            [dump(c) for c in t.context]
            if show_context
            else {"ticket": dump(t), "tasks": [dump(x) for x in tasks]}
        )
    elif show_context:
        render.context(out, t)
    else:
        render.ticket(out, t, tasks)
        if t.gates:
            render.gates(out, t)


@ticket_app.command("list")
def ticket_list(as_json: JsonFlag = False) -> None:
    """All tickets, oldest first."""
    found = run(client.tickets)
    if as_json:
        emit_json([dump(t) for t in found])
    else:
        out.print(render.ticket_list(found))


def _reply(subject: str, body: dict[str, Any], as_json: bool, timeout: float) -> None:
    reply = run(lambda bus: client.command(bus, subject, body, timeout))
    if as_json:
        emit_json(dump(reply))
    elif reply.ok:
        out.print(reply.message)
    else:
        assert reply.error is not None
        err.print(f"[red]error:[/] {reply.error.category}: {reply.error.message}")
    if not reply.ok:
        raise typer.Exit(1)


@ticket_app.command("cancel")
def ticket_cancel(
    ticket_id: str, reason: str = "cancelled by operator", as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:  # fmt: skip
    """Cancel a ticket: stop its running tasks, drop queued ones."""
    _reply(c.CMD_TICKET_CANCEL, {"ticket_id": ticket_id, "reason": reason}, as_json, timeout)


@ticket_app.command("move")
def ticket_move(
    ticket_id: str,
    phase: Annotated[Phase, typer.Argument(help="Target phase.")],
    reason: str = "moved by operator",
    as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:
    """Move a ticket to another phase, if the state machine allows it."""
    body = {"ticket_id": ticket_id, "phase": phase.value, "reason": reason}
    _reply(c.CMD_TICKET_MOVE, body, as_json, timeout)


@ticket_app.command("pause")
def ticket_pause(
    ticket_id: str, reason: str = "paused by operator", as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:  # fmt: skip
    """Pause a ticket: nothing new starts (running tasks finish) until it is resumed."""
    _reply(c.CMD_TICKET_PAUSE, {"ticket_id": ticket_id, "reason": reason}, as_json, timeout)


@ticket_app.command("priority")
def ticket_priority(
    ticket_id: str,
    priority: Annotated[str, typer.Argument(help="low|normal|high|critical")],
    reason: str = "set by operator",
    as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:
    """Set a ticket's priority: high and critical tickets' tasks are taken first, and its
    queued tasks move to their new lane."""
    body = {"ticket_id": ticket_id, "priority": priority, "reason": reason}
    _reply(c.CMD_TICKET_PRIORITY, body, as_json, timeout)


@ticket_app.command("deliver")
def ticket_deliver(
    ticket_id: str, reason: str = "asked by operator", as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:  # fmt: skip
    """Push a ticket's branch (and open its pull request) again after its delivery failed."""
    _reply(c.CMD_TICKET_DELIVER, {"ticket_id": ticket_id, "reason": reason}, as_json, timeout)


@ticket_app.command("discovery")
def ticket_discovery(
    ticket_id: str,
    discovery_id: Annotated[str, typer.Argument(help="A held discovery's id (`ticket show`).")],
    approve: Annotated[bool, typer.Option("--approve/--reject", help="Make it a task, or not.")],
    reason: str = "decided by operator",
    as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:
    """Answer a discovery the planner held (a new phase, or over the cost threshold)."""
    body = {"ticket_id": ticket_id, "discovery_id": discovery_id, "approve": approve,
            "reason": reason}  # fmt: skip
    _reply(c.CMD_TICKET_DISCOVERY, body, as_json, timeout)


@ticket_app.command("resume")
def ticket_resume(
    ticket_id: str, reason: str = "resumed by operator", as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:  # fmt: skip
    """Resume a paused ticket: it moves on from where its state is now."""
    _reply(c.CMD_TICKET_RESUME, {"ticket_id": ticket_id, "reason": reason}, as_json, timeout)


@task_app.command("show")
def task_show(
    task_id: Annotated[str, typer.Argument(help="<ticket_id>.<task_name>")],
    as_json: JsonFlag = False,
) -> None:
    """One task: status, attempts and their errors, output tail."""
    t = run(lambda bus: client.task(bus, task_id))
    if as_json:
        emit_json(dump(t))
    else:
        render.task_detail(out, t)


@task_app.command("cancel")
def task_cancel(
    task_id: Annotated[str, typer.Argument(help="<ticket_id>.<task_name>")],
    reason: str = "cancelled by operator",
    as_json: JsonFlag = False,
    timeout: Timeout = 5.0,
) -> None:
    """Cancel one task (a running one is stopped within about a second)."""
    _reply(c.CMD_TASK_CANCEL, {"task_id": task_id, "reason": reason}, as_json, timeout)


@app.command("agents")
def agents_cmd(
    capability: Annotated[
        str | None, typer.Option(help="Only agents that take this capability.")
    ] = None,
    label: Annotated[str | None, typer.Option(help="Only agents with this label.")] = None,
    role: Annotated[str | None, typer.Option(help="Only agents of this role.")] = None,
    as_json: JsonFlag = False,
    wait: Annotated[
        float, typer.Option(min=0.1, help="Seconds to gather answers at most.")
    ] = DISCOVERY_TIMEOUT_S,
) -> None:
    """Live agents, found through the NATS service API (`nats micro ls` sees them too):
    phases, capabilities, labels, load, version."""
    found = run(
        lambda bus: client.agents(
            bus, role=role, capability=capability, label=label, timeout_s=wait
        )
    )
    if as_json:
        emit_json([dump(a) for a in found])
    else:
        out.print(render.agent_table(found))


@app.command("sql")
def sql_cmd(
    query: Annotated[str, typer.Argument(help="One SELECT over the store's tables and views.")],
    as_json: JsonFlag = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV output.")] = False,
    max_rows: Annotated[int, typer.Option(min=1, help="Rows to return at most.")] = 1000,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
) -> None:
    """Ask the analytics store (read-only; works while the system runs)."""
    from store.errors import StoreError
    from store.reader import Reader

    s = Settings.from_env(os.environ, data_dir=data_dir)
    if not s.published_dir.is_dir():
        err.print(f"[red]error:[/] no store at {s.published_dir}; is a recorder running?")
        raise typer.Exit(1)
    try:
        result = Reader(s.published_dir).query(query, max_rows=max_rows)
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from None
    if as_csv:
        sys.stdout.write(result.to_csv())
    elif as_json:
        emit_json(result.to_dicts())
    else:
        out.print(render.sql_table(result.columns, result.rows, result.truncated))


UpDataDir = Annotated[
    Path | None, typer.Option(help="Use the bundled server of this `omoi up` data dir.")
]


@app.command()
def backup(
    directory: Annotated[Path, typer.Argument(help="A new or empty directory.")],
    data_dir: UpDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Back up every Omoi stream, bucket and object store, with consumer state (docs/backup.md)."""
    from cli.backup import backup_command

    code = backup_command(
        nats_url()[0],
        directory,
        out,
        err,
        as_json=as_json,
        data_dir=data_dir,
        credentials=identity("admin"),
    )
    raise typer.Exit(code)


@app.command()
def restore(
    directory: Annotated[Path, typer.Argument(help="A directory written by `omoi backup`.")],
    force: Annotated[bool, typer.Option(help="Replace the server's Omoi data.")] = False,
    data_dir: UpDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore a backup into a server without Omoi data (or replace it with --force)."""
    from cli.backup import restore_command

    code = restore_command(
        nats_url()[0],
        directory,
        out,
        err,
        force=force,
        as_json=as_json,
        data_dir=data_dir,
        credentials=identity("admin"),
    )
    raise typer.Exit(code)


def _register_token_commands() -> None:
    # Imported here: its commands import this module's helpers when they run.
    from cli.token_commands import token_app

    app.add_typer(token_app, name="token")
    from cli.locks import locks_cmd

    app.command("locks")(locks_cmd)
    from cli.log_commands import logs_cmd

    app.command("logs")(logs_cmd)
    from cli.trace_command import trace_cmd

    app.command("trace")(trace_cmd)
    from cli.profile_command import profile_cmd

    app.command("profile")(profile_cmd)
    from cli.guardian_commands import guardian_app

    app.add_typer(guardian_app, name="guardian")
    from cli.memory_commands import memory_app

    app.add_typer(memory_app, name="memory")


_register_token_commands()


def main() -> None:
    try:
        app()
    except SettingsError as exc:
        # The operator's configuration: a message that says what to fix, no traceback.
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(2) from None

"""Human-readable output for the CLI (rich tables and lines)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas import Event, TaskState, TicketState, utcnow
from schemas.registry import AgentListing

STATUS_STYLE = {
    "succeeded": "green",
    "done": "green",
    "running": "cyan",
    "queued": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "skipped": "dim",
    "blocked": "dim",
    "ok": "green",
    "stale": "red",
}


def styled(value: str) -> str:
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/]" if style else value


def ago(at: datetime | None) -> str:
    if at is None:
        return "-"
    return f"{(utcnow() - at).total_seconds():.1f}s ago"


def ticket(console: Console, t: TicketState, tasks: list[TaskState]) -> None:
    console.print(f"[bold]{t.id}[/]  {t.title}")
    console.print(f"phase {styled(t.phase.value)}  status {styled(t.status.value)}")
    if t.reason:
        console.print(f"reason: {t.reason}")
    if t.delivery is not None:
        delivery(console, t)
    if t.discoveries:
        found = Table("discovery", "kind", "status", "title", "task", "why",
                      title="discoveries", title_justify="left")  # fmt: skip
        for d in t.discoveries:
            found.add_row(d.id, d.kind, styled(d.status.value), escape(d.title),
                          d.task or "-", escape(d.reason))  # fmt: skip
        console.print(found)
    history = Table("from", "to", "at", "reason", title="phase history", title_justify="left")
    for step in t.phase_history:
        history.add_row(
            step.from_.value if step.from_ else "-", step.to.value, step.at.isoformat(), step.reason
        )
    console.print(history)
    console.print(task_table(tasks))


def delivery(console: Console, t: TicketState) -> None:
    """Where the ticket's branch went, its pull request, and why a delivery failed."""
    d = t.delivery
    assert d is not None
    line = f"delivery {styled(d.status.value)}  branch {d.branch}"
    if d.commit:
        line += f" at {d.commit[:12]}"
    console.print(line + f"  (attempt {d.attempts})")
    if d.pull_request is not None:
        console.print(f"pull request #{d.pull_request.number}: {escape(d.pull_request.url)}")
    if d.error:
        console.print(
            f"delivery failed ({d.category}): {escape(d.error)}  [dim]omoi ticket deliver {t.id}[/]"
        )


def task_table(tasks: list[TaskState]) -> Table:
    table = Table("task", "phase", "cap", "status", "attempts", "depends on", "last error")
    for t in tasks:
        error = f"{t.error.category}: {t.error.message}" if t.error else ""
        table.add_row(
            t.name,
            t.phase.value,
            t.capability,
            styled(t.status.value),
            f"{t.attempts}/{t.max_attempts}",
            ", ".join(t.depends_on),
            error[:80],
        )
    return table


def gates(console: Console, t: TicketState) -> None:
    """Each phase's gate, with the evidence of its latest verdict."""
    table = Table(
        "phase", "gate", "attempts", "commit", "evidence", title="gates", title_justify="left"
    )
    for phase, gate in t.gates.items():
        verdict = gate.verdicts[-1] if gate.verdicts else None
        lines = []
        for check in verdict.checks if verdict else []:
            mark = "[green]ok[/]" if check.passed else "[red]FAIL[/]"
            lines.append(f"{mark} {check.name}: {check.detail}"[:110])
        if verdict and verdict.review:
            lines.append("review: " + verdict.review.splitlines()[0][:100])
        table.add_row(
            phase.value,
            styled(gate.status.value),
            str(gate.attempts),
            (verdict.commit or "")[:10] if verdict else "",
            "\n".join(lines),
        )
    console.print(table)


def context(console: Console, t: TicketState) -> None:
    """What each finished phase handed to the next."""
    if not t.context:
        console.print("no phase has handed over context yet")
    for ctx in t.context:
        console.print(f"[bold]{ctx.phase.value}[/] (summarised by {ctx.summarised_by})")
        console.print(ctx.summary, markup=False, highlight=False)
        if ctx.artifacts:
            console.print("artifacts: " + ", ".join(ctx.artifacts), markup=False)
        for note in ctx.feedback:
            console.print(f"gate feedback: {note}", markup=False, highlight=False)


def task_detail(console: Console, t: TaskState) -> None:
    console.print(f"[bold]{t.id}[/]  {styled(t.status.value)}  phase {t.phase.value}")
    if t.command:
        console.print(f"command: {t.command}")
    if t.instructions:
        console.print(f"instructions: {t.instructions}", markup=False, highlight=False)
    if t.usage.iterations:
        u = t.usage
        console.print(
            f"usage: {u.prompt_tokens}+{u.completion_tokens} tokens, ${u.cost_usd:.4f}, "
            f"{u.iterations} model calls"
        )
    console.print(f"attempts {t.attempts}/{t.max_attempts}, timeout {t.timeout_s:g}s")
    for err in t.errors:
        console.print(f"  attempt {err.attempt}: [red]{err.category}[/] {err.message}")
    if t.result:
        if t.result.commit:
            console.print(f"commit {t.result.commit}; files: {', '.join(t.result.files)}")
        console.print(f"exit {t.result.exit_code} in {t.result.duration_s}s; output tail:")
        console.print(t.result.output_tail, markup=False, highlight=False)


def ticket_list(tickets: list[TicketState]) -> Table:
    table = Table("id", "title", "phase", "status", "tasks", "created")
    for t in tickets:
        table.add_row(
            t.id, t.title[:40], styled(t.phase.value), styled(t.status.value),
            str(len(t.tasks)), t.created_at.isoformat(timespec="seconds"),
        )  # fmt: skip
    return table


def sql_table(columns: list[str], rows: list[tuple[Any, ...]], truncated: bool) -> Table:
    table = Table(*columns, caption=f"{len(rows)} rows" + (" (truncated)" if truncated else ""))
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def agent_table(agents: list[AgentListing]) -> Table:
    table = Table(
        "agent", "role", "phases", "capabilities", "labels", "load", "tasks", "ready", "version",
        "host", caption=f"{len(agents)} live agent{'' if len(agents) == 1 else 's'}",
    )  # fmt: skip
    for a in agents:
        status = a.status
        ready = "-" if status is None else ("yes" if status.ready else "no")
        tasks = "-" if status is None else ",".join(status.tasks) or status.current_task or "-"
        table.add_row(
            a.agent_id, a.role, ",".join(a.phases) or "-", ",".join(a.capabilities) or "-",
            ",".join(a.labels) or "-", _load(a), tasks, ready, a.omoi_version, a.host or "-",
        )  # fmt: skip
    return table


def _load(a: AgentListing) -> str:
    """A worker's running tasks out of its slots; "-" for agents that run none."""
    slots = a.status.slots if a.status is not None and a.status.slots is not None else a.slots
    if slots is None:
        return "-"
    running = a.status.running if a.status is not None else None
    return f"{'?' if running is None else running}/{slots}"


def event_line(e: Event) -> str:
    data = e.data
    what = e.task or ""
    if e.type == "ticket.phase_changed":
        what = f"{data.get('from')} -> {data.get('to')} ({data.get('reason')})"
    elif e.type in ("task.retrying", "task.failed") and data.get("error"):
        err = data["error"]
        what += f" attempt {data.get('attempt')}: {err.get('category')}: {err.get('message')}"
    elif e.type == "task.started":
        what += f" attempt {data.get('attempt')} on {e.agent}"
    elif e.type in AGENT_DETAIL:
        what += _agent_detail(e)
    elif e.type == "ticket.rejected":
        what = f"{data.get('error', {}).get('message')}"
    elif e.type.startswith("ticket."):
        what = str(data.get("reason") or data.get("title") or "")
    phase = data.get("phase", "")
    return f"{e.at.strftime('%H:%M:%S')} {phase:<14} {styled(e.type):<30} {what}"


AGENT_DETAIL = frozenset({"task.progress", "task.succeeded", "gate.passed", "gate.failed"})


def _agent_detail(e: Event) -> str:
    data = e.data
    what = ""
    if e.type == "task.progress":
        usage = data.get("usage") or {}
        what += (
            f" {data.get('tool_calls')} tool calls, last {data.get('last_tool')}, "
            f"{usage.get('prompt_tokens', 0) + usage.get('completion_tokens', 0)} tokens"
        )
    elif e.type == "task.succeeded" and data.get("commit"):
        what += f" commit {str(data['commit'])[:10]}"
        if data.get("usage"):
            what += f" ${data['usage'].get('cost_usd', 0):.4f}"
    elif e.type in ("gate.passed", "gate.failed"):
        checks = data.get("checks") or []
        passed = sum(1 for c in checks if c.get("passed"))
        what = f"attempt {data.get('attempt')}: {passed}/{len(checks)} checks passed"
        if data.get("feedback"):
            what += " - " + str(data["feedback"]).splitlines()[-1][:80]
    return what

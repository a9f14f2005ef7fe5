"""The prompt an agent task starts from: the ticket, the task, what earlier phases left,
and what similar past tasks taught."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from schemas import TaskState
from schemas.ticket import TicketState


def build_prompt(
    task: TaskState,
    ticket: TicketState | None,
    workspace: Path,
    joined: Mapping[str, str] | None = None,
    recalled: str = "",
) -> str:
    lines = [
        f"You are working on ticket {task.ticket_id}, phase {task.phase.value}, task {task.name}.",
        f"Workspace: {workspace}",
        "",
    ]
    if ticket is not None:
        lines += [f"Ticket: {ticket.title}"]
        if ticket.description:
            lines += ["", ticket.description.strip()]
        lines.append("")
    lines += ["## Your task", "", (task.instructions or task.name).strip(), ""]
    if task.acceptance:
        lines += ["## Acceptance criteria", ""]
        lines += [f"- {c}" for c in task.acceptance]
        lines.append("")
    if joined:
        lines += ["## Results of the tasks this one joins", ""]
        for name, result in joined.items():
            lines += [f"### {name}", "", result.strip() or "(no output)", ""]
    if ticket is not None and ticket.context:
        lines += ["## What earlier phases produced", ""]
        for ctx in ticket.context:
            lines += [f"### {ctx.phase.value}", "", ctx.summary.strip(), ""]
            if ctx.feedback:
                lines += ["Gate feedback:", *[f"- {f}" for f in ctx.feedback], ""]
    if recalled:
        lines += [recalled.rstrip(), ""]
    lines += [
        "## Rules",
        "",
        f"- Work only inside {workspace}; it is a git repository. Use absolute paths "
        "with the file editor.",
        "- Do not commit or push: your changes are committed for you when you finish.",
        "- When you are done, call the finish tool with a short summary of what you did "
        "and why, naming the files you changed.",
    ]
    return "\n".join(lines)

"""A pull request's title and body, from the ticket's state alone: what a reviewer needs.

The body carries the phases' summaries, each gate's evidence (its checks, their output,
the commit they passed on) and what the ticket spent. GitHub caps a body at 65,536
characters; long outputs are cut first, so the summary always fits.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas import WORK_PHASES, TaskState, TaskStatus
from schemas.gate import CheckResult
from schemas.ticket import TicketState
from schemas.usage import Usage

MAX_BODY = 60_000
OUTPUT_TAIL = 1_500
TITLE_MAX = 256


def title(ticket: TicketState) -> str:
    # The suffix stays whole: comments on the pull request are routed to the ticket by it.
    suffix = f" (omoi {ticket.id})"
    return ticket.title[: TITLE_MAX - len(suffix)] + suffix


def body(ticket: TicketState, tasks: Iterable[TaskState]) -> str:
    tasks = list(tasks)
    parts = [_header(ticket), _phases(ticket, tasks), _gates(ticket, OUTPUT_TAIL), _usage(tasks)]
    text = "\n\n".join(p for p in parts if p)
    if len(text) > MAX_BODY:  # the outputs go first
        parts[2] = _gates(ticket, 0)
        text = "\n\n".join(p for p in parts if p)
    return text[:MAX_BODY]


def _header(ticket: TicketState) -> str:
    lines = [f"Omoi ticket `{ticket.id}`: **{ticket.title}**"]
    if ticket.description.strip():
        lines += ["", _quote(ticket.description.strip()[:4_000])]
    source = ticket.source
    if source is not None and source.provider == "github" and source.number is not None:
        lines += ["", f"Closes {source.repo}#{source.number}"]
    elif source is not None and source.key is not None:
        lines += ["", f"Jira: {source.url or source.key}"]
    return "\n".join(lines)


def _phases(ticket: TicketState, tasks: list[TaskState]) -> str:
    """What each phase handed on, and for a phase that handed nothing on yet (the last
    one: it ends with the delivery) its tasks' own summaries."""
    lines = []
    for handed in ticket.context:
        lines += ["", f"### {handed.phase.value}", "", handed.summary.strip() or "(no summary)"]
    summarised = {handed.phase for handed in ticket.context}
    for phase in WORK_PHASES:
        done = [
            f"- {t.name}: {t.result.summary.strip()}"
            for t in tasks
            if t.phase is phase and t.result is not None and t.result.summary
        ]
        if phase not in summarised and done:
            lines += ["", f"### {phase.value}", "", *done]
    return "\n".join(["## What each phase did", *lines]) if lines else ""


def _gates(ticket: TicketState, tail: int) -> str:
    if not ticket.gates:
        return ""
    lines = ["## Gate evidence"]
    for phase, gate in ticket.gates.items():
        verdict = gate.verdicts[-1] if gate.verdicts else None
        commit = (verdict.commit if verdict else None) or gate.commit or "?"
        lines += [
            "",
            f"### {phase.value}: {gate.status.value} "
            f"(attempt {gate.attempts}, commit `{commit[:12]}`)",
        ]
        for check in verdict.checks if verdict else ():
            lines += _check(check, tail)
        if verdict is not None and verdict.review:
            lines += ["", "Review:", "", _quote(verdict.review.strip()[:2_000])]
    return "\n".join(lines)


def _check(check: CheckResult, tail: int) -> list[str]:
    mark = "passed" if check.passed else "FAILED"
    lines = [f"- **{check.name}** ({check.kind.value}): {mark}, {check.detail}"]
    output = check.output_tail.strip()
    if tail and output:
        lines += [
            "  <details><summary>output</summary>",
            "",
            "  ```",
            *("  " + line for line in output[-tail:].splitlines()),
            "  ```",
            "  </details>",
        ]
    return lines


def _usage(tasks: list[TaskState]) -> str:
    total = Usage.total(t.usage for t in tasks)
    done = sum(1 for t in tasks if t.status is TaskStatus.SUCCEEDED)
    return "\n".join(
        [
            "## Spent",
            "",
            f"- tasks: {done} succeeded of {len(tasks)}",
            f"- tokens: {total.total_tokens:,} "
            f"({total.prompt_tokens:,} prompt, {total.completion_tokens:,} completion)",
            f"- cost: ${total.cost_usd:.4f}",
            f"- agent steps: {total.iterations:,}",
        ]
    )


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())

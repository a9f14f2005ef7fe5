"""What a finished phase hands to the next: its outputs, gathered and cut to a budget.

The extractive summary needs no model and is always available; `summarise` asks the
model for a better one and falls back to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agents.llm.client import ModelClient, ModelError
from schemas import Phase, TaskState, TaskStatus
from schemas.ticket import PhaseContext, TicketState

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
SUMMARY_MARKER = "omoi:summarise"


def _task_line(task: TaskState) -> str:
    result = task.result
    said = ""
    if result is not None:
        said = result.summary.strip() or "\n".join(result.output_tail.strip().splitlines()[-5:])
    files = f" (files: {', '.join(result.files[:10])})" if result and result.files else ""
    return f"- {task.name}{files}: {said or 'done'}"


def gather(ticket: TicketState, tasks: Mapping[str, TaskState], phase: Phase) -> PhaseContext:
    done = sorted(
        (t for t in tasks.values() if t.phase is phase and t.status is TaskStatus.SUCCEEDED),
        key=lambda t: t.finished_at or t.updated_at,
    )
    artifacts: list[str] = []
    for task in done:
        for path in task.result.files if task.result else []:
            if path not in artifacts:
                artifacts.append(path)
    gate = ticket.gates.get(phase)
    feedback = []
    if gate is not None:
        for verdict in gate.verdicts:
            for path in (f for c in verdict.checks for f in c.files):
                if path not in artifacts:
                    artifacts.append(path)
            if not verdict.passed and verdict.feedback:
                feedback.append(f"attempt {verdict.attempt}: {verdict.feedback.strip()[:600]}")
    return PhaseContext(
        phase=phase,
        summary="\n".join(_task_line(t) for t in done) or f"{phase.value}: no tasks",
        artifacts=artifacts[:100],
        feedback=feedback,
    )


def clip(text: str, tokens: int) -> str:
    """Keep the start of every line, shortening the longest ones first, to fit `tokens`."""
    limit = tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    lines = text.splitlines()
    # Every line keeps its start; the newlines count against the limit too.
    share = max(16, (limit - len(lines)) // max(len(lines), 1))
    kept = [line if len(line) <= share else line[: share - 1] + "…" for line in lines]
    return "\n".join(kept)[:limit]


async def summarise(
    model: ModelClient | None, ticket: TicketState, context: PhaseContext, tokens: int
) -> PhaseContext:
    raw = context.summary
    if model is None or len(raw) <= tokens * CHARS_PER_TOKEN // 2:
        return context.model_copy(update={"summary": clip(raw, tokens)})
    prompt = (
        f"{SUMMARY_MARKER} phase={context.phase.value}\n"
        f"Ticket: {ticket.title}\n\nSummarise what the {context.phase.value} phase produced, "
        f"for the engineers of the next phases, in at most {tokens} tokens. Keep file names, "
        f"decisions and open problems.\n\n{raw}"
    )
    try:
        done = await model.complete("You write terse engineering hand-over notes.", prompt)
    except ModelError as exc:
        log.warning("context summary for %s fell back to extraction: %s", ticket.id, exc)
        return context.model_copy(update={"summary": clip(raw, tokens)})
    text = done.text.strip() or raw
    return context.model_copy(update={"summary": clip(text, tokens), "summarised_by": "model"})

"""Memory from the agents' side: what a finished task taught, and what is recalled before
the next one starts.

`learned` turns a succeeded coding task into a `MemoryRecord` (a worker publishes it as
`memory.recorded`; the recorder keeps it). `recall` asks the recorder for the past tasks
most like a new one (`omoi.memory.search`), and `prompt_section` puts them in the prompt
within a character budget. `playbook` reads recurring errors among the hits: an error
category that came up in two or more similar tasks and was fixed becomes a hint.

Recall is a help, never a dependency: with no recorder answering within its timeout the
task starts without it.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from pydantic import ValidationError

from bus import Bus, BusError
from bus import constants as c
from schemas import TaskState
from schemas.memory import MemoryAnswer, MemoryHit, MemoryQuery, MemoryRecord
from schemas.ticket import TicketState

log = logging.getLogger(__name__)

FEEDBACK_MARK = "## Gate feedback"
RECURRING = 2


def memory_id(task: TaskState) -> str:
    return f"{task.id}.g{task.generation}"


def learned(task: TaskState, ticket: TicketState | None) -> MemoryRecord | None:
    """The lesson of a succeeded coding task (None for anything else)."""
    if task.capability != "agent" or task.result is None or task.is_merge:
        return None
    feedback = ""
    instructions = task.instructions or ""
    if FEEDBACK_MARK in instructions:
        feedback = instructions.split(FEEDBACK_MARK, 1)[1].split("\n## ", 1)[0].strip()
    return MemoryRecord(
        id=memory_id(task),
        ticket_id=task.ticket_id,
        task=task.name,
        phase=task.phase.value,
        title=ticket.title if ticket is not None else "",
        instructions=instructions[:4_000],
        summary=task.result.summary[:2_000],
        files=task.result.files[:50],
        errors=[f"{e.category}: {e.message[:300]}" for e in task.errors[-5:]],
        feedback=feedback[:2_000],
    )


def query_text(task: TaskState, ticket: TicketState | None) -> str:
    title = ticket.title if ticket is not None else ""
    return f"{title}\n{task.instructions or task.name}"[:4_000]


def playbook(hits: list[MemoryHit]) -> list[str]:
    """Hints from errors that recur among the hits, each with what fixed it last."""
    seen: dict[str, list[MemoryRecord]] = defaultdict(list)
    for hit in hits:
        for category in dict.fromkeys(e.split(":", 1)[0] for e in hit.memory.errors):
            seen[category].append(hit.memory)
    hints = []
    for category, memories in sorted(seen.items(), key=lambda kv: -len(kv[1])):
        if len(memories) < RECURRING:
            continue
        fix = memories[0]
        hints.append(
            f"{category} came up in {len(memories)} similar tasks "
            f"({', '.join(m.task for m in memories[:4])}); what fixed it in {fix.task}: "
            f"{fix.summary.strip()[:300] or 'see that task'}"
        )
    return hints


async def recall(
    bus: Bus, task: TaskState, ticket: TicketState | None, *, limit: int, timeout_s: float
) -> MemoryAnswer | None:
    """The past tasks most like this one, or None when no recorder answers in time."""
    query = MemoryQuery(text=query_text(task, ticket), limit=limit, exclude_ticket=task.ticket_id)
    try:
        raw = await bus.request(c.MEMORY_SEARCH, query.to_json(), timeout_s)
        answer = MemoryAnswer.model_validate_json(raw)
    except (BusError, ValidationError) as exc:
        log.info("no memory recalled for %s: %s", task.id, exc)
        return None
    return answer if answer.ok else None


def prompt_section(answer: MemoryAnswer | None, max_chars: int) -> str:
    """What the prompt says about similar past work, cut to `max_chars`."""
    if answer is None or not answer.hits:
        return ""
    lines = [
        "## Similar past work (from Omoi's memory)",
        "",
        "Earlier tasks like this one, and what they did; use what helps, ignore the rest.",
        "",
    ]
    for hint in answer.playbook:
        lines.append(f"- Playbook: {hint}")
    for hit in answer.hits:
        m = hit.memory
        entry = [f"### {m.title or m.ticket_id}: {m.task} ({m.phase})", ""]
        if m.summary:
            entry.append(f"Did: {m.summary.strip()}")
        if m.files:
            entry.append(f"Files: {', '.join(m.files[:10])}")
        if m.errors:
            entry.append(f"Went wrong first: {'; '.join(m.errors[:3])}")
        if m.feedback:
            entry.append(f"Gate feedback it addressed: {m.feedback.strip()[:300]}")
        if sum(len(line) + 1 for line in lines + entry) > max_chars:
            break
        lines += [*entry, ""]
    return "\n".join(lines).rstrip() + "\n" if len(lines) > 4 else ""

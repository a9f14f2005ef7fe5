"""Ask the model to plan a ticket: tasks per phase, as JSON the schemas validate.

Invalid output is retried once with the validation error; after that the workflow's
template stands. A generated graph passes the same checks as an explicit one.
"""

from __future__ import annotations

import json
import logging
import re

from pydantic import TypeAdapter, ValidationError

from agents.errors import InvalidTicket
from agents.llm.client import ModelClient, ModelError
from agents.planner.graph import validate_graph
from schemas import TaskSpec, TicketSubmission

log = logging.getLogger(__name__)

MARKER = "omoi:decompose"
ATTEMPTS = 2
_SPECS = TypeAdapter(list[TaskSpec])

SYSTEM = "You are a software project planner. You answer with JSON only."

INSTRUCTIONS = """{marker}
Break this ticket into tasks for a team of coding agents. The ticket moves through five
phases in order: requirements, design, implementation, testing, deployment. Every task
belongs to one phase and is done by a coding agent in a shared git repository.

Ticket: {title}
Priority: {priority}

{description}

Answer with one JSON object and nothing else:
{{"tasks": [{{"name": "kebab-case-id", "phase": "requirements", "capability": "agent",
  "instructions": "what the agent must do, precisely",
  "acceptance": ["a checkable criterion"], "depends_on": ["names of earlier tasks"]}}]}}
Rules: names are unique (letters, digits, - and _); every phase has at least one task;
a task depends only on tasks of its own or earlier phases; no cycles.
Requirements must write docs/requirements.md with a section "Acceptance criteria";
design must write docs/design.md; implementation writes code and tests; testing runs
the tests; deployment builds the package."""


def parse(text: str) -> list[TaskSpec]:
    """Tasks from a model's answer, or InvalidTicket saying exactly what is wrong."""
    body = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", body, re.S)
    if fenced:
        body = fenced.group(1).strip()
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise InvalidTicket(f"the answer is not JSON: {exc}", "invalid_decomposition") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
        raise InvalidTicket(
            'the answer must be an object with a "tasks" list', "invalid_decomposition"
        )
    try:
        specs = _SPECS.validate_python(raw["tasks"])
    except ValidationError as exc:
        raise InvalidTicket(f"invalid tasks: {exc}", "invalid_decomposition") from None
    if not specs:
        raise InvalidTicket("the plan has no tasks", "invalid_decomposition")
    validate_graph(specs)
    return specs


async def decompose(
    model: ModelClient, ticket_id: str, submission: TicketSubmission
) -> list[TaskSpec] | None:
    """The model's task graph for the ticket, or None to fall back to the template."""
    prompt = INSTRUCTIONS.format(
        marker=MARKER,
        title=submission.title,
        priority=submission.priority,
        description=submission.description or "(no description)",
    )
    for attempt in range(1, ATTEMPTS + 1):
        try:
            answer = await model.complete(SYSTEM, prompt)
        except ModelError as exc:
            log.warning("decomposing %s: model call failed: %s", ticket_id, exc)
            return None
        try:
            specs = parse(answer.text)
        except InvalidTicket as exc:
            log.warning("decomposing %s: attempt %d invalid: %s", ticket_id, attempt, exc.message)
            prompt = (
                f"{prompt}\n\nYour previous answer was rejected: {exc.message[:1500]}\n"
                f"Previous answer:\n{answer.text[:4000]}\n\nAnswer again, correctly."
            )
            continue
        log.info("decomposed %s into %d tasks", ticket_id, len(specs))
        return specs
    return None

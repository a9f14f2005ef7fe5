"""Turn raw intake bytes into a ticket and its tasks, or a precise reason why not."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agents.errors import InvalidTicket
from agents.planner import rights
from agents.planner.graph import validate_graph
from agents.planner.templates import Workflow, load_workflow, render
from schemas import TaskSpec, TaskState, TicketState, TicketSubmission
from schemas.common import ID_RE


@dataclass(frozen=True)
class Intake:
    ticket: TicketState
    tasks: list[TaskState]
    submission: TicketSubmission
    workflow: Workflow | None = None


def derive_ticket_id(data: bytes) -> str:
    """The client's id when it gave a usable one, else one derived from the bytes.

    Deriving it from the content means a redelivered (or re-sent) message maps to the
    same ticket instead of creating a second one.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raw = None
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and ID_RE.match(raw["id"]):
        return str(raw["id"])
    return "T-" + hashlib.sha256(data).hexdigest()[:12]


def parse_submission(data: bytes, max_bytes: int) -> TicketSubmission:
    if len(data) > max_bytes:
        raise InvalidTicket(
            f"payload is {len(data)} bytes; the limit is {max_bytes}", "payload_too_large"
        )
    try:
        decoded = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTicket(f"payload is not valid JSON: {exc}", "malformed_json") from exc
    except RecursionError as exc:
        raise InvalidTicket("payload JSON is nested too deeply", "malformed_json") from exc
    if not isinstance(decoded, dict):
        raise InvalidTicket("payload must be a JSON object", "invalid_ticket")
    try:
        return TicketSubmission.model_validate(decoded)
    except ValidationError as exc:
        raise InvalidTicket(_describe(exc), "invalid_ticket") from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def build(
    data: bytes,
    *,
    granted: Set[rights.Right],
    max_bytes: int,
    default_workflow: str,
    workflow_dirs: Sequence[Path] = (),
) -> Intake:
    """Validate a submission fully (schema, rights, template, graph) and build its
    initial state. `granted` are the rights of the subject it arrived on."""
    submission = parse_submission(data, max_bytes)
    rights.check(submission, granted)
    ticket_id = submission.id or derive_ticket_id(data)
    workflow: Workflow | None = None
    if submission.tasks is not None:
        specs = submission.tasks
    else:
        workflow = load_workflow(submission.workflow or default_workflow, workflow_dirs)
        specs = render(workflow, ticket_id, submission)
    return assemble(ticket_id, submission, specs, workflow)


def assemble(
    ticket_id: str,
    submission: TicketSubmission,
    specs: Sequence[TaskSpec],
    workflow: Workflow | None,
) -> Intake:
    """The ticket and its tasks from a validated graph (explicit, templated or generated)."""
    validate_graph(specs)
    tasks = [TaskState.from_spec(ticket_id, spec) for spec in specs]
    gates = submission.gates if submission.gates is not None else None
    if gates is None:
        gates = dict(workflow.gates) if workflow is not None else {}
    max_gate_attempts = submission.max_gate_attempts or (
        workflow.max_gate_attempts if workflow is not None else 3
    )
    ticket = TicketState(
        id=ticket_id,
        title=submission.title,
        description=submission.description,
        priority=submission.priority,
        workflow=workflow.name if workflow is not None else None,
        tasks=[t.name for t in tasks],
        repository=submission.repository,
        deliver=submission.delivers,
        source=submission.source,
        versioned=bool(
            gates or submission.repository or any(t.capability == "agent" for t in tasks)
        ),
        budget=submission.budget,
        gate_specs=gates,
        max_gate_attempts=max_gate_attempts,
        on_failure=submission.on_failure,
        on_conflict=submission.on_conflict,
    )
    return Intake(ticket=ticket, tasks=tasks, submission=submission, workflow=workflow)


def same_ticket(existing: TicketState, new: TicketState) -> bool:
    return (existing.title, existing.description, existing.tasks) == (
        new.title,
        new.description,
        new.tasks,
    )

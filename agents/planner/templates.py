"""Workflow templates: named TOML files that generate a ticket's tasks for every phase.

A template lists tasks like an explicit graph does. `${id}`, `${title}`,
`${description}`, `${priority}` and `${slug}` are replaced with the ticket's values; in a
`command` each value is shell-quoted, so a title can never inject shell syntax.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

from pydantic import Field, ValidationError

from agents.errors import InvalidTicket
from schemas import Phase, TaskSpec, TicketSubmission
from schemas.common import StrictWireModel
from schemas.gate import GateSpec

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "workflows"


class Workflow(StrictWireModel):
    name: str
    description: str = ""
    # Ask the model to plan the tasks; the template's tasks are the fallback.
    decompose: bool = False
    gates: dict[Phase, GateSpec] = Field(default_factory=dict)
    max_gate_attempts: int = Field(default=3, ge=1, le=20)
    tasks: list[dict[str, Any]] = Field(default_factory=list)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "ticket"


def find_workflow(name: str, search: Sequence[Path]) -> Path:
    for directory in [*search, SHIPPED_DIR]:
        candidate = directory / f"{name}.toml"
        if candidate.is_file():
            return candidate
    raise InvalidTicket(f"unknown workflow {name!r}", "unknown_workflow")


def load_workflow(name: str, search: Sequence[Path] = ()) -> Workflow:
    path = find_workflow(name, search)
    try:
        return Workflow.model_validate(tomllib.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise InvalidTicket(
            f"workflow {name!r} ({path}) is invalid: {exc}", "bad_workflow"
        ) from exc


def render(workflow: Workflow, ticket_id: str, submission: TicketSubmission) -> list[TaskSpec]:
    values = {
        "id": ticket_id,
        "title": submission.title,
        "description": submission.description,
        "priority": submission.priority,
        "slug": slugify(submission.title),
    }
    quoted = {k: shlex.quote(v) for k, v in values.items()}
    specs = []
    for raw in workflow.tasks:
        task = dict(raw)
        if isinstance(task.get("command"), str):
            task["command"] = Template(task["command"]).safe_substitute(quoted)
        if isinstance(task.get("instructions"), str):
            task["instructions"] = Template(task["instructions"]).safe_substitute(values)
        try:
            specs.append(TaskSpec.model_validate(task))
        except ValidationError as exc:
            raise InvalidTicket(
                f"workflow {workflow.name!r} has an invalid task: {exc}", "bad_workflow"
            ) from exc
    return specs


def available_workflows(search: Sequence[Path] = ()) -> list[str]:
    names: set[str] = set()
    for directory in [*search, SHIPPED_DIR]:
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.toml"))
    return sorted(names)

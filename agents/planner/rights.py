"""Who may run what: the rights a submission needs, decided from its payload alone.

A ticket's shell commands run on workers, its gate commands on validators, and a
local `repository` is read from the worker's disk: each is code or data of the
submitter's choosing on Omoi's machines. Delivering pushes to the repository (and opens
a pull request) with Omoi's credentials. Those are rights of their own. The planner
grants them by the intake subject a ticket arrived on (`TRUSTED_SUBMIT_SUBJECT`:
operators, and clients given that subject); plain submitters (`SUBMIT_SUBJECT`) get
none and may still submit everything else: titles, descriptions, agent tasks, file,
glob, diff and artifact gates, repository URLs, workflows by name.

Only what the payload itself carries counts. A workflow template's commands and gates
are the operator's configuration on the planner's machine, so a plain ticket may run
them; a plan the model generates for a plain ticket may not add commands (the planner
keeps the template instead).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Set
from enum import StrEnum

from agents import tools
from agents.errors import InvalidTicket
from agents.tools import ToolPlugin
from bus.constants import TRUSTED_SUBMIT_SUBJECT
from schemas import TaskSpec, TicketSubmission
from schemas.gate import CheckKind

FORBIDDEN = "forbidden"
# Remote git addresses: a URL with a network scheme and a host, or scp-like
# `user@host:path`. Anything else (a path, file://, git's `ext::` helpers) reads or runs
# something on the worker itself. A host may not start with "-" (it would be an option).
_URL = re.compile(
    r"^(?:https?|ssh|git|git\+ssh|ssh\+git)://(?:[^\s/@]+@)?[^\s/@-][^\s/@]*/\S*$", re.I
)
_SCP = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9][A-Za-z0-9.-]*:(?!:)\S+$")


class Right(StrEnum):
    SHELL_COMMANDS = "shell_commands"
    GATE_COMMANDS = "gate_commands"
    LOCAL_REPOSITORY = "local_repository"
    # Writing to the ticket's repository: its branch pushed, a pull request opened there
    # with Omoi's credentials.
    PUSH = "push"
    # Writing to the issue tracker (Jira comments, transitions) with Omoi's credentials.
    TRACKER = "tracker"
    # Changing a database (a Supabase migration) with Omoi's credentials.
    DATABASE = "database"


NONE: frozenset[Right] = frozenset()
ALL: frozenset[Right] = frozenset(Right)


def is_remote(repository: str) -> bool:
    return bool(_URL.match(repository) or _SCP.match(repository))


def runs_command(spec: TaskSpec) -> bool:
    """A shell task, or any task carrying a command (its executor would run it)."""
    return spec.capability == "shell" or spec.command is not None


def required(
    submission: TicketSubmission, plugins: Mapping[str, ToolPlugin] | None = None
) -> dict[Right, list[str]]:
    """Each right the submission needs, with what in it needs that right (a plugin tool's
    own rights too: `plugins`, the installed tools by default). InvalidTicket for a tool
    that is not installed."""
    needs: dict[Right, list[str]] = {}
    installed = tools.installed() if plugins is None else plugins
    for spec in submission.tasks or ():
        if runs_command(spec):
            needs.setdefault(Right.SHELL_COMMANDS, []).append(f"task {spec.name!r}")
        _tool_rights(spec, installed, needs)
    for phase, gate in (submission.gates or {}).items():
        for check in gate.checks:
            if check.kind is CheckKind.COMMAND:
                where = f"the {phase} gate's check {check.label!r}"
                needs.setdefault(Right.GATE_COMMANDS, []).append(where)
    if submission.repository is not None and not is_remote(submission.repository):
        needs[Right.LOCAL_REPOSITORY] = [f"repository {submission.repository!r}"]
    if submission.delivers:
        needs[Right.PUSH] = ["pushing its branch (set deliver: false to keep the result in Omoi)"]
    return needs


def _tool_rights(
    spec: TaskSpec, installed: Mapping[str, ToolPlugin], needs: dict[Right, list[str]]
) -> None:
    for name in spec.tools:
        plugin = installed.get(name)
        if plugin is None:
            known = ", ".join(sorted(installed)) or "none"
            raise InvalidTicket(
                f"task {spec.name!r} asks for tool {name!r}, which is not installed "
                f"(installed: {known})",
                "unknown_tool",
            )
        for right in plugin.rights:
            needs.setdefault(Right(right), []).append(f"tool {name!r} of task {spec.name!r}")


def required_rights(submission: TicketSubmission) -> set[Right]:
    return set(required(submission))


def plan_needs(specs: Iterable[TaskSpec]) -> bool:
    """Whether a generated plan carries commands."""
    return any(runs_command(spec) for spec in specs)


def check(submission: TicketSubmission, granted: Set[Right]) -> None:
    """InvalidTicket (category `forbidden`) naming what the submission may not ask for."""
    missing = {r: where for r, where in required(submission).items() if r not in granted}
    if not missing:
        return
    parts = [f"{_NOUN[r]} ({', '.join(where[:5])})" for r, where in missing.items()]
    raise InvalidTicket(
        f"this submission may not ask for {'; '.join(parts)}: that is a right of its own. "
        f"Submit it on {TRUSTED_SUBMIT_SUBJECT}, which only trusted clients may use, or leave "
        "those out (a workflow's own commands need no right)",
        FORBIDDEN,
    )


_NOUN = {
    Right.SHELL_COMMANDS: "shell commands",
    Right.GATE_COMMANDS: "gate commands",
    Right.LOCAL_REPOSITORY: "a local repository",
    Right.PUSH: "a push to its repository",
    Right.TRACKER: "writing to the issue tracker",
    Right.DATABASE: "changing a database",
}

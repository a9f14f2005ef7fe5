"""Phase gates: the checks a phase must pass, what running them found, and the verdict."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import PurePosixPath

from pydantic import Field, field_validator, model_validator

from schemas.common import WORK_PHASES, Phase, StrictWireModel, WireModel, utcnow

_LABEL_CHARS = 60


class CheckKind(StrEnum):
    FILE = "file"
    GLOB = "glob"
    DIFF = "diff"
    COMMAND = "command"
    ARTIFACT = "artifact"


_PATH_KINDS = frozenset({CheckKind.FILE, CheckKind.GLOB, CheckKind.ARTIFACT})


class CheckSpec(StrictWireModel):
    """One check of a gate. Fields that do not apply to the kind are rejected rather than
    ignored, so a typo'd gate fails at submission instead of passing vacuously."""

    kind: CheckKind
    name: str | None = Field(default=None, min_length=1, max_length=200)
    # file: a relative path; glob/artifact: a glob pattern relative to the repo root.
    path: str | None = Field(default=None, min_length=1, max_length=1000)
    # file: a regex (case-insensitive, multiline) the file's text must match.
    contains: str | None = Field(default=None, min_length=1, max_length=2000)
    # file and artifact: the minimum size, so an empty placeholder does not count.
    min_bytes: int = Field(default=1, ge=0)
    command: str | None = Field(default=None, max_length=20_000)
    timeout_s: float = Field(default=300.0, gt=0, le=24 * 3600)

    @field_validator("path")
    @classmethod
    def _path_stays_inside(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\0" in value:
            raise ValueError("path may not contain NUL characters")
        parts = PurePosixPath(value)
        if parts.is_absolute():
            raise ValueError(f"path {value!r} must be relative to the repository root")
        if ".." in parts.parts:
            raise ValueError(f"path {value!r} may not contain '..' components")
        if not parts.parts:
            raise ValueError(f"path {value!r} does not name anything inside the repository")
        return value

    @field_validator("contains")
    @classmethod
    def _contains_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value, re.I | re.M)
            except re.error as exc:
                raise ValueError(f"contains is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> CheckSpec:
        kind = self.kind
        if kind in _PATH_KINDS and self.path is None:
            raise ValueError(f"a {kind} check needs a path")
        if kind not in _PATH_KINDS and self.path is not None:
            raise ValueError(f"a {kind} check takes no path")
        if kind is CheckKind.COMMAND and not (self.command or "").strip():
            raise ValueError("a command check needs a non-empty command")
        if kind is not CheckKind.COMMAND and self.command is not None:
            raise ValueError(f"a {kind} check takes no command")
        if kind is not CheckKind.FILE and self.contains is not None:
            raise ValueError(f"only file checks take 'contains', not {kind}")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind is CheckKind.DIFF:
            return "diff"
        if self.kind is CheckKind.COMMAND:
            text = " ".join((self.command or "").split())
            if len(text) > _LABEL_CHARS:
                text = text[: _LABEL_CHARS - 1] + "…"
            return f"command: {text}"
        return f"{self.kind} {self.path}"


class GateSpec(StrictWireModel):
    checks: list[CheckSpec] = Field(default_factory=list)
    # Ask the model for a review against the acceptance criteria.
    review: bool = False
    # Where a fix task goes when this gate fails; None means the gate's own phase.
    fix_phase: Phase | None = None
    # The capability of the fix task a failed gate queues.
    fix_capability: str = Field(default="agent", pattern=r"^[a-z][a-z0-9_-]{0,31}$")

    @field_validator("fix_phase")
    @classmethod
    def _fix_in_work_phase(cls, value: Phase | None) -> Phase | None:
        if value is not None and value not in WORK_PHASES:
            raise ValueError(f"fix_phase must be a work phase, not {value}")
        return value


class CheckResult(WireModel):
    name: str
    kind: CheckKind
    passed: bool
    detail: str
    exit_code: int | None = None
    output_tail: str = ""
    duration_s: float = 0.0
    # Relative path -> sha256 hex of the files the check looked at: the evidence.
    files: dict[str, str] = Field(default_factory=dict)


class GateVerdict(WireModel):
    ticket_id: str
    phase: Phase
    attempt: int
    passed: bool
    commit: str | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    review: str | None = None
    # What a fixer needs to know: the failed checks with details and output tails.
    feedback: str = ""
    at: datetime = Field(default_factory=utcnow)


class GateRequest(WireModel):
    ticket_id: str
    phase: Phase
    attempt: int
    # Deprecated and ignored: requests used to carry a local path to the workspace. The
    # validator takes the ticket's published workspace (`omoi_workspaces`) instead; an
    # older request in flight still parses.
    workspace: str | None = Field(default=None, exclude=True)
    # The diff base: the commit the phase started from.
    base_commit: str | None = None
    # The commit to check: the workspace's head when the phase's last task finished.
    commit: str | None = None
    spec: GateSpec
    # Acceptance criteria gathered from the ticket's tasks.
    acceptance: list[str] = Field(default_factory=list)
    title: str = ""
    description: str = ""

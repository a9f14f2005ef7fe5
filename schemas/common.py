"""Shared building blocks for the wire models: identifiers, phases, timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, StringConstraints

# Ids end up as NATS subject tokens and KV keys, so they may not contain dots,
# spaces or wildcards.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ID_RE = re.compile(ID_PATTERN)

Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Phase(StrEnum):
    REQUIREMENTS = "requirements"
    DESIGN = "design"
    IMPLEMENTATION = "implementation"
    TESTING = "testing"
    DEPLOYMENT = "deployment"
    DONE = "done"
    BLOCKED = "blocked"


# The phases that own tasks, in the order a ticket walks through them.
WORK_PHASES: tuple[Phase, ...] = (
    Phase.REQUIREMENTS,
    Phase.DESIGN,
    Phase.IMPLEMENTATION,
    Phase.TESTING,
    Phase.DEPLOYMENT,
)


class WireModel(BaseModel):
    """Inbound-tolerant base: unknown fields from newer peers are ignored."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class StrictWireModel(BaseModel):
    """Base for what users type by hand: unknown fields are an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class ErrorInfo(WireModel):
    """An error as it travels: a machine-readable category and a human message."""

    category: str
    message: str


# A ticket's priority; its tasks wait in the urgent lane when "high" or "critical"
# (bus/constants.py: LANES).
Priority = Literal["low", "normal", "high", "critical"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)  # lowest first

"""What an agent says about itself on the NATS service API, and what a search finds.

An agent's card is what it is, fixed for its life: it travels as the metadata of its micro
service, whose values are strings, so lists are comma-separated there. Its status is what
it is doing now, read live (see `bus/registry.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from pydantic import Field

from schemas.common import WireModel
from schemas.task import LABEL_PATTERN

LABEL_RE = re.compile(LABEL_PATTERN)
_LISTS = ("phases", "capabilities", "labels")


def check_label(label: str) -> str:
    """`label`, if it is one: labels are tokens like capabilities (`gpu`, `linux-arm64`)."""
    if not LABEL_RE.match(label):
        raise ValueError(
            f"label {label!r}: up to 32 lower-case letters, digits, '-' and '_', "
            "starting with a letter, optionally followed by ':' and a value (model:gpt-4o)"
        )
    return label


def split_list(value: object) -> object:
    """`"a, b"` and `["a,b", "c"]` alike become `("a", "b", "c")`; anything else is left
    for validation to refuse."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(part.strip() for v in value for part in v.split(",") if part.strip())
    return value


class AgentCard(WireModel):
    """Who an agent is and what it takes: the metadata of its service."""

    role: str
    agent_id: str
    omoi_version: str
    host: str = ""
    pid: int = 0
    phases: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list)
    # Tasks a worker runs at once; None for agents that run no tasks.
    slots: int | None = None

    def metadata(self) -> dict[str, str]:
        meta = {
            "role": self.role,
            "agent_id": self.agent_id,
            "omoi_version": self.omoi_version,
            "host": self.host,
            "pid": str(self.pid),
            **{name: ",".join(getattr(self, name)) for name in _LISTS},
        }
        if self.slots is not None:
            meta["slots"] = str(self.slots)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> AgentCard:
        """The card in a service's metadata; ValidationError if it is not one."""
        values: dict[str, object] = dict(meta)
        for name in _LISTS:
            values[name] = [v for v in str(meta.get(name, "")).split(",") if v]
        return cls.model_validate(values)


class AgentStatus(WireModel):
    """What an agent is doing now: the STATS data of its `status` endpoint, and that
    endpoint's answer."""

    ready: bool = False
    current_task: str | None = None
    # A worker's load: tasks running now (`tasks`) out of `slots`.
    running: int | None = None
    slots: int | None = None
    tasks: list[str] = Field(default_factory=list)
    # A planner's share of the tickets: the partitions it owns now.
    partitions: list[int] | None = None


class AgentListing(AgentCard):
    """A live agent as a search found it: its card, its service, and its status then."""

    service: str
    service_id: str
    started: datetime | None = None
    status_subject: str | None = None
    status: AgentStatus | None = None

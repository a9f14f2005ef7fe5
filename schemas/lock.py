"""Resource claims (what a task declares) and locks (what `omoi_locks` holds).

A task declares `resources`: named ones (`db:migrations`, `service:payments`), global
across tickets, and paths or globs in its workspace (`src/api/**`, `path:docs/*.md`), per
ticket. Each is `exclusive` (the default) or `shared`. Two claims conflict when they
overlap and either is exclusive.

A lock is one key of `omoi_locks`: `named.<kind>.<name>` for a named resource, and
`paths.<ticket>` for a ticket's paths. Its value lists the holders, each with a lease
(`expires_at`, renewed while the task runs) and a fencing token: a number that only grows
per key, so a holder that lost its lease (and whose token is gone) can be told apart
from the one holding it now.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from schemas.common import StrictWireModel, WireModel

LockMode = Literal["shared", "exclusive"]
_NAMED = re.compile(r"^(?P<kind>[a-z][a-z0-9_-]{0,31}):(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
_PATH = re.compile(r"^[A-Za-z0-9_.*?\[\]{}-][A-Za-z0-9_./*?\[\]{}-]{0,499}$")
_WILD = re.compile(r"[*?\[{]")


class ResourceClaim(StrictWireModel):
    """One resource a task uses. Written as an object, or as a string: `"db:migrations"`,
    `"src/**"` (exclusive), or with the mode first, `"shared:db:migrations"`."""

    name: str
    mode: LockMode = "exclusive"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            mode, sep, rest = value.partition(":")
            if sep and mode in ("shared", "exclusive"):
                return {"name": rest, "mode": mode}
            return {"name": value}
        return value

    @model_validator(mode="after")
    def _check(self) -> ResourceClaim:
        name = self.name
        if name.startswith("path:"):
            name = name[len("path:") :]
        elif _NAMED.match(name):
            return self
        elif ":" in name:
            raise ValueError(
                f"resource {self.name!r} is neither a named resource (kind:name, e.g. "
                "db:migrations) nor a path"
            )
        if not _PATH.match(name) or ".." in name.split("/") or "//" in name:
            raise ValueError(
                f"resource {self.name!r} is not a relative path or glob inside the workspace"
            )
        return self

    @property
    def is_path(self) -> bool:
        return _NAMED.match(self.name) is None

    @property
    def path(self) -> str:
        return self.name.removeprefix("path:")

    def key(self, ticket_id: str) -> str:
        """The `omoi_locks` key that holds this claim's lock."""
        if self.is_path:
            return f"paths.{ticket_id}"
        kind, _, name = self.name.partition(":")
        return f"named.{kind}.{name}"

    def overlaps(self, other: ResourceClaim) -> bool:
        if self.is_path != other.is_path:
            return False
        if not self.is_path:
            return self.name == other.name
        return _paths_overlap(self.path, other.path)

    def conflicts(self, other: ResourceClaim) -> bool:
        return "exclusive" in (self.mode, other.mode) and self.overlaps(other)


def _paths_overlap(a: str, b: str) -> bool:
    """Whether two globs may name a common file, decided on their literal leading
    directories: it may say yes for globs that never meet, never no for ones that do. A
    literal path covers what is beneath it (`src` and `src/app.py` overlap)."""

    def fixed(glob: str) -> list[str]:
        out = []
        for part in glob.split("/"):
            if _WILD.search(part):
                break
            out.append(part)
        return out

    fa, fb = fixed(a), fixed(b)
    common = min(len(fa), len(fb))
    return fa[:common] == fb[:common]


def conflicting(claims: list[ResourceClaim], others: list[ResourceClaim]) -> bool:
    return any(a.conflicts(b) for a in claims for b in others)


class LockHolder(WireModel):
    task: str  # the task id, `<ticket>.<name>`
    worker: str
    resource: str
    mode: LockMode
    token: int
    expires_at: datetime


class LockState(WireModel):
    """One key of `omoi_locks`: who holds it now, and the last fencing token given."""

    key: str
    fence: int = 0
    holders: list[LockHolder] = Field(default_factory=list)

"""Tools a coding agent may be given beyond Omoi's own: OpenHands tools packaged as Python
entry points in the group `omoi.tools`, named in a task's (or a workflow task's) `tools`.

An entry point names a `ToolPlugin`: the tool's name, what it says it does, the rights
(agents/planner/rights.py) a ticket must hold to use it, and `build`, which the coding
agent's session calls (in its own process, with the SDK imported) to register the tool's
OpenHands definitions and return their names. A plugin's module must not import the SDK
at import time: the planner loads it to check rights and names, and never imports the SDK.

    [project.entry-points."omoi.tools"]
    my_tool = "my_package.omoi_tool:PLUGIN"

Omoi ships `discover` (agents/tools/discover.py), given to every coding agent, and
`github`, `jira` and `supabase` (agents/tools/integrations.py), which a task declares.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "omoi.tools"
# Every coding agent has these, declared or not.
DEFAULT_TOOLS = ("discover",)


@dataclass(frozen=True)
class ToolContext:
    """What a tool gets in the session: a line to the worker (JSON lines on stdout, which
    the worker turns into NATS messages: a session never holds Omoi's credentials), the
    workspace, and the task. `call(tool, op, args)` is an integration call (its answer's
    text), made for the session by the delivery agent (schemas/integration.py)."""

    emit: Callable[[Any], None]
    workspace: Path
    task_id: str
    call: Callable[[str, str, dict[str, Any]], str] = lambda tool, op, args: "not connected"


@dataclass(frozen=True)
class ToolPlugin:
    name: str
    description: str
    build: Callable[[ToolContext], list[str]]
    # Names of the rights (agents.planner.rights.Right) a ticket needs to use it.
    rights: frozenset[str] = field(default_factory=frozenset)


@functools.cache
def installed() -> Mapping[str, ToolPlugin]:
    """The tools installed in this environment, by name (a broken one is left out, logged)."""
    found: dict[str, ToolPlugin] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = point.load()
        except Exception as exc:  # noqa: BLE001 - someone else's package: never ours to crash on
            log.warning("tool %s (%s) cannot be loaded: %r", point.name, point.value, exc)
            continue
        if not isinstance(plugin, ToolPlugin) or plugin.name != point.name:
            log.warning("entry point %s is no ToolPlugin named so; left out", point.value)
            continue
        found[plugin.name] = plugin
    return found


def for_task(declared: list[str]) -> list[str]:
    """The tools a coding task gets: Omoi's defaults, then what it declared."""
    return list(dict.fromkeys([*DEFAULT_TOOLS, *declared]))

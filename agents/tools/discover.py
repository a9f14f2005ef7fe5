"""The `discover` tool: a coding agent reports more work it noticed (a bug, a missing test,
a follow-up). The report goes to the worker as a line, and from there to the planner as a
`discovery.reported` event; the planner judges it (agents/planner/discoveries.py). The
agent is told it was reported, not what became of it: the planner decides later.

This module is the plugin; its OpenHands definitions are in `discover_tool`, imported
only by the session that builds it (the planner, which reads the plugin, has no SDK).
"""

from __future__ import annotations

from agents.tools import ToolContext, ToolPlugin


def build(ctx: ToolContext) -> list[str]:
    from agents.tools.discover_tool import register

    return register(ctx.emit)


PLUGIN = ToolPlugin(
    name="discover",
    description="Report a bug, a missing test or a follow-up for the planner to judge.",
    build=build,
)

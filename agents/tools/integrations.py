"""The integration tools Omoi ships: `github`, `jira` and `supabase`, each a few OpenHands
tools a task declares in its `tools`. None of them holds a credential: a call goes as a line
to the worker and from there to the delivery agent (schemas/integration.py), which checks
that the task declared the tool, keeps the call to the ticket's own repository, Jira project
or the configured Supabase project, and makes it.

The rights they need (agents/planner/rights.py): `push` for GitHub (writing with Omoi's
credentials), `tracker` for Jira, `database` for Supabase (a migration changes a database).
Their OpenHands definitions are in `integration_tools`, imported only by the session.
"""

from __future__ import annotations

from agents.tools import ToolContext, ToolPlugin


def _builder(tool: str):  # type: ignore[no-untyped-def]
    def build(ctx: ToolContext) -> list[str]:
        from agents.tools.integration_tools import register

        return register(tool, ctx.call)

    return build


GITHUB = ToolPlugin(
    name="github",
    description="Read an issue, comment on it, open a pull request, read review comments "
    "(the ticket's repository).",
    build=_builder("github"),
    rights=frozenset({"push"}),
)
JIRA = ToolPlugin(
    name="jira",
    description="Read a Jira issue, comment on it, move it to a status (the ticket's project).",
    build=_builder("jira"),
    rights=frozenset({"tracker"}),
)
SUPABASE = ToolPlugin(
    name="supabase",
    description="Run a migration against the configured Supabase project; read a table's schema.",
    build=_builder("supabase"),
    rights=frozenset({"database"}),
)

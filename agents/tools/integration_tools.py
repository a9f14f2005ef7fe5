"""The OpenHands definitions of the GitHub, Jira and Supabase tools. Imported only in a
coding agent's session (it imports the SDK). Every class is module-level: a resumed
conversation reads its stored actions back by class.

Each action's fields are its call's arguments; the executor sends them as one integration
call (`ToolContext.call`) and shows the agent the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from openhands.sdk.tool import Action, Observation, ToolDefinition, ToolExecutor, register_tool
from pydantic import Field

Call = Callable[[str, str, dict[str, Any]], str]


class IntegrationObservation(Observation):
    pass


class IntegrationExecutor(ToolExecutor):  # type: ignore[type-arg]
    def __init__(self, call: Call, tool: str, op: str) -> None:
        self.call, self.tool, self.op = call, tool, op

    def __call__(self, action: Any, conversation: Any = None) -> IntegrationObservation:
        args = action.model_dump(exclude={"kind"}, exclude_none=True)
        return IntegrationObservation.from_text(text=self.call(self.tool, self.op, args))


class _Made(ToolDefinition[Action, IntegrationObservation]):
    @classmethod
    def create(cls, conv_state: Any = None, **params: Any) -> Sequence[Any]:
        raise ValueError("made by agents.tools.integration_tools.register")


# GitHub: the ticket's repository only.
class GithubReadIssueAction(Action):
    number: int = Field(description="The issue's (or pull request's) number.")


class GithubCommentAction(Action):
    number: int = Field(description="The issue's or pull request's number.")
    body: str = Field(description="The comment, in Markdown.")


class GithubOpenPullRequestAction(Action):
    title: str = Field(description="The pull request's title.")
    head: str = Field(description="The branch with the changes.")
    base: str | None = Field(
        default=None, description="The branch to merge into (default: the repository's)."
    )
    body: str = Field(default="", description="What it changes and why, in Markdown.")


class GithubReviewCommentsAction(Action):
    number: int = Field(description="The pull request's number.")


class GithubReadIssueTool(_Made):
    name = "github_read_issue"


class GithubCommentTool(_Made):
    name = "github_comment"


class GithubOpenPullRequestTool(_Made):
    name = "github_open_pull_request"


class GithubReviewCommentsTool(_Made):
    name = "github_review_comments"


# Jira: issues of the ticket's project.
class JiraReadAction(Action):
    key: str | None = Field(
        default=None, description="The issue key (default: the ticket's issue)."
    )


class JiraCommentAction(Action):
    body: str = Field(description="The comment.")
    key: str | None = Field(
        default=None, description="The issue key (default: the ticket's issue)."
    )


class JiraTransitionAction(Action):
    status: str = Field(description="The status to move the issue to, e.g. In Review.")
    key: str | None = Field(
        default=None, description="The issue key (default: the ticket's issue)."
    )


class JiraReadTool(_Made):
    name = "jira_read"


class JiraCommentTool(_Made):
    name = "jira_comment"


class JiraTransitionTool(_Made):
    name = "jira_transition"


# Supabase: the configured project.
class SupabaseMigrateAction(Action):
    name: str = Field(description="The migration's name, snake_case (applied once by name).")
    query: str = Field(description="The migration's SQL.")


class SupabaseTableSchemaAction(Action):
    table: str = Field(description="The table's name.")
    table_schema: str = Field(default="public", description="Its schema.")


class SupabaseMigrateTool(_Made):
    name = "supabase_migrate"


class SupabaseTableSchemaTool(_Made):
    name = "supabase_table_schema"


TOOLS: dict[str, list[tuple[type[_Made], type[Action], str, str]]] = {
    "github": [
        (GithubReadIssueTool, GithubReadIssueAction, "read_issue",
         "Read an issue of the ticket's GitHub repository: title, body, labels, comments."),
        (GithubCommentTool, GithubCommentAction, "comment",
         "Comment on an issue or pull request of the ticket's GitHub repository."),
        (GithubOpenPullRequestTool, GithubOpenPullRequestAction, "open_pull_request",
         "Open a pull request in the ticket's GitHub repository from a pushed branch."),
        (GithubReviewCommentsTool, GithubReviewCommentsAction, "review_comments",
         "Read the review comments of a pull request in the ticket's GitHub repository."),
    ],
    "jira": [
        (JiraReadTool, JiraReadAction, "read",
         "Read a Jira issue: summary, status, description, comments."),
        (JiraCommentTool, JiraCommentAction, "comment", "Comment on a Jira issue."),
        (JiraTransitionTool, JiraTransitionAction, "transition", "Move a Jira issue to a status."),
    ],
    "supabase": [
        (SupabaseMigrateTool, SupabaseMigrateAction, "migrate",
         "Apply a named SQL migration to the configured Supabase project's database."),
        (SupabaseTableSchemaTool, SupabaseTableSchemaAction, "table_schema",
         "Read a table's columns (name, type, nullable, default) in the Supabase project."),
    ],
}  # fmt: skip


def register(tool: str, call: Call) -> list[str]:
    names = []
    for tool_class, action_type, op, description in TOOLS[tool]:
        register_tool(
            tool_class.name,
            tool_class(
                description=description,
                action_type=action_type,
                observation_type=IntegrationObservation,
                executor=IntegrationExecutor(call, tool, op),
            ),
        )
        names.append(tool_class.name)
    return names

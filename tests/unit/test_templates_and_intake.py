"""Workflow templates (loading, shell-safe rendering) and intake parsing."""

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agents.errors import InvalidTicket
from agents.planner import rights
from agents.planner.intake import build, derive_ticket_id, parse_submission
from agents.planner.templates import available_workflows, load_workflow, render, slugify
from schemas import Phase, TaskStatus, TicketSubmission

NASTY = "\"; rm -rf / $(whoami) 'x' `id` %s \\n"
DEFAULT_NAMES = ["requirements", "design", "implement-code", "implement-docs", "test", "deploy"]


def payload(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def invalid(call: Any, *args: Any, **kw: Any) -> InvalidTicket:
    with pytest.raises(InvalidTicket) as info:
        call(*args, **kw)
    return info.value


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=cwd, timeout=10, capture_output=True, text=True
    )


# templates


def test_default_workflow_renders_titles_shell_quoted() -> None:
    submission = TicketSubmission(title=NASTY, description="$HOME and `id`")
    specs = render(load_workflow("default"), "T-1", submission)
    assert [s.name for s in specs] == DEFAULT_NAMES
    assert all(s.command and "${" not in s.command for s in specs)
    by_name = {s.name: s for s in specs}
    assert shlex.quote(submission.title) in (by_name["requirements"].command or "")
    assert shlex.quote("$HOME and `id`") in (by_name["requirements"].command or "")
    assert slugify(NASTY) in (by_name["deploy"].command or "")


def test_rendered_default_workflow_runs_without_injection(tmp_path: Path) -> None:
    submission = TicketSubmission(title=NASTY, description="$HOME and `id`")
    specs = render(load_workflow("default"), "T-1", submission)
    for spec in specs:
        done = sh(spec.command or "", tmp_path)
        assert done.returncode == 0, (spec.name, done.stderr)
    requirements = (tmp_path / "docs" / "requirements.md").read_text()
    assert f"# Requirements for {submission.title}\n" in requirements
    assert "$HOME and `id`" in requirements
    assert submission.title in (tmp_path / "docs" / "design.md").read_text()
    assert (tmp_path / "dist" / f"{slugify(NASTY)}.tar.gz").is_file()


def test_requirements_command_alone_writes_the_literal_title(tmp_path: Path) -> None:
    title = "\"; rm -rf / $(whoami) 'x'"
    specs = render(load_workflow("default"), "T-2", TicketSubmission(title=title))
    done = sh(specs[0].command or "", tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "docs" / "requirements.md").read_text()
    assert title in text
    assert "$(whoami)" in text


@pytest.mark.parametrize(
    ("title", "slug"),
    [("Add Login Page!", "add-login-page"), ("  ***  ", "ticket"), ("Ünïcode x", "n-code-x")],
)
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug


def test_unknown_workflow() -> None:
    err = invalid(load_workflow, "no-such-workflow")
    assert err.category == "unknown_workflow"
    assert "no-such-workflow" in err.message
    data = payload(title="t", workflow="missing")
    assert invalid(
        build, data, granted=rights.ALL, max_bytes=99, default_workflow="default"
    ).category == ("unknown_workflow")


def test_user_workflow_dir_is_searched_first(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text('name = "x"\n[[tasks]]\nname = "only"\nphase = "design"\n')
    (tmp_path / "default.toml").write_text('name = "mine"\n')
    assert load_workflow("x", [tmp_path]).tasks == [{"name": "only", "phase": "design"}]
    assert load_workflow("default", [tmp_path]).name == "mine"
    assert load_workflow("default").name == "default"
    assert {"x", "default"} <= set(available_workflows([tmp_path]))
    assert "x" not in available_workflows()


@pytest.mark.parametrize("text", ["name = [unclosed", 'name = "y"\nsurprise = 1\n', "tasks = 3"])
def test_invalid_workflow_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "y.toml").write_text(text)
    err = invalid(load_workflow, "y", [tmp_path])
    assert err.category == "bad_workflow"
    assert "'y'" in err.message


def test_workflow_with_an_invalid_task_fails_to_render(tmp_path: Path) -> None:
    (tmp_path / "z.toml").write_text('name = "z"\n[[tasks]]\nname = "a"\nphase = "later"\n')
    err = invalid(render, load_workflow("z", [tmp_path]), "T-1", TicketSubmission(title="t"))
    assert err.category == "bad_workflow"


def test_a_workflows_tasks_name_tools_that_a_plain_ticket_may_use(tmp_path: Path) -> None:
    (tmp_path / "gh.toml").write_text(
        'name = "gh"\n[[tasks]]\nname = "fix"\nphase = "implementation"\n'
        'capability = "agent"\ninstructions = "Fix ${title}"\ntools = ["github"]\n'
    )
    body = json.dumps({"title": "the limiter", "workflow": "gh"}).encode()
    made = build(body, granted=rights.NONE, max_bytes=10_000, default_workflow="default",
                 workflow_dirs=[tmp_path])  # fmt: skip
    (fix,) = made.tasks
    assert fix.tools == ["github"] and fix.instructions == "Fix the limiter"
    # The same tool in the plain submission's own task needs its right (push).
    own = {"title": "t", "tasks": [{"name": "x", "phase": "implementation",
                                    "capability": "agent", "tools": ["github"]}]}  # fmt: skip
    err = invalid(build, json.dumps(own).encode(), granted=rights.NONE, max_bytes=10_000,
                  default_workflow="default")  # fmt: skip
    assert err.category == "forbidden" and "tool 'github'" in err.message


# intake


def test_derive_ticket_id_prefers_a_valid_client_id() -> None:
    assert derive_ticket_id(payload(id="abc-1_X", title="t")) == "abc-1_X"


@pytest.mark.parametrize(
    "data",
    [b"not json", b"\xff\xfe", b"[1, 2]", payload(title="t"), payload(id="a.b"), payload(id=7)],
)
def test_derive_ticket_id_falls_back_to_a_content_hash(data: bytes) -> None:
    derived = derive_ticket_id(data)
    assert re.fullmatch(r"T-[0-9a-f]{12}", derived)
    assert derive_ticket_id(data) == derived
    assert derive_ticket_id(data + b" ") != derived


def test_parse_submission_size_limit() -> None:
    data = payload(title="t")
    assert parse_submission(data, len(data)).title == "t"
    err = invalid(parse_submission, data, len(data) - 1)
    assert err.category == "payload_too_large"
    assert str(len(data)) in err.message


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff{}"])
def test_parse_submission_malformed_json(data: bytes) -> None:
    assert invalid(parse_submission, data, 1000).category == "malformed_json"


def test_parse_submission_deeply_nested_json_is_rejected_cleanly() -> None:
    assert invalid(parse_submission, b"[" * 100_000, 1_000_000).category == "malformed_json"


def test_derive_ticket_id_survives_deeply_nested_json() -> None:
    assert re.fullmatch(r"T-[0-9a-f]{12}", derive_ticket_id(b"[" * 100_000))


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"[]", "JSON object"),
        (b'"title"', "JSON object"),
        (payload(title="t", colour="red"), "colour"),
        (payload(title="   "), "title"),
        (payload(description="no title"), "title"),
        (payload(title=123), "title"),
        (payload(title="t", tasks="nope"), "tasks"),
        (payload(title="t", priority="urgent"), "priority"),
        (payload(title="t", id="a.b"), "id"),
    ],
)
def test_parse_submission_invalid_ticket(data: bytes, where: str) -> None:
    err = invalid(parse_submission, data, 10_000)
    assert err.category == "invalid_ticket"
    assert where in err.message


def test_build_explicit_tasks() -> None:
    data = payload(
        id="T1",
        title="  Explicit  ",
        tasks=[
            {"name": "a", "phase": "requirements", "command": "true"},
            {"name": "b", "phase": "testing", "command": "true", "depends_on": ["a"]},
        ],
    )
    intake = build(data, granted=rights.ALL, max_bytes=10_000, default_workflow="default")
    assert intake.ticket.id == "T1"
    assert intake.ticket.title == "Explicit"
    assert intake.ticket.workflow is None
    assert intake.ticket.tasks == ["a", "b"]
    assert [t.id for t in intake.tasks] == ["T1.a", "T1.b"]
    assert all(t.status is TaskStatus.BLOCKED for t in intake.tasks)
    assert intake.tasks[1].depends_on == ["a"]


def test_build_rejects_a_bad_graph() -> None:
    data = payload(
        title="t", tasks=[{"name": "a", "phase": "design", "command": "true", "depends_on": ["a"]}]
    )
    err = invalid(build, data, granted=rights.ALL, max_bytes=10_000, default_workflow="default")
    assert err.category == "dependency_cycle"


def test_build_default_workflow() -> None:
    data = payload(title="Make it so")
    intake = build(data, granted=rights.ALL, max_bytes=10_000, default_workflow="default")
    assert intake.ticket.id == derive_ticket_id(data)
    assert intake.ticket.workflow == "default"
    assert intake.ticket.tasks == DEFAULT_NAMES
    assert intake.tasks[0].phase is Phase.REQUIREMENTS
    assert intake.tasks[-1].phase is Phase.DEPLOYMENT
    assert "'Make it so'" in (intake.tasks[0].command or "")


@pytest.mark.parametrize(
    ("extra", "versioned"),
    [
        ({}, False),
        ({"workflow": "agent"}, True),
        ({"repository": "/srv/repo.git"}, True),
        (
            {"tasks": [{"name": "a", "phase": "design", "capability": "agent",
                        "instructions": "think"}]},
            True,
        ),
        ({"tasks": [{"name": "a", "phase": "design", "command": "true"}]}, False),
    ],
)  # fmt: skip
def test_only_tickets_that_need_git_get_a_versioned_workspace(
    extra: dict[str, Any], versioned: bool
) -> None:
    data = json.dumps({"title": "x", **extra}).encode()
    intake = build(data, granted=rights.ALL, max_bytes=10_000, default_workflow="default")
    assert intake.ticket.versioned is versioned

"""Gate check specs and the check runner, against real temporary git repositories."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agents.validator.checks import (
    EMPTY_TREE,
    OUTPUT_TAIL_BYTES,
    GateError,
    clean_copy,
    feedback,
    run_checks,
    verdict_passed,
)
from schemas.common import Phase
from schemas.gate import (
    CheckKind,
    CheckResult,
    CheckSpec,
    GateRequest,
    GateSpec,
    GateVerdict,
)

K = CheckKind
REQUIREMENTS = "# Requirements\n\n## Acceptance Criteria\n- it works\n"
ENV = {"PATH": os.environ.get("PATH", os.defpath), "GATE_VAR": "from-env"}


def git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(repo.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    ident = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
    proc = subprocess.run(
        ["git", *ident, *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "change") -> str:
    for rel, text in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, list[str]]:
    """A workspace with two commits: a README, then requirements and two tests."""
    repo = new_repo(tmp_path / "ws")
    first = commit(repo, {"README.md": "hello\n"}, "first")
    second = commit(
        repo,
        {
            "docs/requirements.md": REQUIREMENTS,
            "tests/test_a.py": "def test_a(): pass\n",
            "tests/test_b.py": "def test_b(): pass\n",
        },
        "second",
    )
    return repo, [first, second]


@pytest.fixture
def copy(tmp_path: Path, workspace: tuple[Path, list[str]]) -> Path:
    dest = tmp_path / "gate" / "copy"
    clean_copy(workspace[0], dest)
    return dest


async def run_one(repo: Path, base: str | None = None, **spec: Any) -> CheckResult:
    [result] = await run_checks(
        GateSpec(checks=[CheckSpec(**spec)]), repo, base_commit=base, env=ENV
    )
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A killed orphan may linger as a zombie until init reaps it; it is dead all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def wait_until(predicate: Any, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


# --- clean copies ---------------------------------------------------------------------


def test_clean_copy_holds_only_committed_state(
    tmp_path: Path, workspace: tuple[Path, list[str]]
) -> None:
    repo, shas = workspace
    (repo / "untracked.md").write_text("not committed\n")
    (repo / "README.md").write_text("edited, not committed\n")
    git(repo, "add", "untracked.md")  # staged is not committed either
    dest = tmp_path / "gate" / "copy"
    assert clean_copy(repo, dest) == shas[1]
    assert not (dest / "untracked.md").exists()
    assert (dest / "README.md").read_text() == "hello\n"
    assert (dest / "docs" / "requirements.md").read_text() == REQUIREMENTS


def test_clean_copy_checks_out_a_given_commit(
    tmp_path: Path, workspace: tuple[Path, list[str]]
) -> None:
    repo, shas = workspace
    dest = tmp_path / "gate" / "old"
    assert clean_copy(repo, dest, shas[0]) == shas[0]
    assert (dest / "README.md").exists()
    assert not (dest / "docs").exists()


def test_clean_copy_failures_raise_gate_error(
    tmp_path: Path, workspace: tuple[Path, list[str]]
) -> None:
    with pytest.raises(GateError, match="clone") as info:
        clean_copy(tmp_path / "missing", tmp_path / "gate" / "a")
    assert "does not exist" in info.value.message  # git's own stderr
    with pytest.raises(GateError, match=r"commit 0{40} is not in the workspace"):
        clean_copy(workspace[0], tmp_path / "gate" / "b", "0" * 40)
    with pytest.raises(GateError, match="invalid commit"):
        clean_copy(workspace[0], tmp_path / "gate" / "c", "--orphan")
    empty = new_repo(tmp_path / "empty")
    with pytest.raises(GateError, match="rev-parse"):
        clean_copy(empty, tmp_path / "gate" / "d")


# --- file, glob and artifact checks ---------------------------------------------------


async def test_file_check_passes_with_hash_evidence(copy: Path) -> None:
    result = await run_one(
        copy, kind=K.FILE, path="docs/requirements.md", contains="^## acceptance criteria"
    )
    assert result.passed, result.detail
    assert result.name == "file docs/requirements.md"
    assert result.files == {"docs/requirements.md": sha256(copy / "docs/requirements.md")}
    assert "matches /^## acceptance criteria/" in result.detail


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        ({"path": "docs/design.md"}, "docs/design.md does not exist"),
        ({"path": "docs"}, "docs is not a regular file"),
        ({"path": "README.md", "min_bytes": 100}, "README.md has 6 bytes, expected at least 100"),
        (
            {"path": "README.md", "contains": "acceptance criteria"},
            "README.md does not match /acceptance criteria/",
        ),
        ({"path": "outside.md"}, "outside.md lies outside the repository's work tree"),
        ({"path": ".git/HEAD"}, ".git/HEAD lies outside the repository's work tree"),
    ],
)
async def test_file_check_failures_say_what_is_missing(
    copy: Path, spec: dict[str, Any], detail: str
) -> None:
    secret = copy.parent / "secret.md"
    secret.write_text("outside the repo\n")
    (copy / "outside.md").symlink_to(secret)
    result = await run_one(copy, kind=K.FILE, **spec)
    assert not result.passed
    assert result.detail == detail


async def test_glob_check_hashes_matches_and_skips_git_dir(copy: Path) -> None:
    result = await run_one(copy, kind=K.GLOB, path="tests/test_*.py")
    assert result.passed
    assert result.detail == "2 files match tests/test_*.py"
    assert set(result.files) == {"tests/test_a.py", "tests/test_b.py"}
    assert result.files["tests/test_a.py"] == sha256(copy / "tests/test_a.py")

    missing = await run_one(copy, kind=K.GLOB, path="tests/integration/*.py")
    assert not missing.passed
    assert missing.detail == "no files match tests/integration/*.py"
    # Git's own files are not evidence of anything.
    assert not (await run_one(copy, kind=K.GLOB, path="**/HEAD")).passed


async def test_glob_evidence_is_bounded(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "many")
    commit(repo, {f"gen/f{i:03}.txt": f"{i}\n" for i in range(60)})
    result = await run_one(repo, kind=K.GLOB, path="gen/*.txt")
    assert result.passed
    assert result.detail.startswith("60 files match")
    assert len(result.files) == 50


async def test_artifact_built_by_an_earlier_command_check(copy: Path) -> None:
    spec = GateSpec(
        checks=[
            CheckSpec(kind=K.ARTIFACT, path="dist/*.tar.gz"),
            CheckSpec(kind=K.COMMAND, command="mkdir dist && tar czf dist/pkg.tar.gz docs"),
            CheckSpec(kind=K.ARTIFACT, path="dist/*.tar.gz"),
        ]
    )
    before, build, after = await run_checks(spec, copy, base_commit=None, env=ENV)
    assert not before.passed
    assert before.detail == "no artifacts match dist/*.tar.gz"
    assert build.passed, build.output_tail
    assert after.passed
    assert after.detail.startswith("1 artifact: dist/pkg.tar.gz (")
    assert after.files == {"dist/pkg.tar.gz": sha256(copy / "dist/pkg.tar.gz")}


async def test_empty_artifact_does_not_count(copy: Path) -> None:
    (copy / "dist").mkdir()
    (copy / "dist" / "pkg.whl").touch()
    result = await run_one(copy, kind=K.ARTIFACT, path="dist/*.whl")
    assert not result.passed
    assert (
        result.detail == "no artifact matching dist/*.whl has at least 1 bytes: dist/pkg.whl (0 B)"
    )


# --- diff checks ------------------------------------------------------------------------


async def test_diff_against_a_base_commit(copy: Path, workspace: tuple[Path, list[str]]) -> None:
    first, second = workspace[1]
    changed = await run_one(copy, base=first, kind=K.DIFF)
    assert changed.passed
    assert changed.detail.startswith("3 files changed, ")
    assert "docs/requirements.md" in changed.output_tail

    unchanged = await run_one(copy, base=second, kind=K.DIFF)
    assert not unchanged.passed
    assert unchanged.detail == f"no changes since {second[:12]}"

    bad = await run_one(copy, base="f" * 40, kind=K.DIFF)
    assert not bad.passed
    assert "git diff" in bad.detail


async def test_diff_without_base_uses_the_root_commit(copy: Path) -> None:
    result = await run_one(copy, kind=K.DIFF)
    assert result.passed
    assert "3 files changed" in result.detail
    assert "README.md" not in result.output_tail  # that came with the root commit


async def test_diff_of_a_lone_root_commit_uses_the_empty_tree(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "one")
    commit(repo, {"a.txt": "a\n"})
    result = await run_one(repo, kind=K.DIFF)
    assert result.passed
    assert result.detail.endswith("since the empty tree")

    blank = new_repo(tmp_path / "blank")
    commit(blank, {})
    empty = await run_one(blank, kind=K.DIFF)
    assert not empty.passed
    assert empty.detail == "no changes since the empty tree"
    assert (await run_one(repo, base=EMPTY_TREE, kind=K.DIFF)).passed


# --- command checks ---------------------------------------------------------------------


async def test_command_output_and_exit_code(copy: Path) -> None:
    ok = await run_one(copy, kind=K.COMMAND, command='echo "var=$GATE_VAR"; ls docs')
    assert ok.passed
    assert ok.exit_code == 0
    assert ok.detail == "exit code 0"
    assert ok.output_tail == "var=from-env\nrequirements.md\n"

    bad = await run_one(copy, kind=K.COMMAND, command="echo to-stdout; echo to-stderr >&2; exit 3")
    assert not bad.passed
    assert bad.exit_code == 3
    assert bad.detail == "exit code 3"
    assert bad.output_tail == "to-stdout\nto-stderr\n"


async def test_command_output_tail_is_bounded(copy: Path) -> None:
    result = await run_one(
        copy, kind=K.COMMAND, command="head -c 20000 /dev/zero | tr '\\0' x; echo; echo END"
    )
    assert result.passed
    assert len(result.output_tail) == OUTPUT_TAIL_BYTES
    assert result.output_tail.endswith("x\nEND\n")


async def test_command_gets_a_private_tmpdir_that_is_removed(copy: Path) -> None:
    result = await run_one(
        copy, kind=K.COMMAND, command='test -d "$TMPDIR" && touch "$TMPDIR/x" && echo "$TMPDIR"'
    )
    assert result.passed, result.output_tail
    tmpdir = Path(result.output_tail.strip())
    assert tmpdir.parent == copy.parent
    assert not tmpdir.exists()


async def test_command_timeout_kills_the_process_group(copy: Path) -> None:
    result = await run_one(
        copy, kind=K.COMMAND, command="sleep 30 & echo $! > pid; wait", timeout_s=0.5
    )
    assert not result.passed
    assert result.exit_code is None
    assert result.detail == "timed out after 0.5s"
    pid = int((copy / "pid").read_text())
    await wait_until(lambda: gone(pid))


async def test_command_ignoring_sigterm_is_killed(copy: Path) -> None:
    result = await run_one(
        copy,
        kind=K.COMMAND,
        command="trap '' TERM; sleep 30 & echo $! > pid; wait",
        timeout_s=0.2,
    )
    assert result.detail == "timed out after 0.2s"
    await wait_until(lambda: gone(int((copy / "pid").read_text())))


async def test_command_leftovers_are_killed_after_a_normal_exit(copy: Path) -> None:
    result = await run_one(copy, kind=K.COMMAND, command="sleep 30 & echo $! > pid; echo done")
    assert result.passed
    assert result.output_tail == "done\n"
    await wait_until(lambda: gone(int((copy / "pid").read_text())))


async def test_cancelling_run_checks_kills_the_running_command(copy: Path) -> None:
    spec = GateSpec(checks=[CheckSpec(kind=K.COMMAND, command="sleep 30 & echo $! > pid; wait")])
    task = asyncio.create_task(run_checks(spec, copy, base_commit=None, env=ENV))
    pid_file = copy / "pid"
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: gone(int(pid_file.read_text())))


async def test_every_check_runs_after_a_failure(copy: Path) -> None:
    spec = GateSpec(
        checks=[
            CheckSpec(kind=K.COMMAND, command="exit 1", name="lint"),
            CheckSpec(kind=K.FILE, path="missing.md"),
            CheckSpec(kind=K.GLOB, path="tests/*.py"),
        ]
    )
    results = await run_checks(spec, copy, base_commit=None, env=ENV)
    assert [(r.name, r.passed) for r in results] == [
        ("lint", False),
        ("file missing.md", False),
        ("glob tests/*.py", True),
    ]
    assert all(r.duration_s >= 0 for r in results)
    assert not verdict_passed(results)
    assert verdict_passed(results[2:])
    assert verdict_passed([])


# --- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "file", "path": "../x"}, "may not contain '..' components"),
        ({"kind": "glob", "path": "docs/../../x/*"}, "may not contain '..' components"),
        ({"kind": "file", "path": "/etc/passwd"}, "must be relative to the repository root"),
        ({"kind": "artifact", "path": "/tmp/*.whl"}, "must be relative to the repository root"),
        ({"kind": "file", "path": "."}, "does not name anything"),
        ({"kind": "file"}, "a file check needs a path"),
        ({"kind": "glob"}, "a glob check needs a path"),
        ({"kind": "artifact"}, "a artifact check needs a path"),
        ({"kind": "command"}, "needs a non-empty command"),
        ({"kind": "command", "command": "  "}, "needs a non-empty command"),
        ({"kind": "diff", "command": "true"}, "a diff check takes no command"),
        ({"kind": "command", "command": "true", "path": "x"}, "a command check takes no path"),
        ({"kind": "glob", "path": "*.md", "contains": "x"}, "only file checks take 'contains'"),
        ({"kind": "file", "path": "a.md", "contains": "("}, "not a valid regular expression"),
        ({"kind": "file", "path": "a.md", "mode": "strict"}, "Extra inputs are not permitted"),
        ({"kind": "command", "command": "true", "timeout_s": 0}, "greater than 0"),
    ],
)
def test_check_spec_validation(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CheckSpec.model_validate(spec)


def test_check_labels_and_gate_spec() -> None:
    assert CheckSpec(kind=K.DIFF).label == "diff"
    assert CheckSpec(kind=K.FILE, path="./docs/a.md").label == "file ./docs/a.md"
    assert CheckSpec(kind=K.GLOB, path="x/*", name="tests exist").label == "tests exist"
    long = CheckSpec(kind=K.COMMAND, command="pytest  -q\n" + "x" * 100).label
    assert long.startswith("command: pytest -q x")
    assert len(long) == len("command: ") + 60
    gate = GateSpec.model_validate(
        {"checks": [{"kind": "diff"}], "review": True, "fix_phase": "implementation"}
    )
    assert gate.fix_phase is Phase.IMPLEMENTATION
    with pytest.raises(ValidationError, match="fix_phase must be a work phase"):
        GateSpec(fix_phase=Phase.DONE)


def test_gate_request_and_verdict_round_trip() -> None:
    request = GateRequest(
        ticket_id="T1",
        phase=Phase.DESIGN,
        attempt=1,
        spec=GateSpec(checks=[CheckSpec(kind=K.FILE, path="docs/design.md")]),
        acceptance=["has a design"],
    )
    assert GateRequest.model_validate_json(request.to_json()) == request
    # Requests name no local path; an older one that still does parses, the path ignored.
    assert "workspace" not in json.loads(request.to_json())
    older = {**json.loads(request.to_json()), "workspace": "/data/ws/T1"}
    assert GateRequest.model_validate(older).ticket_id == "T1"
    verdict = GateVerdict(ticket_id="T1", phase=Phase.DESIGN, attempt=1, passed=True)
    assert GateVerdict.model_validate_json(verdict.to_json()) == verdict
    # Inbound-tolerant: a newer peer's extra field is ignored.
    assert GateVerdict.model_validate({**verdict.model_dump(), "new": 1}) == verdict


# --- feedback ---------------------------------------------------------------------------


def result(name: str, passed: bool, kind: CheckKind = K.COMMAND, **kw: Any) -> CheckResult:
    return CheckResult(name=name, kind=kind, passed=passed, detail=kw.pop("detail", "x"), **kw)


def test_feedback_lists_failures_with_output_tails() -> None:
    output = "".join(f"line {i}\n" for i in range(1, 101))
    text = feedback(
        [
            result("lint", True, detail="exit code 0", output_tail="all good\n"),
            result("pytest", False, detail="exit code 1", output_tail=output),
            result("file docs/design.md", False, K.FILE, detail="docs/design.md does not exist"),
        ],
        review="Acceptance criterion 2 is not covered.",
    )
    assert "- pytest (command): exit code 1" in text
    assert "- file docs/design.md (file): docs/design.md does not exist" in text
    assert "lint" not in text and "all good" not in text
    assert "    line 100" in text and "    line 61\n" in text
    assert "line 60\n" not in text
    assert text.endswith("Review:\nAcceptance criterion 2 is not covered.")


def test_feedback_is_empty_when_all_passed_and_bounded_otherwise() -> None:
    assert feedback([result("lint", True)]) == ""
    assert feedback([result("lint", True)], review="Looks good.") == "Review:\nLooks good."
    noisy = "y" * 5000 + "\n"
    many = [result(f"cmd{i}", False, output_tail=noisy * 40) for i in range(20)]
    text = feedback(many)
    assert len(text) <= 6 * 1024
    assert all(f"- cmd{i} (command): x" in text for i in range(20))
    assert "yyy" in text

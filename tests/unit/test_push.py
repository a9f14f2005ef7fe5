"""Pushing a ticket's commit with real git: what a refusal is called, and that a push never
forces a branch someone else moved."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agents.delivery.push import PushError, categorise, default_branch, local_copy, push
from agents.workspace import bundle


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def work(tmp_path: Path) -> tuple[Path, str]:
    """A bare copy of a two-commit history, as the delivery agent makes from a bundle."""
    repo = tmp_path / "work"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for n in ("one", "two"):
        (repo / n).write_text(n)
        git(repo, "add", n)
        git(repo, "commit", "-q", "-m", n)
    bundle(repo, tmp_path / "w.bundle")
    head = git(repo, "rev-parse", "HEAD")
    local_copy(tmp_path / "w.bundle", tmp_path / "copy.git", head)
    return tmp_path / "copy.git", head


def test_a_push_lands_once_and_never_forces(tmp_path: Path) -> None:
    copy, head = work(tmp_path)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    push(copy, str(remote), head, "omoi/T1")
    push(copy, str(remote), head, "omoi/T1")  # again: up to date, no error
    assert git(remote, "rev-parse", "omoi/T1") == head
    parent = git(copy, "rev-parse", f"{head}~1")
    with pytest.raises(PushError) as refused:  # moving the branch back would lose work
        push(copy, str(remote), parent, "omoi/T1")
    assert refused.value.category == "push_rejected"
    assert default_branch(copy, str(remote)) == "main"


def test_a_missing_remote_is_named_so(tmp_path: Path) -> None:
    copy, head = work(tmp_path)
    with pytest.raises(PushError) as missing:
        push(copy, str(tmp_path / "nowhere.git"), head, "omoi/T1")
    assert missing.value.category == "remote_missing"
    assert "nowhere.git" in str(missing.value)


def test_refusals_in_gits_words() -> None:
    assert categorise("remote: Permission to o/r.git denied to bot.\nfatal: ... 403") == "no_rights"
    assert categorise(" ! [remote rejected] x -> x (protected branch hook declined)") == (
        "push_rejected"
    )
    assert categorise("something else entirely") == "push_failed"

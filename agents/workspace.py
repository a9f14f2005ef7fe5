"""A ticket's workspace on this machine: a git repository every task of the ticket works in.

It is a fresh repository, or a clone of the ticket's `repository` (never the user's own
checkout). Each succeeded task leaves a commit naming it, so gates can check committed
evidence and the ticket's result can name one commit. Each worker keeps its own copy
under its data dir; the history travels between machines as a git bundle
(`agents.workspace_sync`). This module is the local side: git, and the locks that let
the processes sharing a data dir (`omoi up --workers N`) share a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path

from agents.errors import AgentError
from agents.task_env import scrubbed

log = logging.getLogger(__name__)

IDENTITY = ("-c", "user.name=omoi", "-c", "user.email=omoi@localhost")
# Scratch directories executors make inside the workspace; never part of the work.
EXCLUDED = (".omoi-tmp/",)
ROOT_MESSAGE = "omoi: workspace created"
LOCK_POLL_MAX_S = 0.1
GIT_TIMEOUT_S = 300.0


class WorkspaceError(AgentError):
    """A workspace could not be prepared, committed, fetched or published."""


class WorkspaceConflict(WorkspaceError):
    """A task's commit does not apply on top of what other tasks published meanwhile."""


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment that reads no user or system git config, never prompts, and holds
    no secrets: what a task left in the copy's .git (hooks, filters) runs under it."""
    env = {k: v for k, v in scrubbed(os.environ).items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    env.update(extra or {})
    return env


def _run(
    path: Path, args: tuple[str, ...], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *IDENTITY, "-c", "commit.gpgsign=false", *args],
            cwd=path,
            env=git_env(env),
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise WorkspaceError(
            f"git {args[0]} timed out after {GIT_TIMEOUT_S:g}s in {path}"
        ) from None
    except OSError as exc:
        raise WorkspaceError(f"cannot run git {args[0]} in {path}: {exc}") from exc


def git(path: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None) -> str:
    proc = _run(path, args, env)
    if check and proc.returncode != 0:
        raise WorkspaceError(f"git {args[0]} failed in {path}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def succeeds(path: Path, *args: str) -> bool:
    """Whether a git command that answers by its exit code says yes."""
    return _run(path, args).returncode == 0


@contextlib.asynccontextmanager
async def mutex(path: Path) -> AsyncIterator[None]:
    """Hold the copy's lock: one git writer at a time, across the processes sharing the
    data dir and the tasks within one. Held across awaits (a commit stays locked until it
    is published), so it is polled rather than waited for in a thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, LOCK_POLL_MAX_S)
        yield
    finally:
        os.close(fd)  # releases the lock


def join(path: Path) -> tuple[int, bool]:
    """Register an attempt working in the copy, under `mutex`; returns the handle to
    `leave` with and whether no other attempt (in any process) works in it now.

    Each attempt holds a shared lock on `.<ticket>.use` until it leaves; only one that
    finds no other holder may move the copy. A crashed process's locks vanish with it.
    """
    fd = os.open(path.parent / f".{path.name}.use", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except BlockingIOError:
        alone = False
    # Joiners hold the mutex, so nobody else wants this lock exclusively now.
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return fd, alone


def leave(fd: int) -> None:
    os.close(fd)


def ensure(path: Path, repository: str | None = None, created: datetime | None = None) -> None:
    """Make `path` a git repository with at least one commit, under `mutex`. Idempotent.

    A fresh repository's first commit is dated `created` (the ticket's creation), so every
    machine that starts the same ticket makes the same root commit."""
    if (path / ".git").is_dir():
        return
    if repository and not path.exists():
        source = repository
        if Path(repository).exists():
            source = str(Path(repository).resolve())
        path.parent.mkdir(parents=True, exist_ok=True)
        git(path.parent, "clone", "--quiet", "--no-hardlinks", "--", source, str(path))
        log.info("workspace %s cloned from %s", path, repository)
    else:
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "--quiet", "--initial-branch=main")
        dated = {}
        if created is not None:
            stamp = f"@{int(created.timestamp())} +0000"
            dated = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        git(path, "commit", "--quiet", "--allow-empty", "-m", ROOT_MESSAGE, env=dated)
        log.info("workspace %s created", path)
    _exclude_scratch(path)


def _exclude_scratch(path: Path) -> None:
    exclude = path / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as handle:
        handle.write("".join(f"{pattern}\n" for pattern in EXCLUDED))


def head(path: Path) -> str | None:
    if not (path / ".git").is_dir():
        return None
    return git(path, "rev-parse", "--verify", "--quiet", "HEAD", check=False) or None


def branch(path: Path) -> str:
    return git(path, "symbolic-ref", "--quiet", "--short", "HEAD", check=False) or "main"


def is_versioned(path: Path) -> bool:
    return (path / ".git").is_dir()


def commit(path: Path, message: str) -> tuple[str | None, list[str]]:
    """Commit everything changed in the workspace, under `mutex`; HEAD and the files."""
    if not is_versioned(path):
        return None, []
    git(path, "add", "--all")
    changed = git(path, "diff", "--cached", "--name-only").splitlines()
    if changed:
        git(path, "commit", "--quiet", "--no-verify", "-m", message)
    return head(path), changed


def has_commit(path: Path, sha: str) -> bool:
    return succeeds(path, "cat-file", "-e", f"{sha}^{{commit}}")


def is_ancestor(path: Path, older: str, newer: str) -> bool:
    """Whether `older` is `newer` or in its history."""
    return succeeds(path, "merge-base", "--is-ancestor", older, newer)


def bundle(path: Path, dest: Path) -> None:
    """Write the copy's history (HEAD and its branch) to the bundle `dest`."""
    git(path, "bundle", "create", "--quiet", str(dest.absolute()), "HEAD", branch(path))


def bundle_head(bundle_file: Path) -> str:
    """The commit a bundle's HEAD names; WorkspaceError if it is no readable bundle."""
    listed = git(bundle_file.parent, "bundle", "list-heads", str(bundle_file.absolute()))
    for line in listed.splitlines():
        sha, _, ref = line.partition(" ")
        if ref == "HEAD":
            return sha
    raise WorkspaceError("the bundle has no HEAD")


def fetch(path: Path, bundle_file: Path, expected: str, branch_name: str = "main") -> None:
    """Bring a bundle's history into the copy (made if absent) without moving it, and check
    that its HEAD is `expected`."""
    if not is_versioned(path):
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "--quiet", f"--initial-branch={branch_name}")
        _exclude_scratch(path)
    git(path, "fetch", "--quiet", "--no-tags", str(bundle_file.absolute()), "HEAD")
    fetched = git(path, "rev-parse", "FETCH_HEAD")
    if fetched != expected:
        raise WorkspaceError(
            f"the bundle's HEAD is {fetched[:12]}, not the published head {expected[:12]}"
        )


def checkout(path: Path, branch_name: str, commit_sha: str) -> None:
    """Move the copy to `commit_sha` on `branch_name`, dropping local changes and
    untracked files (ignored ones, like the executors' scratch, stay)."""
    git(path, "checkout", "--quiet", "--force", "-B", branch_name, commit_sha)
    git(path, "clean", "-fdq")


def rebase(path: Path, onto: str) -> None:
    """Replay the copy's own commits on top of `onto`; WorkspaceConflict if they clash."""
    proc = _run(path, ("rebase", "--quiet", onto))
    if proc.returncode == 0:
        return
    clashing = git(path, "diff", "--name-only", "--diff-filter=U", check=False).split()
    git(path, "rebase", "--abort", check=False)
    if not clashing:  # refused before it began: changes in the tree, say
        raise WorkspaceError(f"could not rebase onto {onto[:12]}: {proc.stderr.strip()[-500:]}")
    raise WorkspaceConflict(
        f"this task's commit conflicts with work another task published meanwhile in "
        f"{', '.join(clashing[:10])} (rebasing onto {onto[:12]} failed)"
    )


def missing_history(path: Path, tip: str, commits: list[str]) -> list[str]:
    """Which of `commits` are not `tip` or in its history (one git call when none is)."""
    if not commits:
        return []
    proc = _run(path, ("merge-base", "--independent", tip, *commits))
    if proc.returncode == 0 and proc.stdout.split() == [tip]:
        return []
    return [c for c in commits if not (has_commit(path, c) and is_ancestor(path, c, tip))]

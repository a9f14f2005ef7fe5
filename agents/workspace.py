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
# Where the workspace started, before any task: the first base of every task.
START_REF = "refs/heads/omoi/start"
LOCK_POLL_MAX_S = 0.1
GIT_TIMEOUT_S = 300.0


class WorkspaceError(AgentError):
    """A workspace could not be prepared, committed, fetched or published."""


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment that reads no user or system git config, never prompts, and holds
    no secrets: what a task left in the copy's .git (hooks, filters) runs under it."""
    env = {k: v for k, v in scrubbed(os.environ).items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    env.update(extra or {})
    return env


def _run(
    path: Path,
    args: tuple[str, ...],
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *IDENTITY, "-c", "commit.gpgsign=false", *args],
            cwd=path,
            env=git_env(env),
            input=stdin,
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


def git(
    path: Path,
    *args: str,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> str:
    proc = _run(path, args, env, stdin)
    if check and proc.returncode != 0:
        raise WorkspaceError(f"git {args[0]} failed in {path}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def git_code(path: Path, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """A git command that answers by its exit code too: the code and its output (its
    standard output, else its errors)."""
    proc = _run(path, args, env)
    return proc.returncode, (proc.stdout or proc.stderr).strip()


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
    # Tasks work on detached heads and write their branch when they commit, so no branch
    # is ever checked out and a fetch may update every one of them.
    git(path, "update-ref", START_REF, "HEAD")
    git(path, "checkout", "--quiet", "--detach")


def _exclude_scratch(path: Path) -> None:
    exclude = path / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as handle:
        handle.write("".join(f"{pattern}\n" for pattern in EXCLUDED))


def head(path: Path) -> str | None:
    if not is_versioned(path):
        return None
    return git(path, "rev-parse", "--verify", "--quiet", "HEAD", check=False) or None


def is_versioned(path: Path) -> bool:
    return (path / ".git").exists()  # a directory, or a linked worktree's file


def commit(path: Path, message: str, ref: str) -> tuple[str, list[str]]:
    """Commit everything changed in this working tree (finishing a merge in progress),
    under `mutex`, and point the task's branch `ref` at it; the commit and the files it
    changed (a merge's: against its first parent)."""
    git(path, "add", "--all")
    in_merge = succeeds(path, "rev-parse", "--verify", "--quiet", "MERGE_HEAD")
    changed = git(path, "diff", "--cached", "--name-only").splitlines()
    if changed or in_merge:
        git(path, "commit", "--quiet", "--no-verify", "--no-edit", "-m", message)
    tip = head(path)
    if tip is None:
        raise WorkspaceError(f"the workspace {path} has no commit")
    git(path, "update-ref", ref, tip)
    return tip, changed


def has_commit(path: Path, sha: str) -> bool:
    return succeeds(path, "cat-file", "-e", f"{sha}^{{commit}}")


def bundle(path: Path, dest: Path) -> None:
    """Write the copy's history to the bundle `dest`: every branch, and HEAD (the commit
    this working tree is at)."""
    git(path, "bundle", "create", "--quiet", str(dest.absolute()), "HEAD", "--branches")


def bundle_head(bundle_file: Path) -> str:
    """The commit a bundle's HEAD names; WorkspaceError if it is no readable bundle."""
    listed = git(bundle_file.parent, "bundle", "list-heads", str(bundle_file.absolute()))
    for line in listed.splitlines():
        sha, _, ref = line.partition(" ")
        if ref == "HEAD":
            return sha
    raise WorkspaceError("the bundle has no HEAD")


def fetch(path: Path, bundle_file: Path) -> None:
    """Bring a bundle's branches into the copy (made if absent) without moving any
    working tree: what is published replaces what the copy had under the same names."""
    if not is_versioned(path):
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "--quiet", "--initial-branch=omoi/unborn")
        _exclude_scratch(path)
    git(path, "fetch", "--quiet", "--no-tags", "--update-head-ok", str(bundle_file.absolute()),
        "+refs/heads/*:refs/heads/*")  # fmt: skip


def place(path: Path, commit_sha: str) -> None:
    """Put this working tree on `commit_sha` (detached), dropping local changes, a merge
    in progress and untracked files (ignored ones, like the executors' scratch, stay)."""
    git(path, "merge", "--abort", check=False)
    git(path, "checkout", "--quiet", "--force", "--detach", commit_sha)
    git(path, "clean", "-fdq")


def add_worktree(copy: Path, dest: Path, commit_sha: str) -> None:
    """A linked working tree of `copy` at `dest` for one task (kept if it is there)."""
    if (dest / ".git").exists():
        return
    git(copy, "worktree", "prune")
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(copy, "worktree", "add", "--quiet", "--force", "--detach", str(dest), commit_sha)

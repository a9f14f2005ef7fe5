"""A ticket's workspace: a git repository under the data dir that every task works in.

It is a fresh repository, or a clone of the ticket's `repository` (never the user's own
checkout). Each succeeded task leaves a commit naming it, so gates can check committed
evidence and the ticket's result can name one commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from agents.errors import AgentError

log = logging.getLogger(__name__)

IDENTITY = ("-c", "user.name=omoi", "-c", "user.email=omoi@localhost")
# Scratch directories executors make inside the workspace; never part of the work.
EXCLUDED = (".omoi-tmp/",)


class WorkspaceError(AgentError):
    """A workspace could not be prepared or committed."""


def git_env() -> dict[str, str]:
    """An environment that reads no user or system git config and never prompts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    return env


def git(path: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["git", *IDENTITY, "-c", "commit.gpgsign=false", *args],
        cwd=path,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise WorkspaceError(f"git {args[0]} failed in {path}: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise git operations on one workspace across workers sharing the data dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(path: Path, repository: str | None = None) -> None:
    """Make `path` a git repository with at least one commit. Idempotent."""
    with locked(path):
        if (path / ".git").is_dir():
            return
        if repository and not path.exists():
            source = repository
            if Path(repository).exists():
                source = str(Path(repository).resolve())
            path.parent.mkdir(parents=True, exist_ok=True)
            git(path.parent, "clone", "--quiet", "--no-hardlinks", source, str(path))
            log.info("workspace %s cloned from %s", path, repository)
        else:
            path.mkdir(parents=True, exist_ok=True)
            git(path, "init", "--quiet", "--initial-branch=main")
            git(path, "commit", "--quiet", "--allow-empty", "-m", "omoi: workspace created")
            log.info("workspace %s created", path)
        exclude = path / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as handle:
            handle.write("".join(f"{pattern}\n" for pattern in EXCLUDED))


def head(path: Path) -> str | None:
    if not (path / ".git").is_dir():
        return None
    return git(path, "rev-parse", "HEAD", check=False) or None


def is_versioned(path: Path) -> bool:
    return (path / ".git").is_dir()


def commit(path: Path, message: str) -> tuple[str | None, list[str]]:
    """Commit everything changed in the workspace; return HEAD and the files changed."""
    if not is_versioned(path):
        return None, []
    with locked(path):
        git(path, "add", "--all")
        changed = git(path, "diff", "--cached", "--name-only").splitlines()
        if changed:
            git(path, "commit", "--quiet", "--no-verify", "-m", message)
        return head(path), changed

"""Pushing a ticket's commit to its repository as a branch, from the published workspace.

The delivery agent never holds a working copy: it clones the ticket's bundle (what the
workers published to `omoi_workspaces`) bare, checks the commit is in it, and pushes
that commit to the branch. A push is never forced: the branch may only move forward
(a follow-up's commit sits on top of the one delivered before), so pushing the same
commit twice is a no-op and a branch someone else moved is refused, not overwritten.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from agents.workspace import WorkspaceError, git, git_code

# git's own words, for what a refusal was (push_failed when none match).
_CATEGORIES = (
    ("remote_missing", re.compile(
        r"does not appear to be a git repository|repository .* not found|not found|"
        r"could not read from remote|no such file or directory|unable to access", re.I)),
    ("no_rights", re.compile(
        r"permission denied|authentication failed|403|could not read username|"
        r"insufficient permission", re.I)),
    ("push_rejected", re.compile(
        r"\[remote rejected\]|\[rejected\]|protected branch|hook declined|non-fast-forward|"
        r"fetch first", re.I)),
)  # fmt: skip


class PushError(WorkspaceError):
    """A push the remote refused or could not take; `category` says which."""

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class Credentials:
    """How to authenticate pushes to one host: GitHub's token as HTTP basic auth (what
    GitHub documents for `x-access-token`), passed to git in its environment, never on
    its command line."""

    host: str
    token: str

    def env(self) -> dict[str, str]:
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.https://{self.host}/.extraheader",
            "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
        }


def categorise(stderr: str) -> str:
    for category, pattern in _CATEGORIES:
        if pattern.search(stderr):
            return category
    return "push_failed"


def local_copy(bundle_file: Path, dest: Path, commit: str) -> None:
    """A bare clone of the bundle at `dest`, holding `commit` (WorkspaceError if not)."""
    git(dest.parent, "clone", "--quiet", "--bare", "--no-hardlinks", "--",
        str(bundle_file.absolute()), str(dest.absolute()))  # fmt: skip
    code, _ = git_code(dest, "cat-file", "-e", f"{commit}^{{commit}}")
    if code != 0:
        raise WorkspaceError(f"commit {commit[:12]} is not in the ticket's published workspace")


def push(
    copy: Path, repository: str, commit: str, branch: str, creds: Credentials | None = None
) -> None:
    """Push `commit` to `repository` as `branch`; PushError with git's reason if refused."""
    # Not --porcelain: git then says everything, a refusal's reason too, on stderr.
    code, out = git_code(
        copy, "push", "--no-verify", "--", repository, f"{commit}:refs/heads/{branch}",
        env=creds.env() if creds is not None else None,
    )  # fmt: skip
    if code != 0:
        raise PushError(f"git push to {repository} refused: {_tail(out)}", categorise(out))


def default_branch(copy: Path, repository: str, creds: Credentials | None = None) -> str:
    """The branch the remote's HEAD names (a pull request's base), else `main`."""
    env = creds.env() if creds is not None else None
    out = git(copy, "ls-remote", "--symref", "--", repository, "HEAD", check=False, env=env)
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/"):
            return line.removeprefix("ref: refs/heads/").split("\t", 1)[0]
    return "main"


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-4:])[-600:] or "no reason given"

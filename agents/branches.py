"""A branch per task, and the merges where tasks' work comes together.

Every task of a git ticket commits on its own branch, `omoi/task/<name>`, which starts
from its base: the merged result of the commits the planner named (its dependencies'
commits, or the previous phase's head). Where a base names several commits they are
merged here, without a working tree (`git merge-tree`), into a commit dated and signed
like every other Omoi commit, so every machine that merges the same branches makes the
same commit. The workspace's own start, before any task, is `omoi/start`.

A merge that conflicts is a `MergeConflict`: which commits, which files, and the
conflicting hunks as git wrote them, for the `merge.conflicted` event and for the
prompt of the task that resolves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agents.workspace import START_REF, WorkspaceError, git, git_code, succeeds

HUNK_CHARS = 6000
MAX_FILES = 20
_MARKERS = re.compile(r"^<{7} .*?^>{7} [^\n]*\n?", re.M | re.S)


def task_branch(name: str) -> str:
    return f"omoi/task/{name}"


def task_ref(name: str) -> str:
    return f"refs/heads/{task_branch(name)}"


@dataclass(frozen=True)
class Conflict:
    """Two commits whose merge git could not finish."""

    ours: str
    theirs: str
    files: list[str]
    hunks: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Both sides and the conflicting hunks, as a prompt can carry them."""
        parts = [
            f"merging {self.theirs[:12]} into {self.ours[:12]} conflicts in "
            + ", ".join(self.files[:MAX_FILES])
        ]
        for path, hunk in self.hunks.items():
            parts.append(f"--- {path}\n{hunk.rstrip()}")
        return "\n\n".join(parts)


class MergeConflict(WorkspaceError):
    """The commits a task starts from do not merge cleanly."""

    def __init__(self, conflict: Conflict) -> None:
        super().__init__(conflict.describe())
        self.conflict = conflict


class MissingBase(WorkspaceError):
    """A commit a task starts from is in no published copy of the workspace: its branch
    was replaced or removed (a bundle restored from an older backup, say). Running again
    cannot bring it back."""

    def __init__(self, message: str, commit: str) -> None:
        super().__init__(message)
        self.commit = commit


def resolve(path: Path, ref: str) -> str | None:
    return git(path, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False) or None


def start_commit(path: Path) -> str:
    """The workspace's start: `omoi/start`, or HEAD in a copy made before it existed."""
    found = resolve(path, START_REF) or resolve(path, "HEAD")
    if found is None:
        raise WorkspaceError(f"the workspace {path} has no commit to start from")
    return found


def missing_commits(path: Path, commits: list[str]) -> list[str]:
    """Which of `commits` the copy does not hold (one git call)."""
    if not commits:
        return []
    listed = git(
        path, "cat-file", "--batch-check=%(objectname) %(objecttype)",
        check=False, stdin="\n".join(commits) + "\n",
    )  # fmt: skip
    have = {line.split()[0] for line in listed.splitlines() if line.endswith(" commit")}
    return [c for c in commits if c not in have]


def independent(path: Path, commits: list[str]) -> list[str]:
    """`commits` without duplicates and without any that another one already holds, in
    their given order."""
    unique = list(dict.fromkeys(commits))
    if len(unique) < 2:
        return unique
    kept = set(git(path, "merge-base", "--independent", *unique).split())
    return [c for c in unique if c in kept]


def _date(path: Path, commits: list[str]) -> str:
    stamps = git(path, "show", "-s", "--format=%ct", *commits).split()
    return f"@{max(int(s) for s in stamps)} +0000"


def merge(path: Path, ours: str, theirs: str, message: str) -> str:
    """The merge commit of `theirs` into `ours`; MergeConflict if git cannot finish it.

    Dated with the later parent's commit time, so it is the same commit everywhere."""
    code, out = git_code(
        path, "merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs
    )
    lines = out.splitlines()
    if not lines:
        raise WorkspaceError(f"git merge-tree gave no tree for {ours[:12]} and {theirs[:12]}")
    tree = lines[0]
    if code == 1:
        files = list(dict.fromkeys(line for line in lines[1:] if line))
        raise MergeConflict(Conflict(ours, theirs, files, _hunks(path, tree, files)))
    if code != 0:
        raise WorkspaceError(f"git merge-tree failed for {ours[:12]} and {theirs[:12]}: {out}")
    stamp = _date(path, [ours, theirs])
    return git(
        path, "commit-tree", tree, "-p", ours, "-p", theirs, "-m", message,
        env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
    )  # fmt: skip


def _hunks(path: Path, tree: str, files: list[str]) -> dict[str, str]:
    """The conflict-marked regions of each file, within HUNK_CHARS overall."""
    out: dict[str, str] = {}
    left = HUNK_CHARS
    for name in files[:MAX_FILES]:
        if left <= 0:
            break
        text = git(path, "cat-file", "-p", f"{tree}:{name}", check=False)
        marked = "".join(m.group(0) for m in _MARKERS.finditer(text + "\n")) or text
        out[name] = marked[:left]
        left -= len(out[name])
    return out


def merged(path: Path, bases: list[str], message: str) -> str:
    """One commit holding every commit of `bases`: the only one, or their merges in
    order. MergeConflict at the first pair that does not merge."""
    heads = independent(path, bases)
    if not heads:
        raise WorkspaceError("nothing to start from")
    result = heads[0]
    for other in heads[1:]:
        result = merge(path, result, other, message)
    return result


def merged_until_conflict(path: Path, bases: list[str], message: str) -> tuple[str, str | None]:
    """Like `merged`, but stops at the first conflict: the commit merged so far and the
    commit that conflicts with it (None when everything merged)."""
    heads = independent(path, bases)
    if not heads:
        raise WorkspaceError("nothing to start from")
    result = heads[0]
    for other in heads[1:]:
        try:
            result = merge(path, result, other, message)
        except MergeConflict:
            return result, other
    return result, None


def merging(path: Path) -> str | None:
    """The commit a merge in progress in this working tree brings in."""
    return resolve(path, "MERGE_HEAD")


def begin_merge(path: Path, theirs: str) -> None:
    """Start merging `theirs` into the working tree's HEAD and leave the conflicts in the
    files, marked, for a resolver to edit."""
    succeeds(path, "merge", "--no-ff", "--no-commit", "--quiet", theirs)
    if merging(path) is None:
        raise WorkspaceError(f"could not start merging {theirs[:12]} in {path}")


def leftover_markers(path: Path) -> list[str]:
    """Staged files that still hold conflict markers."""
    proc = git(path, "diff", "--cached", "--check", check=False)
    return sorted({
        line.split(":", 1)[0] for line in proc.splitlines()
        if "leftover conflict marker" in line
    })  # fmt: skip

"""Scenario: the join of eight parallel task branches, against git merging them itself.

Eight tasks start from the same commit of a ticket's workspace and each commits its own
small change on its branch, as a worker does (`workspace.commit` in a linked working
tree): three new files of 4 KB, and in the `large` repository an edit to one existing file
too. The join is `branches.merged(copy, [the 8 tips], ...)`, what a task depending on all
eight starts from: seven merges folded with `git merge-tree --write-tree` and
`git commit-tree`, no working tree. Two repositories:
- `fresh`: a new workspace (`workspace.ensure`), its one empty root commit;
- `large`: a workspace cloned from a repository of 3,000 files of 2 KB and 300 commits,
  generated with `git fast-import`.

The baseline is git itself doing the same join in a checkout (a clone of the copy, so no
object is shared): at the first tip, `git merge --no-edit` of the seven others one after
another. One octopus `git merge` of all seven is reported too. Each round times Omoi's join
and git's, after a round that warms both up; the medians are reported, and Omoi's join as a
ratio to git's sequential merges.

Checked, failing the scenario otherwise: every round's join is the same commit; a second
copy made from the first's bundle, as another machine gets the branches, makes that same
commit; and git's merges in the checkout end at the same tree.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents import branches, workspace
from agents.workspace import git
from benchmarks.common import BenchConfig, Metric

SCENARIO = "merge"
BRANCHES = 8
FILES_PER_TASK = 3
FILE_BYTES = 4096
LARGE_FILES = 3000
LARGE_FILE_BYTES = 2048
LARGE_COMMITS = 300
LARGE_EDITS_PER_COMMIT = 10
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
MESSAGE = "omoi: merge for join\n\nomoi task BENCH-1.join"
ROUNDS = 15
# A repetition makes its repositories (about 6 s) and times ROUNDS + 1 rounds of both joins
# in each (about 1 s a round, git's side most of it); the rounds are the repetitions that
# count, so one is enough.
REPS = 1


def _text(seed: str, size: int) -> str:
    """About `size` bytes of Python-looking source, different for every seed."""
    lines: list[str] = []
    total = k = 0
    while total < size:
        line = f"def {seed}_{k}(value: int) -> int:\n    return value * {k} + {len(seed)}\n\n"
        lines.append(line)
        total += len(line)
        k += 1
    return "".join(lines)


def _large_path(i: int) -> str:
    return f"pkg{i // 50:03d}/mod{i % 50:02d}.py"


def _large_history(dest: Path, commits: int) -> None:
    """A repository of LARGE_FILES files and `commits` commits, in one fast-import."""
    dest.mkdir(parents=True)
    git(dest, "init", "--quiet", "--initial-branch=main")
    chunks: list[str] = []
    for c in range(commits):
        if c == 0:
            files = range(LARGE_FILES)
        else:
            files = range(c * LARGE_EDITS_PER_COMMIT, (c + 1) * LARGE_EDITS_PER_COMMIT)
        message = f"change {c}\n"
        stamp = int(CREATED.timestamp()) - (commits - c) * 3600
        chunks.append(
            f"commit refs/heads/main\ncommitter dev <dev@localhost> {stamp} +0000\n"
            f"data {len(message)}\n{message}"
        )
        for i in files:
            body = _text(f"m{i}_{c}", LARGE_FILE_BYTES)
            chunks.append(f"M 100644 inline {_large_path(i)}\ndata {len(body)}\n{body}\n")
        chunks.append("\n")
    git(dest, "fast-import", "--quiet", stdin="".join(chunks))


def _change(tree: Path, task: int, edit: str | None) -> None:
    """Task `task`'s work: its own new files, and an edit to an existing file if given."""
    for f in range(FILES_PER_TASK):
        path = tree / "src" / f"task{task}" / f"part{f}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_text(f"t{task}_p{f}", FILE_BYTES))
    if edit is not None:
        with (tree / edit).open("a") as handle:
            handle.write(_text(f"edit{task}", 200))


def _branches(root: Path, repository: str | None, edits: bool) -> tuple[Path, list[str]]:
    """A workspace copy holding BRANCHES task branches from its start, and their tips."""
    copy = root / "copy"
    workspace.ensure(copy, repository, CREATED)
    start = branches.start_commit(copy)
    tree = root / "task-tree"
    workspace.add_worktree(copy, tree, start)
    tips = []
    for task in range(BRANCHES):
        workspace.place(tree, start)
        _change(tree, task, _large_path(task * 97 % LARGE_FILES) if edits else None)
        name = f"t{task}"
        message = f"omoi: task {name}\n\nomoi task BENCH-1.{name}"
        tip, changed = workspace.commit(tree, message, branches.task_ref(name))
        if not changed:
            raise RuntimeError(f"task {name} committed nothing")
        tips.append(tip)
    if branches.independent(copy, tips) != tips:
        raise RuntimeError("the task branches are not independent of each other")
    return copy, tips


def _tree(path: Path, commit: str) -> str:
    return git(path, "rev-parse", f"{commit}^{{tree}}")


def _git_join(checkout: Path, tips: list[str], octopus: bool) -> tuple[float, str]:
    """git's own join in the checkout, from the first tip: seconds and the tree."""
    git(checkout, "checkout", "--quiet", "--force", "--detach", tips[0])
    began = time.perf_counter()
    if octopus:
        git(checkout, "merge", "--quiet", "--no-edit", *tips[1:])
    else:
        for tip in tips[1:]:
            git(checkout, "merge", "--quiet", "--no-edit", tip)
    took = time.perf_counter() - began
    return took, _tree(checkout, "HEAD")


def _variant(root: Path, rounds: int, repository: str | None, edits: bool) -> dict[str, float]:
    copy, tips = _branches(root, repository, edits)
    checkout = root / "checkout"
    git(root, "clone", "--quiet", "--no-hardlinks", "--no-checkout", str(copy), str(checkout))
    joins: list[float] = []
    sequential: list[float] = []
    octopus: list[float] = []
    joined: set[str] = set()
    trees: set[str] = set()
    for r in range(rounds + 1):  # the first round warms up
        began = time.perf_counter()
        joined.add(branches.merged(copy, tips, MESSAGE))
        took = time.perf_counter() - began
        git_s, git_tree = _git_join(checkout, tips, octopus=False)
        octopus_s, octopus_tree = _git_join(checkout, tips, octopus=True)
        trees |= {git_tree, octopus_tree}
        if r:
            joins.append(took)
            sequential.append(git_s)
            octopus.append(octopus_s)
    if len(joined) != 1:
        raise RuntimeError(f"the same join made {len(joined)} different commits")
    commit = joined.pop()
    if trees != {_tree(copy, commit)}:
        raise RuntimeError("git's merges in a checkout ended at another tree than the join")
    # Another machine: a copy made from the first's bundle, as workspace_sync fetches it.
    bundle = root / "workspace.bundle"
    workspace.bundle(copy, bundle)
    other = root / "other"
    workspace.fetch(other, bundle)
    again = branches.merged(other, tips, MESSAGE)
    if again != commit:
        raise RuntimeError(f"two copies joined the same branches into {commit} and {again}")
    return {
        "join": statistics.median(joins),
        "git": statistics.median(sequential),
        "octopus": statistics.median(octopus),
    }


def measure(cfg: BenchConfig) -> list[Metric]:
    # A smoke run checks that the joins agree with git, not how fast they are: one timed
    # round, and a shorter history of the same tree.
    rounds = cfg.count(ROUNDS, 1)
    source = cfg.workdir / "large-source"
    _large_history(source, cfg.count(LARGE_COMMITS, 30))
    variants: list[tuple[str, str | None, bool]] = [
        ("fresh", None, False),
        ("large", str(source), True),
    ]
    merges = BRANCHES - 1
    out: list[Metric] = []
    for repo, repository, edits in variants:
        got = _variant(cfg.workdir / repo, rounds, repository, edits)
        params: dict[str, Any] = {"repo": repo, "branches": BRANCHES}
        out += [
            Metric(SCENARIO, "join_ms", got["join"] * 1000, "ms", params),
            Metric(SCENARIO, "per_merge_ms", got["join"] * 1000 / merges, "ms", params),
            Metric(SCENARIO, "git_merges_ms", got["git"] * 1000, "ms", params),
            Metric(SCENARIO, "git_octopus_ms", got["octopus"] * 1000, "ms", params),
            Metric(SCENARIO, "join_vs_git_merges", got["join"] / got["git"], "x", params),
            Metric(SCENARIO, "two_copies_identical", 1.0, "1 = yes", params),
        ]
    return out


async def run(cfg: BenchConfig) -> list[Metric]:
    return measure(cfg)

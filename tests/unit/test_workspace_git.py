"""The local side of a ticket's workspace, on real git: branches, merges, bundles, locks."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents import branches as br
from agents import workspace as ws
from agents.workspace import WorkspaceError

CREATED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def write_and_commit(path: Path, name: str, text: str, task: str = "t") -> str:
    (path / name).write_text(text)
    sha, files = ws.commit(path, f"{name}: wrote it", br.task_ref(task))
    assert files == [name]
    return sha


def published_copy(source: Path, dest: Path) -> Path:
    """What another machine gets: a copy made from a bundle of `source`."""
    bundle = source.parent / f"{dest.name}.bundle"
    ws.bundle(source, bundle)
    ws.fetch(dest, bundle)
    ws.place(dest, ws.bundle_head(bundle))
    return dest


def git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_every_machine_makes_the_same_root_commit_for_a_ticket(tmp_path: Path) -> None:
    ws.ensure(tmp_path / "a", created=CREATED)
    ws.ensure(tmp_path / "b", created=CREATED)
    assert ws.head(tmp_path / "a") == ws.head(tmp_path / "b")
    assert br.start_commit(tmp_path / "a") == ws.head(tmp_path / "a")
    ws.ensure(tmp_path / "c", created=datetime(2025, 3, 2, tzinfo=UTC))
    assert ws.head(tmp_path / "c") != ws.head(tmp_path / "a")


def test_a_bundle_carries_every_branch_to_a_fresh_copy(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    root = br.start_commit(a)
    left = write_and_commit(a, "left.txt", "left\n", task="left")
    ws.place(a, root)
    right = write_and_commit(a, "right.txt", "right\n", task="right")
    b = published_copy(a, tmp_path / "b")
    assert ws.head(b) == right
    assert br.resolve(b, br.task_ref("left")) == left
    assert br.resolve(b, br.task_ref("right")) == right
    assert br.start_commit(b) == root
    # The executors' scratch stays out of the work in the new copy too.
    (b / ".omoi-tmp").mkdir()
    (b / ".omoi-tmp" / "x").write_text("scratch")
    assert ws.commit(b, "nothing", br.task_ref("x"))[1] == []


def test_place_drops_what_a_failed_attempt_left(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    kept = write_and_commit(a, "kept.txt", "yes\n")
    (a / "kept.txt").write_text("half-edited\n")
    (a / "stray.txt").write_text("junk\n")
    ws.place(a, kept)
    assert (a / "kept.txt").read_text() == "yes\n"
    assert not (a / "stray.txt").exists()


def test_branches_that_touch_different_files_merge_into_the_same_commit_anywhere(
    tmp_path: Path,
) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    root = br.start_commit(a)
    left = write_and_commit(a, "left.txt", "left\n", task="left")
    ws.place(a, root)
    right = write_and_commit(a, "right.txt", "right\n", task="right")
    b = published_copy(a, tmp_path / "b")
    merged_here = br.merged(a, [left, right], "omoi: merge")
    assert br.merged(b, [left, right], "omoi: merge") == merged_here
    assert git(a, "rev-parse", f"{merged_here}^1", f"{merged_here}^2").split() == [left, right]
    assert git(a, "ls-tree", "--name-only", merged_here).split() == ["left.txt", "right.txt"]
    # Commits another one holds are not merged again.
    assert br.merged(a, [root, merged_here, left], "omoi: merge") == merged_here
    assert br.independent(a, [left, left, root]) == [left]


def test_a_conflicting_merge_names_both_sides_the_files_and_the_hunks(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    root = br.start_commit(a)
    left = write_and_commit(a, "same.txt", "from the left\n", task="left")
    ws.place(a, root)
    right = write_and_commit(a, "same.txt", "from the right\n", task="right")
    with pytest.raises(br.MergeConflict) as info:
        br.merged(a, [left, right], "omoi: merge")
    conflict = info.value.conflict
    assert (conflict.ours, conflict.theirs, conflict.files) == (left, right, ["same.txt"])
    hunk = conflict.hunks["same.txt"]
    assert "from the left" in hunk and "from the right" in hunk and hunk.startswith("<<<<<<<")
    assert "same.txt" in conflict.describe() and "from the right" in conflict.describe()
    # A resolver starts with the merge in progress and the markers in the file.
    assert br.merged_until_conflict(a, [left, right], "m") == (left, right)
    ws.place(a, left)
    br.begin_merge(a, right)
    assert br.merging(a) == right
    assert "<<<<<<<" in (a / "same.txt").read_text()
    git(a, "add", "--all")
    assert br.leftover_markers(a) == ["same.txt"]
    (a / "same.txt").write_text("from the left\nfrom the right\n")
    resolved, _ = ws.commit(a, "resolved", br.task_ref("resolve"))
    assert git(a, "rev-parse", f"{resolved}^1", f"{resolved}^2").split() == [left, right]
    assert br.merging(a) is None


def test_worktrees_keep_parallel_tasks_apart_in_one_copy(tmp_path: Path) -> None:
    copy = tmp_path / "T1"
    ws.ensure(copy, created=CREATED)
    root = br.start_commit(copy)
    other = tmp_path / ".T1.tasks" / "right"
    ws.add_worktree(copy, other, root)
    (copy / "left.txt").write_text("left\n")
    (other / "right.txt").write_text("right\n")
    left, left_files = ws.commit(copy, "left", br.task_ref("left"))
    right, right_files = ws.commit(other, "right", br.task_ref("right"))
    assert (left_files, right_files) == (["left.txt"], ["right.txt"])
    assert git(copy, "rev-parse", br.task_ref("right")) == right
    assert ws.head(other) == right and ws.head(copy) == left


def test_garbage_is_no_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"\x00not a bundle at all")
    with pytest.raises(WorkspaceError, match="does not look like a v2 or v3 bundle"):
        ws.bundle_head(junk)


def test_missing_commits_names_what_the_copy_lacks(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    root = ws.head(a) or ""
    tip = write_and_commit(a, "x.txt", "x\n")
    assert br.missing_commits(a, [root, tip]) == []
    assert br.missing_commits(a, ["e" * 40, tip]) == ["e" * 40]


def test_join_tells_whether_another_attempt_works_in_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "T1"
    first, alone = ws.join(path)
    assert alone
    second, alone = ws.join(path)
    assert not alone
    ws.leave(first)
    ws.leave(second)
    third, alone = ws.join(path)
    assert alone
    ws.leave(third)

"""The local side of a ticket's workspace, on real git: bundles, rebases, locks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents import workspace as ws
from agents.workspace import WorkspaceConflict, WorkspaceError

CREATED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def write_and_commit(path: Path, name: str, text: str) -> str:
    (path / name).write_text(text)
    sha, files = ws.commit(path, f"{name}: wrote it")
    assert sha is not None and files == [name]
    return sha


def published_copy(source: Path, dest: Path) -> Path:
    """What another machine gets: a copy made from a bundle of `source`."""
    bundle = source.parent / f"{dest.name}.bundle"
    ws.bundle(source, bundle)
    ws.fetch(dest, bundle, ws.bundle_head(bundle))
    ws.checkout(dest, "main", ws.bundle_head(bundle))
    return dest


def test_every_machine_makes_the_same_root_commit_for_a_ticket(tmp_path: Path) -> None:
    ws.ensure(tmp_path / "a", created=CREATED)
    ws.ensure(tmp_path / "b", created=CREATED)
    assert ws.head(tmp_path / "a") == ws.head(tmp_path / "b")
    ws.ensure(tmp_path / "c", created=datetime(2025, 3, 2, tzinfo=UTC))
    assert ws.head(tmp_path / "c") != ws.head(tmp_path / "a")


def test_a_bundle_carries_the_history_to_a_fresh_copy(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    sha = write_and_commit(a, "impl.txt", "built\n")
    b = published_copy(a, tmp_path / "b")
    assert ws.head(b) == sha
    assert (b / "impl.txt").read_text() == "built\n"
    assert ws.branch(b) == "main"
    # The executors' scratch stays out of the work in the new copy too.
    (b / ".omoi-tmp").mkdir()
    (b / ".omoi-tmp" / "x").write_text("scratch")
    assert ws.commit(b, "nothing")[1] == []


def test_checkout_drops_what_a_failed_attempt_left(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    first = ws.head(a)
    assert first is not None
    write_and_commit(a, "kept.txt", "yes\n")
    (a / "kept.txt").write_text("half-edited\n")
    (a / "stray.txt").write_text("left over\n")
    ws.checkout(a, "main", first)
    assert not (a / "kept.txt").exists() and not (a / "stray.txt").exists()


def test_a_commit_is_rebased_onto_what_another_task_published(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    b = published_copy(a, tmp_path / "b")
    theirs = write_and_commit(b, "right.txt", "right\n")
    write_and_commit(a, "left.txt", "left\n")
    bundle = tmp_path / "theirs.bundle"
    ws.bundle(b, bundle)
    ws.fetch(a, bundle, theirs)
    assert not ws.is_ancestor(a, theirs, ws.head(a) or "")

    ws.rebase(a, theirs)
    mine = ws.head(a)
    assert mine is not None and ws.is_ancestor(a, theirs, mine)
    assert (a / "left.txt").exists() and (a / "right.txt").exists()
    assert ws.missing_history(a, mine, [theirs]) == []


def test_a_clashing_commit_is_a_conflict_and_the_copy_is_left_as_it_was(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    b = published_copy(a, tmp_path / "b")
    theirs = write_and_commit(b, "same.txt", "theirs\n")
    mine = write_and_commit(a, "same.txt", "mine\n")
    bundle = tmp_path / "theirs.bundle"
    ws.bundle(b, bundle)
    ws.fetch(a, bundle, theirs)
    with pytest.raises(WorkspaceConflict, match=r"conflicts .* in same\.txt"):
        ws.rebase(a, theirs)
    assert ws.head(a) == mine and (a / "same.txt").read_text() == "mine\n"


def test_garbage_is_no_bundle_and_a_wrong_head_is_caught(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"\x00not a bundle at all")
    with pytest.raises(WorkspaceError, match="does not look like a v2 or v3 bundle"):
        ws.bundle_head(junk)
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    good = tmp_path / "good.bundle"
    ws.bundle(a, good)
    with pytest.raises(WorkspaceError, match="not the published head"):
        ws.fetch(tmp_path / "b", good, "f" * 40)


def test_missing_history_names_commits_the_tip_lacks(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    root = ws.head(a) or ""
    tip = write_and_commit(a, "x.txt", "x\n")
    assert ws.missing_history(a, tip, [root, tip]) == []
    assert ws.missing_history(a, root, [tip]) == [tip]
    assert ws.missing_history(a, tip, ["e" * 40]) == ["e" * 40]


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


def test_a_rebase_refused_for_changes_in_the_tree_says_so(tmp_path: Path) -> None:
    a = tmp_path / "a"
    ws.ensure(a, created=CREATED)
    b = published_copy(a, tmp_path / "b")
    theirs = write_and_commit(b, "right.txt", "right\n")
    write_and_commit(a, "left.txt", "left\n")
    (a / "left.txt").write_text("another attempt is still writing this\n")
    bundle = tmp_path / "theirs.bundle"
    ws.bundle(b, bundle)
    ws.fetch(a, bundle, theirs)
    with pytest.raises(WorkspaceError, match="could not rebase onto") as info:
        ws.rebase(a, theirs)
    assert not isinstance(info.value, WorkspaceConflict)
    assert (a / "left.txt").read_text() == "another attempt is still writing this\n"

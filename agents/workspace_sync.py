"""A ticket's workspace between machines, through the `omoi_workspaces` object store.

The store holds each versioned ticket's history as a git bundle, `<ticket>.bundle`, with
its head commit and branch in the object's headers. A worker pulls it into its own copy
before a task, and publishes the copy after the task's commit, before the success is
written: any task or gate that follows the success finds the work. The validator checks
a gate on a fresh clone of it (`download`).

The rules (docs/architecture.md, "Workspaces"):
- The published head only moves forward. A publish replaces the object only if it is
  still the revision the publisher read (compare-and-set), and only with a descendant.
- Parallel tasks of one ticket: the first to publish wins. A later one rebases its commit
  onto what was published and tries again; if its commit conflicts with it, the attempt
  fails as transient (`workspace`) and runs again from the latest state.
- Before a task, the copy moves to the published head, dropping what a failed attempt
  left, unless it is already there (a retry on the same machine keeps its leftovers, a
  resumed agent conversation its files) or another attempt works in it right now (that
  attempt's commit is rebased when it publishes).
- A workspace that cannot be brought up to date (the object is missing though tasks
  committed, its digest or chunks are wrong, it is no bundle, the head is not in it, its
  history lacks a commit a task recorded) fails the attempt as transient, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agents import branches, workspace
from agents.workspace import WorkspaceError
from bus import Bus, ConflictError, ObjectError, ObjectMissing, StoredObject
from bus import constants as c
from schemas import TaskState, TaskStatus
from schemas.task import task_key
from schemas.ticket import TicketState

log = logging.getLogger(__name__)

# Publishes lost in a row to other tasks of the ticket before the attempt gives up.
PUBLISH_ROUNDS = 10
SHA = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


@dataclass(frozen=True)
class Snapshot:
    """A published workspace: its object, and the head commit and branch it holds."""

    stored: StoredObject
    head: str
    branch: str

    @classmethod
    def of(cls, stored: StoredObject) -> Snapshot:
        head = stored.headers.get(c.HDR_WORKSPACE_HEAD, "")
        if not SHA.match(head):
            raise WorkspaceError(f"object {stored.name} names no head commit ({head!r})")
        branch = stored.headers.get(c.HDR_WORKSPACE_BRANCH) or "main"
        if not BRANCH.match(branch) or ".." in branch:
            raise WorkspaceError(f"object {stored.name} names an invalid branch {branch!r}")
        return cls(stored, head, branch)


@dataclass(frozen=True)
class Published:
    """What a succeeded task's work became: the commit holding it, the files its own
    commit changed, and the object revision that published it."""

    commit: str
    files: list[str]
    revision: int


def _where(ticket_id: str) -> str:
    return f"{c.WORKSPACES_BUCKET}/{c.workspace_object(ticket_id)}"


async def published(bus: Bus, ticket_id: str) -> Snapshot | None:
    """The ticket's published workspace, as its description says (None: none yet)."""
    try:
        stored = await bus.workspaces.info(c.workspace_object(ticket_id))
    except ObjectError as exc:
        raise WorkspaceError(f"{_where(ticket_id)} is damaged: {exc}") from exc
    return Snapshot.of(stored) if stored is not None else None


async def download(bus: Bus, ticket_id: str, dest: Path) -> Snapshot:
    """The ticket's bundle, in `dest`, verified: its digest, that it is a bundle, and
    that the bundle's HEAD is the published head."""
    started = time.monotonic()
    try:
        stored = await bus.workspaces.get(c.workspace_object(ticket_id), dest)
    except ObjectMissing:
        raise WorkspaceError(f"{_where(ticket_id)} does not exist") from None
    except ObjectError as exc:
        raise WorkspaceError(f"{_where(ticket_id)} is damaged: {exc}") from exc
    snapshot = Snapshot.of(stored)
    try:
        found = await asyncio.to_thread(workspace.bundle_head, dest)
    except WorkspaceError as exc:
        raise WorkspaceError(f"{_where(ticket_id)} is not a readable git bundle: {exc}") from exc
    if found != snapshot.head:
        raise WorkspaceError(
            f"{_where(ticket_id)} holds commit {found[:12]}, not its head {snapshot.head[:12]}"
        )
    log.debug(
        "fetched %s (%d bytes) in %.0f ms",
        _where(ticket_id),
        stored.size,
        (time.monotonic() - started) * 1000,
    )
    return snapshot


class WorkspaceSync:
    """The worker's side: `pull` before a task, `publish` when it succeeded, and
    `release` once its outcome is recorded."""

    def __init__(self, bus: Bus, root: Path) -> None:
        self.bus = bus
        self.root = root
        self._joined: dict[str, tuple[int, Path]] = {}  # task id -> its hold, its tree
        self._synced: dict[str, int] = {}  # ticket -> the object revision last fetched

    def path(self, ticket_id: str) -> Path:
        return self.root / ticket_id

    def worktree(self, ticket_id: str, task: str) -> Path:
        return self.root / f".{ticket_id}.tasks" / task

    async def pull(self, ticket: TicketState, task: TaskState) -> Path:
        """Bring this machine's copy of the ticket's workspace up to the published state
        (or make it), start the task's working tree at its base and hold it for the task.

        The task works in the copy itself when no other attempt does, else in a linked
        worktree of its own. MergeConflict if its base does not merge."""
        copy = self.path(ticket.id)
        recorded = await self._recorded_commits(ticket)
        async with workspace.mutex(copy):
            hold, alone = workspace.join(copy)
            try:
                current = await published(self.bus, ticket.id)
                if current is None:
                    await self._start(copy, ticket, recorded)
                else:
                    needed = [*task.base, *recorded]
                    missing = needed
                    if workspace.is_versioned(copy):
                        missing = await asyncio.to_thread(branches.missing_commits, copy, needed)
                    if missing or not workspace.is_versioned(copy):
                        await self._fetch(copy, ticket.id)
                    await self._check_history(copy, ticket.id, recorded)
                tree = copy if alone else self.worktree(ticket.id, task.name)
                await asyncio.to_thread(self._begin, copy, tree, task)
            except BaseException:
                workspace.leave(hold)
                raise
        self._joined[task.id] = (hold, tree)
        return tree

    def _begin(self, copy: Path, tree: Path, task: TaskState) -> None:
        """Put `tree` at the task's start: its base, merged. A retry on the same machine
        that finds the tree still there keeps what its earlier attempt left (a resumed
        agent conversation finds its files)."""
        missing = branches.missing_commits(copy, task.base)
        if missing:
            # The published copy was fetched before this: the commit is gone, not late.
            raise branches.MissingBase(
                f"{_where(task.ticket_id)} lacks commit {missing[0][:12]}, which task "
                f"{task.name} starts from: its branch was replaced or removed",
                missing[0],
            )
        bases = task.base or [branches.start_commit(copy)]
        message = f"omoi: merge for {task.name}\n\nomoi task {task.id}"
        theirs = None
        if task.resolves is not None:
            start, theirs = branches.merged_until_conflict(copy, bases, message)
        else:
            start = branches.merged(copy, bases, message)
        workspace.add_worktree(copy, tree, start)
        at = workspace.head(tree)
        if at != start or branches.merging(tree) != theirs:
            workspace.place(tree, start)
            if theirs is not None:
                branches.begin_merge(tree, theirs)

    def release(self, task_id: str) -> None:
        joined = self._joined.pop(task_id, None)
        if joined is not None:
            workspace.leave(joined[0])

    async def publish(self, task: TaskState, message: str) -> Published | None:
        """Commit the task's work on its branch and publish the copy (None: the task
        holds no git working tree)."""
        joined = self._joined.get(task.id)
        if joined is None or not workspace.is_versioned(joined[1]):
            return None
        tree, copy, ref = joined[1], self.path(task.ticket_id), branches.task_ref(task.name)
        async with workspace.mutex(copy):
            await asyncio.to_thread(workspace.git, tree, "add", "--all")
            left = await asyncio.to_thread(branches.leftover_markers, tree)
            if left:
                raise WorkspaceError(
                    f"conflict markers are still in {', '.join(left[:10])}: resolve them"
                )
            tip, files = await asyncio.to_thread(workspace.commit, tree, message, ref)
            for _ in range(PUBLISH_ROUNDS):
                current = await published(self.bus, task.ticket_id)
                if current is not None and self._synced.get(task.ticket_id) != (
                    current.stored.revision
                ):
                    # Other tasks published meanwhile: take their branches, keep ours.
                    await self._fetch(copy, task.ticket_id)
                    await asyncio.to_thread(workspace.git, copy, "update-ref", ref, tip)
                try:
                    stored = await self._put(tree, task.ticket_id, tip, task.name, current)
                except ConflictError:
                    continue  # another task published first: go again from its state
                self._synced[task.ticket_id] = stored.revision
                return Published(tip, files, stored.revision)
        raise WorkspaceError(
            f"{_where(task.ticket_id)} kept changing: {PUBLISH_ROUNDS} publishes in a row "
            "lost to other tasks of the ticket"
        )

    async def _start(self, ws: Path, ticket: TicketState, recorded: dict[str, str]) -> None:
        """Nothing is published yet: make the copy, or keep the one here."""
        if recorded:
            # Tasks committed, so their work was published, and the object is gone. A copy
            # here that holds all of it is published again by the next success.
            lacking = list(recorded)
            if workspace.is_versioned(ws):
                lacking = await asyncio.to_thread(branches.missing_commits, ws, list(recorded))
            if lacking:
                raise WorkspaceError(
                    f"ticket {ticket.id}'s published workspace ({_where(ticket.id)}) is "
                    f"missing, though its task {recorded[lacking[0]]} committed "
                    f"{lacking[0][:12]}"
                )
            log.warning("%s is missing; this copy holds all its work", _where(ticket.id))
        await asyncio.to_thread(workspace.ensure, ws, ticket.repository, ticket.created_at)

    async def _check_history(self, ws: Path, ticket_id: str, recorded: dict[str, str]) -> None:
        lacking = await asyncio.to_thread(branches.missing_commits, ws, list(recorded))
        if lacking:
            raise WorkspaceError(
                f"{_where(ticket_id)} lacks commit {lacking[0][:12]} of task "
                f"{recorded[lacking[0]]}: it was replaced or rolled back"
            )

    async def _fetch(self, ws: Path, ticket_id: str) -> Snapshot:
        """Bring the published branches into the copy, without moving any working tree."""
        scratch = ws.parent / f".{ws.name}.{uuid.uuid4().hex[:12]}.bundle"
        try:
            snapshot = await download(self.bus, ticket_id, scratch)
            await asyncio.to_thread(workspace.fetch, ws, scratch)
            self._synced[ticket_id] = snapshot.stored.revision
            return snapshot
        finally:
            scratch.unlink(missing_ok=True)

    async def _put(
        self, tree: Path, ticket_id: str, head: str, task_name: str, replacing: Snapshot | None
    ) -> StoredObject:
        scratch = self.path(ticket_id).parent / f".{ticket_id}.{uuid.uuid4().hex[:12]}.bundle"
        started = time.monotonic()
        try:
            await asyncio.to_thread(workspace.bundle, tree, scratch)
            stored = await self.bus.workspaces.put(
                c.workspace_object(ticket_id),
                scratch,
                headers={
                    c.HDR_WORKSPACE_HEAD: head,
                    c.HDR_WORKSPACE_BRANCH: branches.task_branch(task_name),
                },
                replacing=replacing.stored if replacing is not None else None,
            )
        finally:
            scratch.unlink(missing_ok=True)
        log.debug(
            "published %s at %s (%d bytes) in %.0f ms",
            _where(ticket_id),
            head[:12],
            stored.size,
            (time.monotonic() - started) * 1000,
        )
        return stored

    async def _recorded_commits(self, ticket: TicketState) -> dict[str, str]:
        """Commit -> the task that recorded it, for the ticket's succeeded tasks."""
        found: dict[str, str] = {}
        for name in ticket.tasks:
            task = await self.bus.tasks.value(task_key(ticket.id, name))
            if task is None or task.status is not TaskStatus.SUCCEEDED or task.result is None:
                continue
            if task.result.commit:
                found.setdefault(task.result.commit, name)
        return found

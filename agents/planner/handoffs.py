"""Handed-off tasks that nobody can take: a handoff to a capability no live agent serves
fails the task, with that reason, once `handoff_timeout_s` has passed."""

from __future__ import annotations

from collections.abc import Iterable

from schemas import Heartbeat, TaskState, TaskStatus, utcnow


def served(beats: Iterable[Heartbeat]) -> set[tuple[str, str]]:
    """(phase, capability) pairs a live worker serves."""
    now = utcnow()
    return {
        (phase, cap)
        for beat in beats
        if beat.role == "worker" and not beat.is_stale(now)
        for phase in beat.phases
        for cap in beat.capabilities
    }


def unserved(task: TaskState, serving: set[tuple[str, str]], timeout_s: float) -> str | None:
    """Why a handed-off, still waiting task fails now (None: it may wait on)."""
    handoff = task.handoff
    if handoff is None or task.status not in (TaskStatus.BLOCKED, TaskStatus.QUEUED):
        return None
    waited = (utcnow() - handoff.at).total_seconds()
    if waited < timeout_s or (task.phase.value, task.capability) in serving:
        return None
    return (
        f"handed off to capability {task.capability!r} in {task.phase.value}, which no "
        f"live agent serves (waited {waited:.0f}s)"
    )

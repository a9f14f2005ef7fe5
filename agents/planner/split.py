"""`split` and `sync`, decided from state: fanning a task out over a list, and barriers.

A split task becomes one subtask per item of the list its `over` task produced,
`<task>-1` … `<task>-N`, made when it would otherwise be queued. Each subtask is the split
task with its item: `OMOI_ITEM` in its environment, `{item}` replaced in an agent's
instructions. The split task itself then depends on its subtasks and does no work of its
own: it merges their branches, so whatever depends on it (a `join`, say) starts from all of
them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from schemas import TaskState, TaskStatus
from schemas.task import ITEM_ORIGIN, task_key


def produced_list(producer: TaskState) -> list[Any] | None:
    """The list a task produced: its summary, or the last line of its output, that is a
    JSON list."""
    result = producer.result
    if result is None:
        return None
    candidates = [result.summary.strip()]
    candidates += reversed([line.strip() for line in result.output_tail.splitlines()])
    for text in candidates:
        if text.startswith("["):
            try:
                found = json.loads(text)
            except ValueError:
                continue
            if isinstance(found, list):
                return found
    return None


def item_text(item: Any) -> str:
    return item if isinstance(item, str) else json.dumps(item)


def fan_out(task: TaskState, tasks: Mapping[str, TaskState]) -> list[TaskState] | str:
    """The subtasks of a ready split task, or why it cannot be split (its failure)."""
    assert task.split is not None
    over = task.split.over
    producer = tasks.get(over)
    items = produced_list(producer) if producer is not None else None
    if items is None:
        return f"task {task.name} splits over the output of {over}, which is not a JSON list"
    if len(items) > task.split.max:
        return (
            f"task {task.name} splits over {len(items)} items from {over}, more than its "
            f"bound of {task.split.max}"
        )
    out = []
    for i, item in enumerate(items, start=1):
        name = f"{task.name}-{i}"
        text = item_text(item)
        out.append(
            task.model_copy(
                update={
                    "id": task_key(task.ticket_id, name),
                    "name": name,
                    "split": None,
                    "item": text,
                    "instructions": (
                        task.instructions.replace("{item}", text) if task.instructions else None
                    ),
                    "origin": f"{ITEM_ORIGIN}{task.name}:{i}",
                    "status": TaskStatus.BLOCKED,
                },
                deep=True,
            )
        )
    return out


def held_at_barrier(ready: list[str], tasks: Mapping[str, TaskState]) -> set[str]:
    """Ready tasks of a sync group that must wait: some member cannot start yet."""
    ready_set = set(ready)
    held = set()
    groups = {t.sync for t in tasks.values() if t.sync and t.name in ready_set}
    for group in groups:
        members = [t for t in tasks.values() if t.sync == group]
        if any(t.status is TaskStatus.BLOCKED and t.name not in ready_set for t in members):
            held |= {t.name for t in members if t.name in ready_set}
    return held

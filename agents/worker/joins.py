"""What a `join` task gets: the results of the tasks it joins, by name.

A split task it depends on stands for its subtasks, so a join after a split sees every
item's result. A result is the task's summary (an agent's final message) or, for a
command, the last line it printed.
"""

from __future__ import annotations

from bus import Bus
from schemas import TaskState
from schemas.task import ITEM_ORIGIN, task_key

RESULT_CHARS = 4000


def result_text(task: TaskState) -> str:
    if task.result is None:
        return ""
    text = task.result.summary.strip()
    if not text:
        lines = [line for line in task.result.output_tail.splitlines() if line.strip()]
        text = lines[-1].strip() if lines else ""
    return text[:RESULT_CHARS]


async def joined_results(bus: Bus, task: TaskState) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in task.depends_on:
        dep = await bus.tasks.value(task_key(task.ticket_id, name))
        if dep is None:
            continue
        if not dep.fanned_out:
            out[name] = result_text(dep)
            continue
        prefix = f"{ITEM_ORIGIN}{dep.name}:"
        for sub_name in dep.depends_on:
            sub = await bus.tasks.value(task_key(task.ticket_id, sub_name))
            if sub is not None and (sub.origin or "").startswith(prefix):
                out[sub_name] = result_text(sub)
    return out

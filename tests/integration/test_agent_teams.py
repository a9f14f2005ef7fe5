"""Coding agents working one ticket together: resolving a merge conflict, asking each
other, handing a task on, and four at once ending in one merged branch. Real OpenHands
sessions on the scripted model, real git, NATS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agents.executors.agent import AgentExecutor
from agents.planner.agent import Planner
from agents.scripts.build_demo import finish, task, term
from agents.settings import Settings
from agents.validator.agent import Validator
from agents.worker.agent import Worker, default_executors
from bus import Bus
from schemas import TaskStatus, TicketStatus
from tests.helpers import EventLog, Running, submit, ticket_finished, wait_until
from tests.integration.agent_support import (
    ModelFactory,
    Start,
    git_log,
    git_parents,
    run_agent_ticket,
    with_model,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_a_merge_conflict_becomes_a_resolution_task_that_resolves_it(
    bus: Bus,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    resolver = "resolve-merge-implementation"
    server = model_server({
        "conversations": [task(
            resolver,
            term("cat same.txt"),
            term("printf 'left\\nright\\n' > same.txt"),
            finish("Kept both lines."),
        )],
    })  # fmt: skip
    s = with_model(settings, server, short_dir)
    events = await EventLog(bus).start()
    await start_agents(s)
    payload = {
        "id": "T-conflict",
        "title": "Two tasks, one line",
        "tasks": [
            # Parallel in the graph: both start from the phase's start and edit one line.
            {"name": "left", "phase": "implementation", "command": "echo left > same.txt"},
            {"name": "right", "phase": "implementation", "command": "echo right > same.txt"},
            {"name": "check", "phase": "testing", "depends_on": ["left", "right"],
             "command": "cat same.txt"},
        ],
        # A gate makes it a git ticket: branches, merges, commits.
        "gates": {"testing": {"checks": [
            {"kind": "file", "path": "same.txt", "contains": "left\nright"},
        ]}},
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]
    ticket = await wait_until(lambda: ticket_finished(bus, "T-conflict"), timeout=120)
    assert ticket.status is TicketStatus.DONE, ticket.reason

    conflicted = events.of("T-conflict", "merge.conflicted")
    assert [e.task for e in conflicted] == ["merge-implementation"]
    assert conflicted[0].data["files"] == ["same.txt"]
    fix = await bus.tasks.value(f"T-conflict.{resolver}")
    assert fix is not None and fix.status is TaskStatus.SUCCEEDED
    assert fix.capability == "agent" and fix.resolves == "merge-implementation"
    assert fix.instructions and "<<<<<<<" in fix.instructions and "right" in fix.instructions
    # The model saw the conflict marked in the file, in its working tree.
    shown = json.dumps([r["messages"] for r in server.requests if r["turn"] == 1])
    assert "<<<<<<<" in shown and ">>>>>>>" in shown
    merge = await bus.tasks.value("T-conflict.merge-implementation")
    assert merge is not None and merge.status is TaskStatus.SUCCEEDED
    assert merge.attempts == 1 and merge.generation == 1 and merge.depends_on[0] == resolver
    assert fix.result is not None and merge.result is not None
    assert merge.result.commit == fix.result.commit  # the resolution is the merge
    check = await bus.tasks.value("T-conflict.check")
    assert check is not None and check.result is not None
    assert check.result.output_tail.split() == ["left", "right"]
    copy = s.workspaces_dir / "T-conflict"
    parents = git_parents(copy, fix.result.commit)
    left = await bus.tasks.value("T-conflict.left")
    right = await bus.tasks.value("T-conflict.right")
    assert left is not None and right is not None and left.result and right.result
    assert sorted(parents) == sorted([left.result.commit, right.result.commit])
    await events.stop()


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


async def test_an_agent_asks_another_messages_the_ticket_and_hands_its_task_off(
    bus: Bus, settings: Settings, short_dir: Path, model_server: ModelFactory, running: Running
) -> None:
    server = model_server({
        "conversations": [
            # The task as the reviewer gets it: handed over, with the drafter's context.
            {"name": "continue", "match": r"## Handed over by .*half done, needs review",
             "turns": [term("cat draft.txt"), finish("Reviewed the draft.")]},
            {"name": "answer", "match": "omoi:answer", "turns": [{"content": "Use tabs."}]},
            task("draft",
                 term("echo draft > draft.txt"),
                 call("ask_agent", to="capability:review", question="Tabs or spaces?",
                      timeout_s=30),
                 call("send_message", to="ticket", text="drafted, handing over"),
                 call("handoff", capability="review", context="half done, needs review"),
                 finish("Handed to review.")),
        ],
    })  # fmt: skip
    s = with_model(settings, server, short_dir)
    events = await EventLog(bus).start()
    await running.start(Planner(bus, s))
    env = dict(os.environ)
    drafter = Worker(bus, s, phases=["implementation"], capabilities=["agent"],
                     executors=default_executors(s, env), agent_id="drafter")  # fmt: skip
    reviewer = Worker(bus, s, phases=["implementation"], capabilities=["review"],
                      executors={"review": AgentExecutor(s, env)}, agent_id="reviewer")  # fmt: skip
    await running.start(drafter)
    await running.start(reviewer)
    ticket = await run_agent_ticket(bus, "T-handoff", "draft", "Draft it.")
    assert ticket.status is TicketStatus.DONE, ticket.reason
    # The ticket's state can be read before the log has caught up with its events; the log
    # is in stream order, so once it has ticket.done it has everything before.
    await events.wait_type("T-handoff", "ticket.done")

    handed = events.of("T-handoff", "task.handed_off")
    history = [
        (e.type, e.agent, e.data.get("reason") or e.data.get("error"))
        for e in events.of("T-handoff")
    ]
    assert [(e.agent, e.data["to_capability"]) for e in handed] == [("drafter", "review")], (
        "\n".join(map(str, history))
    )
    assert handed[0].data["context"] == "half done, needs review" and handed[0].data["commit"]
    sent = events.of("T-handoff", "message.sent")
    assert [(e.data["message"], e.data["to"]) for e in sent] == [
        ("question", "capability:review"),
        ("message", "ticket"),
    ]
    # The reviewer's model answered, and the drafter's conversation got the answer.
    drafting = [r for r in server.requests if r["conversation"] == "draft"]
    assert any("Use tabs." in json.dumps(r["messages"]) for r in drafting)
    state = await bus.tasks.value("T-handoff.draft")
    assert state is not None and state.status is TaskStatus.SUCCEEDED
    assert (state.capability, state.worker) == ("review", "reviewer")
    assert state.handoff is not None and state.handoff.by == "drafter"
    assert state.result is not None and state.result.summary == "Reviewed the draft."
    # The reviewer went on from the drafter's committed work.
    reviewing = [r for r in server.requests if r["conversation"] == "continue"]
    assert any("draft" in json.dumps(r["messages"][-1]) for r in reviewing[1:])
    assert (
        handed[0].data["commit"]
        in git_parents(s.workspaces_dir / "T-handoff", state.result.commit or "")
        or handed[0].data["commit"] == state.result.commit
    )
    await events.stop()


async def test_a_handoff_to_a_capability_nobody_serves_fails_clearly(
    bus: Bus, settings: Settings, short_dir: Path, model_server: ModelFactory, running: Running
) -> None:
    server = model_server({"conversations": [task(
        "lonely", call("handoff", capability="gpu", context="needs a GPU"), finish("Handed."),
    )]})  # fmt: skip
    s = with_model(settings, server, short_dir).model_copy(update={"handoff_timeout_s": 1.0})
    await running.start(Planner(bus, s))
    await running.start(
        Worker(bus, s, phases=["implementation"], capabilities=["agent"],
               executors=default_executors(s, dict(os.environ)))
    )  # fmt: skip
    ticket = await run_agent_ticket(bus, "T-lonely", "lonely", "Try.", timeout=60)
    assert ticket.status is TicketStatus.FAILED
    state = await bus.tasks.value("T-lonely.lonely")
    assert state is not None and state.status is TaskStatus.FAILED
    assert "handed off to capability 'gpu'" in (state.reason or "")
    assert "no live agent serves" in (state.reason or "")


async def test_four_agents_on_four_workers_end_with_one_merged_branch(
    bus: Bus, settings: Settings, short_dir: Path, model_server: ModelFactory, running: Running
) -> None:
    # a and b write files of their own; c and d write the same line of one file.
    conversations = [
        task("a", term("echo a > a.txt"), finish("wrote a")),
        task("b", term("echo b > b.txt"), finish("wrote b")),
        task("c", term("echo c > shared.txt"), finish("wrote c")),
        task("d", term("echo d > shared.txt"), finish("wrote d")),
        task("resolve-merge-implementation",
             term("printf 'c\\nd\\n' > shared.txt"), finish("kept c and d")),
    ]  # fmt: skip
    server = model_server({"conversations": conversations})
    s = with_model(settings, server, short_dir)
    events = await EventLog(bus).start()
    await running.start(Planner(bus, s))
    await running.start(Validator(bus, s, env=dict(os.environ)))
    for n in range(4):
        await running.start(
            Worker(bus, s, phases=["implementation"], capabilities=["agent"],
                   executors=default_executors(s, dict(os.environ)), agent_id=f"agent-{n}")
        )  # fmt: skip
    payload = {
        "id": "T-four",
        "title": "Four at once",
        "tasks": [{"name": n, "phase": "implementation", "capability": "agent",
                   "instructions": f"Write {n}."} for n in "abcd"],
        "gates": {"implementation": {"checks": [
            {"kind": "file", "path": "shared.txt", "contains": "c\\nd"},
        ]}},
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]
    ticket = await wait_until(lambda: ticket_finished(bus, "T-four"), timeout=180)
    assert ticket.status is TicketStatus.DONE, ticket.reason

    workers = {e.agent for e in events.of("T-four", "task.started") if e.task in tuple("abcd")}
    assert len(workers) >= 2  # spread over the workers, not queued behind one
    [conflict] = events.of("T-four", "merge.conflicted")
    assert conflict.data["files"] == ["shared.txt"]
    merge = await bus.tasks.value("T-four.merge-implementation")
    assert merge is not None and merge.result is not None
    assert ticket.commit == merge.result.commit
    copy = s.workspaces_dir / "T-four"
    log = git_log(copy, ticket.commit or "")
    for name in "abcd":
        assert f"{name}: wrote {name}" in log  # each task's own commit is in the history
    assert "resolve-merge-implementation: kept c and d" in log
    await events.stop()

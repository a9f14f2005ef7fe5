"""Coding agents end to end: real OpenHands conversations, real git, real gates.

The model is the scripted one (an OpenAI-compatible server on 127.0.0.1 replaying fixed
turns); everything else is real: the SDK and its tools, tmux, the workspace repository,
the validator's clean copy and test run, NATS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agents.planner.agent import Planner
from agents.scripts.build_demo import PLAN, TESTS, create, finish, script, task, term
from agents.settings import Settings
from agents.worker.agent import Worker, default_executors
from bus import Bus
from schemas import WORK_PHASES, CancelTask, TaskStatus, TicketStatus
from schemas.ticket import GateStatus
from tests.conftest import agent_env
from tests.helpers import AgentProcess, EventLog, Running, submit, ticket_finished, wait_until
from tests.integration.agent_support import (
    ModelFactory,
    Start,
    agent_ticket,
    git_head,
    git_log,
    run_agent_ticket,
    with_model,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TEST_CMD = "PYTHONPATH=src python3 -m unittest discover -s tests -v"


async def test_demo_ticket_passes_all_five_gates(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    server = model_server(script())
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    reply = await submit(bus, {"id": "T-demo", "title": "Add slugify", "workflow": "agent"})
    assert reply["ok"], reply

    ticket = await wait_until(lambda: ticket_finished(bus, "T-demo"), timeout=200)
    assert ticket.status is TicketStatus.DONE, ticket.reason

    # The model planned the tasks (its instructions, not the template's).
    requirements = await bus.tasks.value("T-demo.requirements")
    assert requirements is not None
    assert requirements.instructions == PLAN["tasks"][0]["instructions"]

    # Every gate passed on its first attempt, with evidence.
    assert set(ticket.gates) == set(WORK_PHASES)
    assert all(g.status is GateStatus.PASSED and g.attempts == 1 for g in ticket.gates.values())
    testing = ticket.gates[WORK_PHASES[3]].verdicts[-1]
    run = testing.checks[0]
    assert run.exit_code == 0 and "Ran 4 tests" in run.output_tail and "OK" in run.output_tail
    review = ticket.gates[WORK_PHASES[0]].verdicts[-1].review
    assert review is not None and review.startswith("VERDICT: PASS")
    artifact = ticket.gates[WORK_PHASES[4]].verdicts[-1].checks[0]
    assert list(artifact.files) == ["dist/textkit-0.1.0.tar.gz"]
    assert len(artifact.files["dist/textkit-0.1.0.tar.gz"]) == 64  # a sha256

    # One commit per task, each naming it; the ticket's result is the last one.
    ws = s.workspaces_dir / "T-demo"
    log = git_log(ws)
    for name in ("requirements", "design", "implement", "test", "deploy"):
        assert any(line.startswith(f"{name}: ") for line in log), log
    assert ticket.commit == git_head(ws)
    assert (ws / "src/textkit/slug.py").is_file()
    assert "Ran 4 tests" in (ws / "docs/test-report.txt").read_text()

    # Context reached the later phases: the deploy prompt carries the test summary.
    assert [c.phase for c in ticket.context] == list(WORK_PHASES)
    deploy_prompts = [r for r in server.requests if r["conversation"] == "deploy"]
    first_user = next(m for m in deploy_prompts[0]["messages"] if m["role"] == "user")
    assert "docs/test-report.txt" in json.dumps(first_user)

    # Tokens and cost of every attempt are in its events; the key is in none of them.
    succeeded = events.of("T-demo", "task.succeeded")
    assert len(succeeded) == 5
    assert all(e.data["usage"]["prompt_tokens"] > 0 for e in succeeded)
    assert all(e.data["usage"]["cost_usd"] > 0 for e in succeeded)
    assert events.of("T-demo", "task.progress")
    assert "sk-test-secret" not in json.dumps([e.model_dump(mode="json") for e in events.events])


BUGGY_SLUG = """import re
import unicodedata


def slugify(text: str) -> str:
    plain = text.lower()
    slug = re.sub(r"[^a-z0-9]+", "-", plain).strip("-")
    return slug or "n-a"
"""
FIXED_LINES = (
    '    plain = unicodedata.normalize("NFKD", text)\n'
    '    plain = "".join(c for c in plain if not unicodedata.combining(c)).lower()\n'
)


def fix_script() -> dict[str, Any]:
    implement = task(
        "implement",
        term("mkdir -p src/textkit tests"),
        create("src/textkit/__init__.py", "from textkit.slug import slugify\n"),
        create("src/textkit/slug.py", BUGGY_SLUG),
        create("tests/test_slug.py", TESTS),
        finish("Implemented slugify."),
    )
    fix = task(
        "fix-testing-1",
        {
            "tool_calls": [
                {
                    "name": "file_editor",
                    "arguments": {
                        "command": "str_replace",
                        "path": "${workspace}/src/textkit/slug.py",
                        "old_str": "    plain = text.lower()\n",
                        "new_str": FIXED_LINES,
                    },
                }
            ]
        },
        finish("Fixed accents in slugify."),
    )
    test = task("test", term(TEST_CMD), finish("Ran the tests."))
    return {"conversations": [implement, fix, test]}


async def test_failing_tests_send_the_ticket_back_to_implementation(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    server = model_server(fix_script())
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    payload = {
        "id": "T-fix",
        "title": "Slugify",
        "tasks": [
            {"name": "implement", "phase": "implementation", "capability": "agent",
             "instructions": "Implement slugify with tests."},
            {"name": "test", "phase": "testing", "capability": "agent",
             "instructions": "Run the tests.", "depends_on": ["implement"]},
        ],
        "gates": {
            "implementation": {"checks": [{"kind": "glob", "path": "tests/test_*.py"}]},
            "testing": {
                "fix_phase": "implementation",
                "checks": [{"kind": "command", "command": TEST_CMD, "name": "unit tests"}],
            },
        },
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]

    failed = await events.wait_type("T-fix", "gate.failed", timeout=120)
    assert failed.data["phase"] == "testing"
    back = await events.wait(
        lambda e: (
            e.ticket_id == "T-fix"
            and e.type == "ticket.phase_changed"
            and e.data["to"] == "implementation"
            and e.data["from"] == "testing"
        )
    )
    assert "gate failed" in back.data["reason"]

    ticket = await wait_until(lambda: ticket_finished(bus, "T-fix"), timeout=200)
    assert ticket.status is TicketStatus.DONE, ticket.reason
    fix = await bus.tasks.value("T-fix.fix-testing-1")
    assert fix is not None and fix.status is TaskStatus.SUCCEEDED
    assert fix.phase.value == "implementation"
    # The failure output reached the fixer's prompt.
    assert "test_accents" in (fix.instructions or "")
    fix_prompt = next(r for r in server.requests if r["conversation"] == "fix-testing-1")
    assert "test_accents" in json.dumps(fix_prompt["messages"])
    gate = ticket.gates[WORK_PHASES[3]]
    assert gate.status is GateStatus.PASSED and gate.attempts == 2
    assert not gate.verdicts[0].passed and gate.verdicts[-1].passed
    # The tests ran again after the fix, as a new generation of the test task.
    test = await bus.tasks.value("T-fix.test")
    assert test is not None and test.generation == 1 and test.status is TaskStatus.SUCCEEDED


def pids_of(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def test_cancel_interrupts_a_conversation_mid_tool_call(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
    running: Running,
) -> None:
    server = model_server(
        {"conversations": [task("slow", term("sleep 47.25; echo done"), finish("never"))]}
    )
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    worker = running.agents[-1][0]
    assert (await submit(bus, agent_ticket("T-cancel", "slow", "Wait.")))["ok"]
    await wait_until(lambda: _async(pids_of("sleep 47.25")), timeout=60)

    loop_time = __import__("asyncio").get_running_loop().time
    started = loop_time()
    cmd = CancelTask(task_id="T-cancel.slow", reason="test")
    reply = await bus.nc.request("omoi.commands.task.cancel", cmd.to_json(), timeout=10)
    assert json.loads(reply.data)["ok"]
    await wait_until(
        lambda: _async(worker.current_task is None and not pids_of("sleep 47.25")), timeout=2.0
    )
    assert loop_time() - started < 2.0
    assert (await bus.tasks.value("T-cancel.slow")).status is TaskStatus.CANCELLED  # type: ignore[union-attr]


async def _async[T](value: T) -> T:
    return value


async def test_worker_killed_mid_conversation_resumes_it(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    tmp_path: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    server = model_server(
        {
            "conversations": [
                task(
                    "resumable",
                    term("echo one > one.txt"),
                    term("sleep 38.5; echo two"),
                    finish("resumed and finished"),
                )
            ]
        }
    )
    s = with_model(settings, server, short_dir)
    await start_agents(s, worker=False)
    env = agent_env(s)
    first = await AgentProcess("worker", "worker-first", env, tmp_path / "w1.log").start(bus)
    assert (await submit(bus, agent_ticket("T-resume", "resumable", "Do two steps.")))["ok"]
    await wait_until(lambda: _async(pids_of("sleep 38.5")), timeout=60)
    assert [r["turn"] for r in server.requests] == [0, 1]
    await first.kill9()

    second = await AgentProcess("worker", "worker-second", env, tmp_path / "w2.log").start(bus)
    try:
        ticket = await wait_until(lambda: ticket_finished(bus, "T-resume"), timeout=120)
    finally:
        await second.terminate()
    assert ticket.status is TicketStatus.DONE, ticket.reason
    done = await bus.tasks.value("T-resume.resumable")
    assert done is not None and done.result is not None
    assert done.result.summary == "resumed and finished"
    assert [e.category for e in done.errors] == ["worker_lost"]
    # The conversation went on from where it was: no request started it over. (The SDK
    # either runs the interrupted step again or, since 1.58.2, asks for it again.)
    assert [r["turn"] for r in server.requests][2:] in ([2], [1, 2])
    assert (s.workspaces_dir / "T-resume" / "one.txt").read_text() == "one\n"
    # The API key reached the model, and nothing else: not the workers' logs.
    for log in ("w1.log", "w2.log"):
        assert "sk-test-secret" not in (tmp_path / log).read_text()


async def test_budget_overrun_fails_the_task_permanently(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    expensive = {"usage": {"prompt_tokens": 900, "completion_tokens": 200}}
    server = model_server(
        {
            "conversations": [
                task(
                    "spender",
                    {**term("echo a"), **expensive},
                    {**term("echo b"), **expensive},
                    finish("done"),
                )
            ]
        }
    )
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    payload = agent_ticket("T-budget", "spender", "Spend.", budget={"max_tokens": 1000})
    assert (await submit(bus, payload))["ok"]
    failed = await events.wait_type("T-budget", "task.failed", timeout=90)
    assert failed.data["error"]["category"] == "budget"
    assert "1100 tokens" in failed.data["error"]["message"]
    assert failed.data["usage"]["prompt_tokens"] == 900
    task_state = await bus.tasks.value("T-budget.spender")
    assert task_state is not None and task_state.attempts == 1  # not retried
    assert task_state.usage.completion_tokens == 200
    ticket = await wait_until(lambda: ticket_finished(bus, "T-budget"), timeout=30)
    assert ticket.status is TicketStatus.FAILED


async def test_invalid_decomposition_falls_back_to_the_template(
    bus: Bus,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    server = model_server(
        {"conversations": [{"name": "decompose", "match": "omoi:decompose",
                            "turns": [{"content": "Sure! Here is a plan: step 1..."}]}]}
    )  # fmt: skip
    s = with_model(settings, server, short_dir)
    await start_agents(s, worker=False)
    assert (await submit(bus, {"id": "T-plan", "title": "Plan it", "workflow": "agent"}))["ok"]
    ticket = await wait_until(lambda: bus.tickets.value("T-plan"), timeout=30)
    assert ticket.tasks == ["requirements", "design", "implement", "test", "deploy"]
    asked = [r for r in server.requests if r["conversation"] == "decompose"]
    assert len(asked) == 2
    retry = json.dumps(asked[1]["messages"])
    assert "rejected" in retry and "not JSON" in retry
    template = await bus.tasks.value("T-plan.requirements")
    assert template is not None and "Write docs/requirements.md for: Plan it" in (
        template.instructions or ""
    )
    with contextlib.suppress(Exception):
        await bus.nc.request(
            "omoi.commands.ticket.cancel", json.dumps({"ticket_id": "T-plan"}).encode(), timeout=5
        )


async def test_ticket_budget_spans_all_its_tasks(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    start_agents: Start,
) -> None:
    costly = {"usage": {"prompt_tokens": 1000, "completion_tokens": 100}}
    server = model_server(
        {
            "conversations": [
                task("first", {**finish("first done"), **costly}),
                task("second", {**finish("second done"), **costly}),
            ]
        }
    )
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    payload = {
        "id": "T-tb",
        "title": "Ticket budget",
        "budget": {"max_tokens": 1500},
        "tasks": [
            {"name": "first", "phase": "design", "capability": "agent", "instructions": "One."},
            {"name": "second", "phase": "implementation", "capability": "agent",
             "instructions": "Two.", "depends_on": ["first"]},
        ],
    }  # fmt: skip
    assert (await submit(bus, payload))["ok"]
    ticket = await wait_until(lambda: ticket_finished(bus, "T-tb"), timeout=120)
    assert ticket.status is TicketStatus.FAILED
    first = await bus.tasks.value("T-tb.first")
    second = await bus.tasks.value("T-tb.second")
    assert first is not None and first.status is TaskStatus.SUCCEEDED
    assert first.usage.total_tokens == 1100
    assert second is not None and second.status is TaskStatus.FAILED
    assert second.error is not None and second.error.category == "budget"
    assert second.attempts == 1


PROBE_KEY = "omoi-model-key-8d2e61b4c0"  # no provider's shape: nothing else would hide it
PER_TASK = {"OMOI_TICKET_ID", "OMOI_TICKET_TITLE", "OMOI_TICKET_DESCRIPTION", "OMOI_TASK",
            "OMOI_PHASE", "OMOI_ATTEMPT", "OMOI_ITEM", "OMOI_JOINED"}  # fmt: skip
# The shell's variables, its environment as the kernel has it, and the tmux server's.
ENV_PROBE = (
    "(echo \"key:$OMOI_LLM_API_KEY\"; env; cat /proc/self/environ | tr '\\000' '\\n'; "
    "echo ---; cat /proc/$PPID/environ | tr '\\000' '\\n') > probe.txt; cat probe.txt"
)


async def test_the_agents_terminal_never_sees_the_key_or_the_workers_settings(
    bus: Bus,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    running: Running,
) -> None:
    server = model_server({"conversations": [task("probe", term(ENV_PROBE), finish("probed"))]})
    s = with_model(settings, server, short_dir).model_copy(
        update={"llm_api_key": SecretStr(PROBE_KEY)}
    )
    # What `omoi up` hands a worker: its settings, the key among them, and NATS_URL.
    worker_env = {**os.environ, **s.to_env(), "OPENAI_API_KEY": PROBE_KEY}
    assert worker_env["OMOI_LLM_API_KEY"] == PROBE_KEY and worker_env["NATS_URL"]
    await running.start(Planner(bus, s))
    await running.start(
        Worker(
            bus,
            s,
            phases=[p.value for p in WORK_PHASES],
            capabilities=["agent"],
            executors=default_executors(s, worker_env),
        )
    )
    ticket = await run_agent_ticket(bus, "T-env", "probe", "Look around.")
    assert ticket.status is TicketStatus.DONE, ticket.reason

    probe = (s.workspaces_dir / "T-env" / "probe.txt").read_text()
    shell, _, tmux_server = probe.partition("---\n")
    assert "key:\n" in shell  # not set at all
    assert "OMOI_TICKET_ID=T-env" in shell and "PATH=" in shell and "PATH=" in tmux_server
    assert PROBE_KEY not in probe
    seen = {line.split("=", 1)[0] for line in probe.splitlines() if "=" in line}
    assert not {n for n in seen if n.startswith("NATS_")}, seen
    assert {n for n in seen if n.startswith("OMOI_")} <= PER_TASK, seen
    assert "OPENAI_API_KEY" not in seen
    # What the model was shown of the terminal: the same.
    shown = json.dumps([r["messages"] for r in server.requests if r["turn"] == 1])
    assert "OMOI_TICKET_ID=T-env" in shown and PROBE_KEY not in shown
    # And the key reached the model client, on every call.
    credential = hashlib.sha256(f"Bearer {PROBE_KEY}".encode()).hexdigest()
    assert server.requests and {r["credential"] for r in server.requests} == {credential}

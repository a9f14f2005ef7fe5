"""Phase context hand-over, model decomposition parsing, budgets, agent prompts and intake."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agents.errors import InvalidTicket, PermanentFailure
from agents.executors.agent.executor import AgentExecutor, conversation_id
from agents.executors.agent.prompt import build_prompt
from agents.executors.base import ExecutionContext
from agents.planner import context, decompose, phases, rights
from agents.planner.intake import build
from agents.settings import Settings
from schemas import Phase, TaskResult, TaskState, TaskStatus, TicketState
from schemas.gate import CheckKind, CheckResult, GateVerdict
from schemas.ticket import GateState, GateStatus, PhaseContext
from schemas.usage import Budget, Usage

P, S = Phase, TaskStatus
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SECRET = "sk-very-secret-value-1234"


def ticket(**fields: Any) -> TicketState:
    return TicketState(**{"id": "T1", "title": "Add a cache", **fields})


def task(name: str, phase: Phase, status: TaskStatus = S.SUCCEEDED, **fields: Any) -> TaskState:
    return TaskState(
        id=f"T1.{name}", ticket_id="T1", name=name, phase=phase, status=status, **fields
    )


def done(name: str, phase: Phase, at: int, **result: Any) -> TaskState:
    return task(name, phase, result=TaskResult(**result), finished_at=T0 + timedelta(seconds=at))


def gate_verdict(attempt: int, passed: bool, feedback: str, *files: str) -> GateVerdict:
    check = CheckResult(
        name="c", kind=CheckKind.FILE, passed=passed, detail="", files=dict.fromkeys(files, "ab")
    )
    return GateVerdict(
        ticket_id="T1",
        phase=P.DESIGN,
        attempt=attempt,
        passed=passed,
        checks=[check],
        feedback=feedback,
    )


def rejected(text: str) -> str:
    with pytest.raises(InvalidTicket) as info:
        decompose.parse(text)
    return info.value.message


def submit(**fields: Any) -> Any:
    data = json.dumps({"title": "Add a cache", **fields}).encode()
    return build(data, granted=rights.ALL, max_bytes=1_000_000, default_workflow="default")


# context.gather / clip / summarise


def test_gather_collects_the_phase_in_finish_order() -> None:
    state = {
        t.name: t
        for t in [
            done("late", P.DESIGN, 5, summary="wrote docs/api.md", files=["docs/api.md"]),
            done("early", P.DESIGN, 1, output_tail="noise\n" * 9 + "tail-1\ntail-2\n"),
            task("failed", P.DESIGN, S.FAILED),
            done("other", P.REQUIREMENTS, 0, summary="not this phase"),
        ]
    }
    gate = GateState(
        attempts=2,
        status=GateStatus.PASSED,
        verdicts=[
            gate_verdict(1, False, "  design.md is empty  ", "docs/design.md", "docs/api.md"),
            gate_verdict(2, True, "all good", "docs/design.md"),
        ],
    )
    ctx = context.gather(ticket(gates={P.DESIGN: gate}), state, P.DESIGN)
    lines = ctx.summary.splitlines()
    assert lines[0].startswith("- early: ")
    assert "tail-2" in ctx.summary and "tail-1" in ctx.summary
    assert lines[-1] == "- late (files: docs/api.md): wrote docs/api.md"
    assert "failed" not in ctx.summary and "not this phase" not in ctx.summary
    assert ctx.artifacts == ["docs/api.md", "docs/design.md"]
    assert ctx.feedback == ["attempt 1: design.md is empty"]
    assert ctx.phase is P.DESIGN
    assert ctx.summarised_by == "extract"


def test_gather_of_an_empty_phase() -> None:
    ctx = context.gather(ticket(), {}, P.TESTING)
    assert ctx.summary == "testing: no tasks"
    assert (ctx.artifacts, ctx.feedback) == ([], [])


def test_clip_leaves_short_text_alone() -> None:
    assert context.clip("short\ntext", 100) == "short\ntext"


def test_clip_keeps_the_start_of_every_line() -> None:
    lines = [f"line{i}:" + "x" * 500 for i in range(5)]
    clipped = context.clip("\n".join(lines), 100)
    assert len(clipped) <= 100 * context.CHARS_PER_TOKEN
    kept = clipped.splitlines()
    assert len(kept) == 5
    for i, line in enumerate(kept):
        assert line.startswith(f"line{i}:xxxx")


def test_clip_keeps_every_line_of_a_many_line_summary() -> None:
    text = "\n".join(f"- task{i}: " + "z" * 100 for i in range(15))
    clipped = context.clip(text, 100)
    assert len(clipped) <= 100 * context.CHARS_PER_TOKEN
    for i in range(15):
        assert f"- task{i}:" in clipped


async def test_summarise_without_a_model_extracts() -> None:
    raw = PhaseContext(phase=P.DESIGN, summary="- a: " + "y" * 5000)
    out = await context.summarise(None, ticket(), raw, 100)
    assert out.summarised_by == "extract"
    assert out.summary == context.clip(raw.summary, 100)
    assert len(out.summary) <= 400
    assert out.phase is P.DESIGN


# decompose.parse

VALID = {
    "tasks": [
        {"name": "req", "phase": "requirements", "capability": "agent", "instructions": "r"},
        {
            "name": "impl",
            "phase": "implementation",
            "capability": "agent",
            "instructions": "build it",
            "acceptance": ["tests pass"],
            "depends_on": ["req"],
        },
    ]
}


def test_parse_valid_json() -> None:
    specs = decompose.parse(json.dumps(VALID))
    assert [(s.name, s.phase, s.depends_on) for s in specs] == [
        ("req", P.REQUIREMENTS, []),
        ("impl", P.IMPLEMENTATION, ["req"]),
    ]
    assert specs[1].acceptance == ["tests pass"]


def test_parse_json_in_a_fence() -> None:
    answer = f"Here is the plan:\n```json\n{json.dumps(VALID, indent=2)}\n```\nGood luck."
    assert [s.name for s in decompose.parse(answer)] == ["req", "impl"]


def agent_task(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "phase": "design", "capability": "agent", "instructions": "x", **fields}


CYCLE = [agent_task("a", depends_on=["b"]), agent_task("b", depends_on=["a"])]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("I think we should first gather requirements.", "not JSON"),
        ("[1, 2]", '"tasks" list'),
        ('{"tasks": "many"}', '"tasks" list'),
        ('{"plan": []}', '"tasks" list'),
        ('{"tasks": []}', "no tasks"),
        (json.dumps({"tasks": [agent_task("a", phase="review")]}), "invalid tasks"),
        (json.dumps({"tasks": [agent_task("a", color="red")]}), "invalid tasks"),
        (json.dumps({"tasks": [agent_task("a", depends_on=["ghost"])]}), "unknown task 'ghost'"),
        (
            json.dumps({"tasks": CYCLE}),
            "dependency cycle",
        ),
        (
            json.dumps({"tasks": [{"name": "a", "phase": "design", "capability": "agent"}]}),
            "agent task 'a' has no instructions",
        ),
    ],
)
def test_parse_rejects_with_a_reason(answer: str, expected: str) -> None:
    assert expected in rejected(answer)


# budgets


def test_usage_adds_up() -> None:
    a = Usage(prompt_tokens=10, completion_tokens=5, cost_usd=0.1, iterations=2)
    b = Usage(prompt_tokens=1, completion_tokens=2, cost_usd=0.2, iterations=3)
    total = a + b
    assert total == Usage(prompt_tokens=11, completion_tokens=7, cost_usd=0.3, iterations=5)
    assert total.total_tokens == 18


def test_budget_remaining() -> None:
    budget = Budget(max_iterations=10, max_cost_usd=1.0)
    left = budget.remaining(Usage(prompt_tokens=50, cost_usd=0.25, iterations=4))
    assert (left.max_iterations, left.max_cost_usd, left.max_tokens) == (6, 0.75, None)


@pytest.mark.parametrize(
    ("budget", "spent", "expected"),
    [
        (Budget(max_iterations=3), Usage(iterations=3), "3 iterations"),
        (Budget(max_cost_usd=0.5), Usage(cost_usd=0.75), "$0.7500 reached the limit of $0.5000"),
        (Budget(max_tokens=100), Usage(prompt_tokens=60, completion_tokens=40), "100 tokens"),
    ],
)
def test_budget_exhausted_by_each_limit(budget: Budget, spent: Usage, expected: str) -> None:
    reason = budget.exhausted_by(spent)
    assert reason is not None and expected in reason
    assert budget.exhausted_by(Usage()) is None


def test_budget_tightest() -> None:
    a = Budget(max_iterations=10, max_cost_usd=2.0)
    b = Budget(max_iterations=20, max_cost_usd=1.0, max_tokens=500)
    tight = a.tightest(b)
    assert (tight.max_iterations, tight.max_cost_usd, tight.max_tokens) == (10, 1.0, 500)
    assert b.tightest(a) == tight
    assert Budget(max_iterations=5).tightest(Budget()).max_cost_usd is None
    assert a.tightest(None) is a


# agent prompt and executor


def test_build_prompt(tmp_path: Path) -> None:
    t = ticket(
        description="Cache the slow lookups.",
        context=[
            PhaseContext(phase=P.REQUIREMENTS, summary="- req: wrote docs/requirements.md"),
            PhaseContext(phase=P.DESIGN, summary="- design: chose LRU", feedback=["attempt 1: x"]),
        ],
    )
    work = task(
        "impl",
        P.IMPLEMENTATION,
        S.RUNNING,
        capability="agent",
        instructions="Implement the LRU cache.",
        acceptance=["hits are served from memory"],
    )
    prompt = build_prompt(work, t, tmp_path)
    for part in [
        "Implement the LRU cache.",
        "- hits are served from memory",
        f"Workspace: {tmp_path}",
        "Ticket: Add a cache",
        "Cache the slow lookups.",
        "wrote docs/requirements.md",
        "chose LRU",
        "- attempt 1: x",
        "phase implementation, task impl",
    ]:
        assert part in prompt


def test_conversation_id_follows_the_generation() -> None:
    a = task("impl", P.IMPLEMENTATION)
    assert conversation_id(a) == conversation_id(task("impl", P.IMPLEMENTATION))
    assert conversation_id(a) != conversation_id(a.model_copy(update={"generation": 1}))
    assert conversation_id(a) != conversation_id(task("test", P.IMPLEMENTATION))


def executor(tmp_path: Path, **settings: Any) -> AgentExecutor:
    return AgentExecutor(Settings(data_dir=tmp_path, **settings), {})


def run_ctx(tmp_path: Path, budget: Budget | None = None) -> ExecutionContext:
    return ExecutionContext(workspace=tmp_path, attempt=1, budget=budget)


def test_task_budget_wins_over_the_defaults(tmp_path: Path) -> None:
    ex = executor(tmp_path, agent_max_iterations=60, agent_max_cost_usd=5.0)
    own = task("a", P.DESIGN, budget=Budget(max_iterations=7, max_tokens=900))
    budget = ex._budget(own, run_ctx(tmp_path))
    assert (budget.max_iterations, budget.max_cost_usd, budget.max_tokens) == (7, 5.0, 900)
    plain = ex._budget(task("b", P.DESIGN), run_ctx(tmp_path))
    assert (plain.max_iterations, plain.max_cost_usd, plain.max_tokens) == (60, 5.0, None)


def test_ticket_remainder_caps_the_task_budget(tmp_path: Path) -> None:
    ex = executor(tmp_path, agent_max_cost_usd=5.0)
    own = task("a", P.DESIGN, budget=Budget(max_cost_usd=3.0, max_iterations=7))
    left = Budget(max_cost_usd=2.0, max_tokens=10_000).remaining(Usage(cost_usd=1.5))
    budget = ex._budget(own, run_ctx(tmp_path, left))
    assert budget.max_cost_usd == pytest.approx(0.5)
    assert (budget.max_iterations, budget.max_tokens) == (7, 10_000)


def test_exhausted_ticket_budget_fails_before_starting(tmp_path: Path) -> None:
    left = Budget(max_cost_usd=1.0).remaining(Usage(cost_usd=1.0))
    with pytest.raises(PermanentFailure) as info:
        executor(tmp_path)._budget(task("a", P.DESIGN), run_ctx(tmp_path, left))
    assert info.value.category == "budget"
    assert not info.value.retryable
    assert "budget" in info.value.message


async def test_agent_without_a_model_fails_permanently(tmp_path: Path) -> None:
    work = task("a", P.DESIGN, capability="agent", instructions="x")
    with pytest.raises(PermanentFailure) as info:
        await executor(tmp_path).run(work, run_ctx(tmp_path))
    assert "OMOI_LLM_MODEL" in info.value.message


# intake, phases, settings


def test_agent_workflow_brings_its_gates() -> None:
    intake = submit(workflow="agent")
    assert set(intake.ticket.gate_specs) == {
        P.REQUIREMENTS,
        P.DESIGN,
        P.IMPLEMENTATION,
        P.TESTING,
        P.DEPLOYMENT,
    }
    assert intake.ticket.max_gate_attempts == 3
    assert intake.ticket.gate_specs[P.TESTING].fix_phase is P.IMPLEMENTATION
    assert intake.ticket.workflow == "agent"
    assert all(t.capability == "agent" and t.instructions for t in intake.tasks)


EXPLICIT = [{"name": "a", "phase": "implementation", "capability": "agent", "instructions": "x"}]


def test_explicit_tasks_keep_their_own_gates() -> None:
    gates = {"implementation": {"checks": [{"kind": "diff"}], "review": True}}
    intake = submit(tasks=EXPLICIT, gates=gates, max_gate_attempts=5)
    assert list(intake.ticket.gate_specs) == [P.IMPLEMENTATION]
    assert intake.ticket.gate_specs[P.IMPLEMENTATION].review is True
    assert intake.ticket.max_gate_attempts == 5


def test_explicit_tasks_without_gates_have_none() -> None:
    intake = submit(tasks=EXPLICIT)
    assert intake.ticket.gate_specs == {}
    assert intake.ticket.workflow is None


def test_agent_task_without_instructions_is_rejected() -> None:
    with pytest.raises(InvalidTicket) as info:
        submit(tasks=[{"name": "a", "phase": "design", "capability": "agent"}])
    assert "agent task 'a' has no instructions" in info.value.message


def test_blocked_ticket_may_return_or_move_past() -> None:
    assert phases.allowed_targets(P.BLOCKED, P.TESTING) == {P.TESTING, P.DEPLOYMENT}
    assert phases.allowed_targets(P.BLOCKED) == frozenset()


def test_settings_pass_the_api_key_on_but_never_show_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, llm_model="m", llm_api_key=SecretStr(SECRET))
    env = settings.to_env()
    assert env["OMOI_LLM_API_KEY"] == SECRET
    assert env["OMOI_LLM_MODEL"] == "m"
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert Settings.from_env(env).llm_api_key == SecretStr(SECRET)

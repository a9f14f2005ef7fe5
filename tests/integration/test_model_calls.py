"""One-shot model calls through litellm against the scripted model: reviews, summaries,
errors that never show the key."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from agents.llm.client import ModelClient, ModelConfig, ModelError
from agents.llm.script import Script
from agents.llm.scripted import ScriptedModelServer
from agents.planner import context
from agents.settings import Settings
from agents.validator.agent import Validator
from bus import Bus
from schemas import Phase
from schemas.gate import CheckKind, CheckSpec, GateRequest, GateSpec
from schemas.ticket import PhaseContext, TicketState
from tests.helpers import publish_workspace

pytestmark = pytest.mark.integration

KEY = "sk-model-secret-987654321"


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    script = Script.model_validate(
        {
            "conversations": [
                {
                    "name": "review",
                    "match": "omoi:review",
                    "turns": [{"content": "VERDICT: FAIL\nNo criterion covers empty input."}],
                },
                {
                    "name": "summary",
                    "match": "omoi:summarise",
                    "turns": [{"content": "Requirements settled: four criteria in docs/."}],
                },
            ]
        }
    )
    with ScriptedModelServer(script) as s:
        yield s


def client(url: str) -> ModelClient:
    return ModelClient(
        ModelConfig(model="openai/scripted-model", api_key=SecretStr(KEY), base_url=url,
                    num_retries=0, input_cost_per_token=1e-6, output_cost_per_token=1e-6)
    )  # fmt: skip


async def test_long_context_is_summarised_by_the_model(server: ScriptedModelServer) -> None:
    ticket = TicketState(id="T1", title="Slugify")
    raw = PhaseContext(phase=Phase.REQUIREMENTS, summary="- requirements: " + "words " * 2000)
    done = await context.summarise(client(server.url), ticket, raw, 100)
    assert done.summarised_by == "model"
    assert done.summary == "Requirements settled: four criteria in docs/."
    asked = server.requests[-1]["messages"]
    assert "omoi:summarise phase=requirements" in str(asked)


async def test_unreachable_model_falls_back_to_extraction_and_hides_the_key() -> None:
    dead = client("http://127.0.0.1:9/v1")
    with pytest.raises(ModelError) as info:
        await dead.complete("system", "user")
    assert KEY not in str(info.value)
    raw = PhaseContext(phase=Phase.DESIGN, summary="x" * 10_000)
    done = await context.summarise(dead, TicketState(id="T1", title="t"), raw, 100)
    assert done.summarised_by == "extract" and len(done.summary) <= 400


def committed_repo(repo: Path) -> Path:
    repo.mkdir()
    (repo / "req.md").write_text("# Requirements\n\n## Acceptance criteria\n- it works\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "req"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True
        )
    return repo


async def test_a_failing_review_fails_the_gate_with_its_text(
    server: ScriptedModelServer, bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    repo = committed_repo(tmp_path / "ws")
    s = settings.model_copy(
        update={"llm_model": "openai/scripted-model", "llm_base_url": server.url,
                "llm_api_key": SecretStr(KEY), "llm_num_retries": 0}
    )  # fmt: skip
    validator = Validator(bus, s, env=dict(os.environ))
    await publish_workspace(bus, "T1", repo)
    request = GateRequest(
        ticket_id="T1",
        phase=Phase.REQUIREMENTS,
        attempt=1,
        spec=GateSpec(
            review=True,
            checks=[CheckSpec(kind=CheckKind.FILE, path="req.md", contains="acceptance")],
        ),
        acceptance=["empty input is handled"],
        title="Slugify",
    )
    verdict = await validator.evaluate(request)
    assert not verdict.passed
    assert verdict.checks[0].passed  # the file was fine; the reviewer was not
    assert verdict.review is not None and verdict.review.startswith("VERDICT: FAIL")
    assert "No criterion covers empty input." in verdict.feedback
    prompt = str(server.requests[-1]["messages"])
    assert "empty input is handled" in prompt and "## Acceptance criteria" in prompt

"""The guardian steers a stuck coding agent: a real OpenHands session against the scripted
model keeps running the same command; the guardian's rules see it in the progress
reports, its model review words the advice, and the advice reaches the conversation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agents.guardian.agent import Guardian
from agents.llm.client import ModelClient, ModelConfig
from agents.planner.agent import Planner
from agents.scripts.build_demo import finish, task, term
from agents.settings import Settings
from agents.worker.agent import Worker, default_executors
from bus import Bus
from schemas import AGENTS_TOKEN, TicketStatus
from schemas.guardian import Intervention
from tests.helpers import EventLog, Running
from tests.integration.agent_support import ModelFactory, run_agent_ticket, with_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ADVICE = "Stop re-running make test: read the first error it prints, then fix that file."


def slowly(turn: dict[str, Any]) -> dict[str, Any]:
    return {**turn, "delay_s": 0.3}


async def test_a_stuck_agent_gets_the_guardians_advice_in_its_conversation(
    bus: Bus, settings: Settings, short_dir: Path, model_server: ModelFactory, running: Running
) -> None:
    server = model_server({
        "conversations": [
            {"name": "review", "match": "omoi:steer", "turns": [{"content": ADVICE}]},
            task("loop", *[slowly(term("make test || date +%N")) for _ in range(25)],
                 finish("Gave up.")),
        ],
    })  # fmt: skip
    s = with_model(settings, server, short_dir).model_copy(update={"guardian_stuck_steps": 4})
    events = await EventLog(bus).start()
    await running.start(Planner(bus, s))
    await running.start(
        Worker(bus, s, phases=["implementation"], capabilities=["agent"],
               executors=default_executors(s, dict(os.environ)), agent_id="w-agent")
    )  # fmt: skip
    assert s.nats_url
    own = await Bus.connect(s.nats_url, name="guardian", credentials=s.credentials("guardian"))
    config = ModelConfig.from_settings(s)
    assert config is not None
    await running.start(Guardian(own, s, model=ModelClient(config)))
    try:
        ticket = await run_agent_ticket(bus, "T-stuck", "loop", "Make the tests pass.")
        state = await bus.tasks.value("T-stuck.loop")
        assert ticket.status is TicketStatus.DONE, state.errors if state else ticket.reason
        await events.wait_type("T-stuck", "ticket.done")  # the log has caught up

        [applied] = [
            Intervention.model_validate(e.data) for e in events.of(AGENTS_TOKEN, "guardian.applied")
        ]
        assert (applied.kind, applied.target, applied.worker) == (
            "steer_agent",
            "T-stuck.loop",
            "w-agent",
        )
        assert applied.message == ADVICE and "make test || date +%N" in applied.reason
        assert len(applied.evidence) == 4 and not applied.reversible
        # The model reviewed the trajectory it was shown...
        reviews = [r for r in server.requests if r["conversation"] == "review"]
        assert len(reviews) == 1 and "make test || date +%N" in json.dumps(reviews[0]["messages"])
        # ...and the agent's conversation got the advice, from the guardian.
        later = [r for r in server.requests if r["conversation"] == "loop"]
        applied_at = events.of(AGENTS_TOKEN, "guardian.applied")[0].at
        done_at = events.of("T-stuck", "task.succeeded")[0].at
        assert any(ADVICE in json.dumps(r["messages"]) for r in later), (
            applied_at,
            done_at,
            json.dumps(later[-1]["messages"])[-1500:],
        )
    finally:
        await running.stop_all()
        await own.close()
        await events.stop()

"""`omoi up --demo`: one sample ticket carried through all five phases by coding agents.

Without a model configured, the agents talk to the scripted model (a local,
OpenAI-compatible server replaying fixed turns), so the demo runs offline while
everything else (the OpenHands SDK, its tools, git, the gates' test run) is real.
Setting OMOI_LLM_MODEL (and OMOI_LLM_API_KEY / OMOI_LLM_BASE_URL) runs the same
ticket against that model instead.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from agents.llm.script import Script
from agents.llm.scripted import ScriptedModelServer
from agents.settings import Settings
from bus import Bus
from cli import client, render

DEMO_SCRIPT = Path(__file__).resolve().parent.parent / "agents" / "scripts" / "demo.json"

DEMO_TICKET = {
    "title": "Add a slugify function to textkit",
    "description": "textkit needs slugify(text) that turns titles into URL slugs, "
    "with tests, and a source release.",
    "workflow": "agent",
}


def start_scripted_model(settings: Settings) -> tuple[Settings, ScriptedModelServer]:
    """Serve the demo script on 127.0.0.1 and point the settings at it."""
    server = ScriptedModelServer(Script.load(DEMO_SCRIPT))
    server.start()
    return settings.model_copy(
        update={
            "llm_model": "openai/scripted-model",
            "llm_base_url": server.url,
            "llm_api_key": SecretStr("scripted-model-needs-no-key"),
            # Made-up prices, so the demo shows cost accounting at work.
            "llm_input_cost_per_token": 1e-6,
            "llm_output_cost_per_token": 4e-6,
            "llm_num_retries": 0,
        }
    ), server


async def run_demo(settings: Settings, out: Console) -> None:
    assert settings.nats_url is not None
    bus = await Bus.connect(
        settings.nats_url, name="omoi-demo", credentials=settings.credentials("operator")
    )
    try:
        payload = {"id": client.new_ticket_id(), **DEMO_TICKET}
        reply = await client.submit(bus, payload, timeout=10)
        out.print(f"submitted demo ticket [bold]{reply.ticket_id}[/]; following it (Ctrl-C stops)")
        async for event in client.follow(bus, payload["id"]):
            out.print(render.event_line(event))
        ticket, tasks = await client.ticket_with_tasks(bus, payload["id"])
        render.ticket(out, ticket, tasks)
        render.gates(out, ticket)
        out.print(
            f"workspace: {settings.workspaces_dir / payload['id']} (git log shows one commit "
            f"per task; result commit {ticket.commit})\n"
            "still running; submit more with `omoi submit`, stop with Ctrl-C"
        )
    finally:
        await bus.close()

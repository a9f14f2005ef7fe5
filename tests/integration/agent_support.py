"""What the coding-agent tests share: settings that point at the scripted model, one-task
tickets, git reads."""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agents.llm.scripted import ScriptedModelServer
from agents.settings import Settings
from bus import Bus
from schemas import TicketState
from tests.helpers import submit, ticket_finished, wait_until

ModelFactory = Callable[[dict[str, Any]], ScriptedModelServer]
Start = Callable[..., Awaitable[None]]


def with_model(settings: Settings, server: ScriptedModelServer, short: Path) -> Settings:
    # A short data dir: tmux sockets live under it and must fit in 107 bytes.
    return settings.model_copy(
        update={
            "data_dir": short,
            "llm_model": "openai/scripted-model",
            "llm_base_url": server.url,
            "llm_api_key": SecretStr("sk-test-secret-0123456789"),
            "llm_input_cost_per_token": 1e-6,
            "llm_output_cost_per_token": 2e-6,
            "llm_num_retries": 0,
            "progress_interval_s": 0.2,
        }
    )


def agent_ticket(ticket_id: str, name: str, instructions: str, **task: Any) -> dict[str, Any]:
    """A ticket of one coding-agent task in the implementation phase."""
    only = {"name": name, "phase": "implementation", "capability": "agent", **task}
    return {"id": ticket_id, "title": name, "tasks": [{**only, "instructions": instructions}]}


async def run_agent_ticket(
    bus: Bus, ticket_id: str, name: str, instructions: str, timeout: float = 120.0
) -> TicketState:
    """Submit `agent_ticket(...)` and wait for the ticket to finish, however it ends."""
    assert (await submit(bus, agent_ticket(ticket_id, name, instructions)))["ok"]
    return await wait_until(lambda: ticket_finished(bus, ticket_id), timeout=timeout)


def _git(workspace: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=True)
    return out.stdout


def git_log(workspace: Path, commit: str = "HEAD") -> list[str]:
    """The subjects of `commit`'s history, newest first."""
    return _git(workspace, "log", "--format=%s", commit).splitlines()


def git_parents(workspace: Path, commit: str) -> list[str]:
    return _git(workspace, "rev-list", "--parents", "-n", "1", commit).split()[1:]


def git_head(workspace: Path) -> str:
    return _git(workspace, "rev-parse", "HEAD").strip()

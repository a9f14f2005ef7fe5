"""`omoi profile`: py-spy samples a real agent process without stopping it, locally and
through the supervisor of the agent's host; what it cannot profile it says."""

from __future__ import annotations

import asyncio
import base64
import gzip
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.settings import Settings
from agents.supervisor import Child, Supervisor, agent_argv
from bus import Bus
from bus import constants as c
from schemas.supervisor import ProfileReply, ProfileRequest
from tests.conftest import agent_env
from tests.helpers import AgentProcess, supervising, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def omoi(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "omoi"), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_profile_samples_a_running_worker_and_keeps_the_result(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    env = agent_env(settings)
    worker = await AgentProcess("worker", "w-prof", env, tmp_path / "w.log").start(bus)
    try:
        code, out, err = await omoi(env, "profile", "w-prof", "--seconds", "1", "--format",
                                    "raw", "--idle")  # fmt: skip
        assert code == 0, err
        assert "profile of w-prof (local, 1s)" in out
        kept = list((settings.data_dir / "profiles").glob("w-prof-*.txt"))
        assert len(kept) == 1
        # Collapsed stacks of the worker's own code: its event loop waiting for work.
        assert "agents" in kept[0].read_text() or "asyncio" in kept[0].read_text()
        assert worker.proc is not None and worker.proc.returncode is None  # still running

        code, _, err = await omoi(env, "profile", "nobody", "--seconds", "1")
        assert code == 1 and "no live agent 'nobody'" in err
        code, _, err = await omoi(env, "profile", "w-prof", "--format", "pdf")
        assert code == 2 and "--format is one of flamegraph, speedscope, raw" in err
    finally:
        await worker.terminate()


@pytest.fixture
async def supervised(settings: Settings, bus: Bus) -> AsyncIterator[Supervisor]:
    children = [Child("worker-1", agent_argv("worker", "--capability", "shell"), agent=True)]
    async with supervising(settings, bus, children, host="far-away") as sup:
        yield sup


async def test_a_supervisor_profiles_its_own_children_and_nothing_else(
    settings: Settings, bus: Bus, supervised: Supervisor
) -> None:
    agent_id = supervised.children[0].agent_id
    assert agent_id is not None

    async def ready() -> bool:
        beat = await bus.heartbeats.value(agent_id)
        return beat is not None and beat.ready

    await wait_until(ready, timeout=30)
    subject = c.supervisor_subject("far-away", "profile")
    asked = ProfileRequest(agent_id=agent_id, seconds=1, format="speedscope", idle=True)
    reply = ProfileReply.model_validate_json(await bus.request(subject, asked.to_json(), 60))
    assert reply.ok, reply.error
    profile = gzip.decompress(base64.b64decode(reply.data))
    assert b'"$schema": "https://www.speedscope.app/file-format-schema.json"' in profile or (
        b"speedscope" in profile
    )
    other = ProfileRequest(agent_id="not-a-child", seconds=1)
    refused = ProfileReply.model_validate_json(await bus.request(subject, other.to_json(), 10))
    assert not refused.ok and "no child runs as not-a-child here" in (refused.error or "")

"""Every agent is a NATS micro service: found by any NATS client, and searched by Omoi.

A real nats-server with `omoi up`'s authorization; a planner and a shell worker in this
process, each on its own role's identity, and a second worker run as `omoi agent worker`
with other capabilities and labels. nats.js's own service client (@nats-io/services, in
tests/js/services.mjs) lists them as a viewer; `omoi agents` (the operator) and the
gateway's `GET /api/v1/agents` (a viewer's token) filter them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.executors import ShellExecutor
from agents.planner.agent import Planner
from agents.settings import Settings
from agents.version import omoi_version
from agents.worker.agent import Worker
from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from bus.auth import AuthDir
from bus.registry import discover
from schemas import WORK_PHASES
from schemas.token import Role
from tests.conftest import agent_env
from tests.helpers import EventLog, Running, require_tool, submit, wait_until
from tests.integration.test_cli import omoi
from tests.integration.test_gateway import gateway_client, make_token

pytestmark = pytest.mark.integration

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SERVICES = JS_DIR / "services.mjs"
NODE = shutil.which("node")
OMOI = str(Path(sys.executable).parent / "omoi")
ALL_PHASES = [p.value for p in WORK_PHASES]
GPU = "gpu-worker-1"


@dataclass
class System:
    planner: Planner
    # In this process: shell tasks in every phase, labels linux and fast, 2 slots.
    shell: Worker
    # `omoi agent worker`: noop tasks in testing, labels gpu and linux, 3 slots.
    gpu: str


async def ready_beat(bus: Bus, agent_id: str) -> bool:
    beat = await bus.heartbeats.value(agent_id)
    return beat is not None and beat.ready


@pytest.fixture
async def system(
    settings: Settings, bus: Bus, auth_dir: AuthDir, running: Running, tmp_path: Path
) -> AsyncIterator[System]:
    assert settings.nats_url
    url = settings.nats_url
    buses: list[Bus] = []

    async def own(role: str) -> Bus:
        """A bus as `role`'s own identity, so its permissions are the ones served."""
        b = await Bus.connect(url, name=f"omoi-{role}", credentials=auth_dir.credentials(role))
        buses.append(b)
        return b

    planner = Planner(await own("planner"), settings)
    shell_settings = settings.model_copy(
        update={"worker_labels": ("linux", "fast"), "worker_concurrency": 2}
    )
    shell = Worker(
        await own("worker"),
        shell_settings,
        phases=ALL_PHASES,
        capabilities=["shell"],
        executors={"shell": ShellExecutor(dict(os.environ), shell_settings)},
    )
    log = (tmp_path / "gpu-worker.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        OMOI, "agent", "worker", "--agent-id", GPU, "--phase", "testing",
        "--capability", "noop", "--label", "gpu", "--label", "linux", "--concurrency", "3",
        env=agent_env(settings), stdout=log, stderr=log,
    )  # fmt: skip
    try:
        await running.start(planner)
        await running.start(shell)
        # Ready comes after the service registered (agents/base.py).
        await wait_until(lambda: ready_beat(bus, GPU), timeout=30)
        yield System(planner, shell, GPU)
    finally:
        proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 30)
        log.close()
        await running.stop_all()
        for b in buses:
            await b.close()
    assert code == 0, (tmp_path / "gpu-worker.log").read_text()


async def services(url: str, verb: str, *names: str, role: str = "viewer") -> list[Any]:
    """What nats.js's service client gathers for `$SRV.<VERB>[.<name>[.<id>]]`."""
    assert NODE is not None
    seed = Path(os.environ["OMOI_AUTH_DIR"]) / f"{role}.nk"
    proc = await asyncio.create_subprocess_exec(
        NODE, str(SERVICES), url, verb, *names,
        env={**os.environ, "NATS_NKEY": str(seed)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"services.mjs {verb} exited {proc.returncode}: {err.decode()}"
    replies: list[Any] = json.loads(out)
    return replies


def by_agent(replies: list[Any]) -> dict[str, Any]:
    return {r["metadata"]["agent_id"]: r for r in replies if r["name"].startswith("omoi-")}


async def test_a_nats_js_client_sees_every_agent_with_its_metadata(
    nats_server: EmbeddedNatsServer, system: System
) -> None:
    require_tool(NODE is not None, "node (Node.js) on PATH")
    require_tool(
        (JS_DIR / "node_modules" / "@nats-io" / "services").is_dir(),
        "@nats-io/services",
        "`make test` installs it (npm ci --prefix tests/js)",
    )
    url = nats_server.url
    info = by_agent(await services(url, "info"))
    assert set(info) == {system.planner.id, system.shell.id, GPU}

    planner = info[system.planner.id]
    assert planner["name"] == "omoi-planner"
    assert planner["type"] == "io.nats.micro.v1.info_response"
    assert planner["metadata"]["role"] == "planner"
    assert planner["metadata"]["omoi_version"] == omoi_version()
    assert planner["metadata"]["capabilities"] == planner["metadata"]["labels"] == ""
    assert "slots" not in planner["metadata"]

    shell = info[system.shell.id]
    assert shell["name"] == "omoi-worker"
    assert {k: shell["metadata"][k] for k in ("role", "capabilities", "labels", "slots")} == {
        "role": "worker",
        "capabilities": "shell",
        "labels": "linux,fast",
        "slots": "2",
    }
    assert shell["metadata"]["phases"] == ",".join(ALL_PHASES)
    assert shell["metadata"]["pid"] == str(os.getpid())
    status = c.agent_status_subject("worker", system.shell.id)
    assert [(e["name"], e["subject"]) for e in shell["endpoints"]] == [("status", status)]

    gpu = info[GPU]["metadata"]
    assert (gpu["phases"], gpu["capabilities"], gpu["labels"], gpu["slots"]) == (
        "testing",
        "noop",
        "gpu,linux",
        "3",
    )
    assert gpu["pid"] != str(os.getpid())  # its own process

    # STATS, by name: the workers only, each with its load now in its endpoint's data.
    stats = by_agent(await services(url, "stats", "omoi-worker"))
    assert set(stats) == {system.shell.id, GPU}
    for agent_id, slots in ((system.shell.id, 2), (GPU, 3)):
        assert stats[agent_id]["type"] == "io.nats.micro.v1.stats_response"
        (endpoint,) = stats[agent_id]["endpoints"]
        assert endpoint["data"] == {
            "ready": True,
            "current_task": None,
            "running": 0,
            "slots": slots,
            "tasks": [],
            "partitions": None,  # a planner's
        }

    # By name and id: that one service, whichever verb; and as the operator too.
    one = info[GPU]["id"]
    assert list(by_agent(await services(url, "ping", "omoi-worker", one))) == [GPU]
    assert list(by_agent(await services(url, "stats", "omoi-worker", one))) == [GPU]
    pings = by_agent(await services(url, "ping", role="operator"))
    assert set(pings) == set(info)
    assert pings[GPU]["id"] == one


@pytest.mark.usefixtures("system")
async def test_omoi_agents_filters_by_capability_label_and_role(
    settings: Settings, system: System
) -> None:
    async def listed(*flags: str) -> list[str]:
        code, out, err = await omoi(settings, "agents", "--json", *flags)
        assert code == 0, err
        return [a["agent_id"] for a in json.loads(out)]

    # By role, then id.
    assert await listed() == [system.planner.id, *sorted([system.shell.id, GPU])]
    assert await listed("--capability", "noop", "--label", "gpu") == [GPU]
    assert await listed("--capability", "shell", "--label", "gpu") == []
    assert await listed("--label", "linux") == sorted([system.shell.id, GPU])
    assert await listed("--label", "linux", "--capability", "shell") == [system.shell.id]
    assert await listed("--role", "planner") == [system.planner.id]

    code, out, err = await omoi(settings, "agents", "--capability", "noop")
    assert code == 0, err
    row = next(line for line in out.splitlines() if GPU in line)
    assert "gpu,linux" in row and "0/3" in row and "yes" in row
    assert "1 live agent" in out

    code, _, err = await omoi(settings, "agents", "--role", "gateway")
    assert code == 1
    assert "unknown agent role 'gateway'" in err


async def test_the_http_route_filters_for_a_viewer(
    settings: Settings, bus: Bus, auth_dir: AuthDir, system: System
) -> None:
    assert settings.nats_url
    gateway = await Bus.connect(
        settings.nats_url, name="omoi-gateway", credentials=auth_dir.credentials("gateway")
    )
    try:
        viewer = await make_token(bus, Role.VIEWER, name="viewer")
        async with gateway_client(settings, gateway, token=viewer) as api:

            async def listed(query: str) -> list[str]:
                r = await api.get(f"/api/v1/agents{query}")
                assert r.status_code == 200, r.text
                return [a["agent_id"] for a in r.json()]

            everyone = (await api.get("/api/v1/agents")).json()
            assert [a["agent_id"] for a in everyone] == [
                system.planner.id,
                *sorted([system.shell.id, GPU]),
            ]
            gpu = next(a for a in everyone if a["agent_id"] == GPU)
            assert (gpu["role"], gpu["service"], gpu["labels"], gpu["slots"]) == (
                "worker",
                "omoi-worker",
                ["gpu", "linux"],
                3,
            )
            assert gpu["status"]["ready"] is True
            assert await listed("?capability=noop&label=gpu") == [GPU]
            assert await listed("?capability=shell&label=gpu") == []
            assert await listed("?label=linux&role=worker") == sorted([system.shell.id, GPU])
            assert await listed("?role=planner") == [system.planner.id]
            for bad in ("?role=gateway", "?label=GPU!", "?capability=a.b"):
                assert (await api.get(f"/api/v1/agents{bad}")).status_code == 400, bad
            beats = {a["agent_id"] for a in (await api.get("/api/v1/heartbeats")).json()}
            assert beats == {system.planner.id, system.shell.id, GPU}
    finally:
        await gateway.close()


async def test_the_load_is_live_and_a_stopped_agent_leaves(
    settings: Settings,
    bus: Bus,
    auth_dir: AuthDir,
    events: EventLog,
    running: Running,
    system: System,
) -> None:
    assert settings.nats_url
    viewer = await Bus.connect(
        settings.nats_url, name="viewer", credentials=auth_dir.credentials("viewer")
    )
    try:
        ticket = {
            "id": "busy-1",
            "title": "keeps a slot busy",
            "tasks": [{"name": "x", "phase": "requirements", "command": "sleep 30"}],
        }
        assert (await submit(bus, ticket))["ok"] is True
        await events.wait_type("busy-1", "task.started", task="x")
        (shell,) = await discover(viewer, capability="shell")
        assert shell.status is not None
        assert (shell.status.running, shell.status.slots, shell.status.tasks) == (
            1,
            2,
            ["busy-1.x"],
        )
        # The live status also answers on its own subject.
        answer = await viewer.request(shell.status_subject or "", b"", timeout=5)
        assert json.loads(answer)["tasks"] == ["busy-1.x"]

        await running.stop(system.shell)
        await system.shell.shutdown()  # a second time: nothing left to do
        assert [a.agent_id for a in await discover(viewer, role="worker")] == [GPU]
    finally:
        await viewer.close()

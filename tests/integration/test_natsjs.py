"""A client that is not our Python code (nats.js) drives Omoi with plain core NATS.

This is what a `nats` CLI user does: core publish or request on the intake subject, core
subscribe to a ticket's events, read KV. Tickets with shell tasks go to the trusted
intake subject (a plain submitter may not run commands; that is tested here too). The
node script is tests/js/client.mjs; its dependency is installed with `npm ci --prefix
tests/js`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bus import Bus, EmbeddedNatsServer, constants
from tests.helpers import EventLog, require_tool, stream_holds, wait_until

pytestmark = pytest.mark.integration

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CLIENT = JS_DIR / "client.mjs"
NODE = shutil.which("node")


@pytest.fixture(autouse=True)
def natsjs_installed() -> None:
    require_tool(NODE is not None, "node (Node.js) on PATH")
    require_tool(
        (JS_DIR / "node_modules" / "nats").is_dir(),
        "nats.js",
        "`make test` installs it (npm ci --prefix tests/js)",
    )


Starter = Callable[..., Awaitable[Any]]


TRUSTED = constants.TRUSTED_SUBMIT_SUBJECT


def ticket(ticket_id: str) -> dict[str, Any]:
    """A small ticket with explicit tasks, so it finishes quickly."""
    return {
        "id": ticket_id,
        "title": f"nats.js ticket {ticket_id}",
        "description": "submitted by tests/js/client.mjs",
        "tasks": [
            {"name": "a", "phase": "requirements", "command": "echo hi"},
            {"name": "b", "phase": "implementation", "command": "echo there", "depends_on": ["a"]},
        ],
    }


# The identity each mode needs, no more: submitting is the submitter's, reading the viewer's.
ROLE_OF_MODE = {
    "publish": "submitter",
    "request": "submitter",
    "follow": "viewer",
    "kvget": "viewer",
}


async def spawn(url: str, *args: str) -> asyncio.subprocess.Process:
    assert NODE is not None
    # The test's identities (the auth_dir fixture exports OMOI_AUTH_DIR).
    # Submitting with every right is the operator's: a submitter may use the plain subject.
    role = "operator" if TRUSTED in args else ROLE_OF_MODE[args[0]]
    seed = Path(os.environ["OMOI_AUTH_DIR"]) / f"{role}.nk"
    return await asyncio.create_subprocess_exec(
        NODE,
        str(CLIENT),
        url,
        *args,
        env={**os.environ, "NATS_NKEY": str(seed)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int, str, str]:
    """Collect a node process's output; kill it if it outlives `timeout`."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def node(url: str, *args: str, timeout: float = 20.0) -> str:
    """Run client.mjs to completion and return its stdout; fail on a non-zero exit."""
    code, out, err = await finish(await spawn(url, *args), timeout)
    assert code == 0, f"client.mjs {args[0]} exited {code}\nstdout: {out}\nstderr: {err}"
    return out


async def test_core_publish_is_durable_without_a_planner(
    nats_server: EmbeddedNatsServer,
    bus: Bus,
    events: EventLog,
    start_planner: Starter,
    start_worker: Starter,
) -> None:
    # No agent is running: only the intake stream can catch this publish.
    await node(nats_server.url, "publish", json.dumps(ticket("js-publish-1")), TRUSTED)

    await wait_until(lambda: stream_holds(bus, constants.INTAKE_STREAM, 1), timeout=10)

    await start_planner()
    await start_worker()
    await events.wait_type("js-publish-1", "ticket.done", timeout=30)
    stored = await bus.tickets.value("js-publish-1")
    assert stored is not None
    assert stored.status == "done"


async def test_core_request_gets_a_json_reply(
    nats_server: EmbeddedNatsServer, events: EventLog, start_planner: Starter
) -> None:
    await start_planner()

    out = await node(nats_server.url, "request", json.dumps(ticket("js-request-1")), TRUSTED)
    reply = json.loads(out)
    assert reply["ok"] is True, reply
    assert reply["ticket_id"] == "js-request-1"
    # The intake stream also caught the request, so the planner creates the ticket.
    await events.wait_type("js-request-1", "ticket.created", timeout=30)

    # On the plain subject, shell commands are refused; a ticket without them is not.
    out = await node(nats_server.url, "request", json.dumps(ticket("js-plain-1")))
    reply = json.loads(out)
    assert reply["ok"] is False, reply
    assert reply["error"]["category"] == "forbidden", reply
    assert TRUSTED in reply["error"]["message"]
    await events.wait_type("js-plain-1", "ticket.rejected", timeout=30)
    plain = {"id": "js-plain-2", "title": "plain", "tasks": [
        {"name": "a", "phase": "design", "capability": "noop"}]}  # fmt: skip
    reply = json.loads(await node(nats_server.url, "request", json.dumps(plain)))
    assert reply["ok"] is True, reply
    await events.wait_type("js-plain-2", "ticket.created", timeout=30)

    out = await node(nats_server.url, "request", "{not json")
    reply = json.loads(out)
    assert reply["ok"] is False, reply
    assert reply["error"]["category"] == "malformed_json", reply
    assert reply["error"]["message"]


async def test_follow_sees_done_and_kv_shows_it(
    nats_server: EmbeddedNatsServer,
    start_planner: Starter,
    start_worker: Starter,
) -> None:
    await start_planner()
    await start_worker()

    follower = await spawn(nats_server.url, "follow", "js-follow-1", "30000")
    try:
        # client.mjs writes this once the server has registered the core subscription.
        assert follower.stderr is not None
        line = await asyncio.wait_for(follower.stderr.readline(), 10)
        assert line.decode().strip() == "subscribed"
    except BaseException:
        follower.kill()
        await follower.communicate()
        raise

    body = json.dumps(ticket("js-follow-1"))
    reply = json.loads(await node(nats_server.url, "request", body, TRUSTED))
    assert reply["ok"] is True, reply

    code, out, err = await finish(follower, timeout=40)
    assert code == 0, f"follow exited {code}\nstdout: {out}\nstderr: {err}"
    types = out.split()
    assert types[-1] == "ticket.done", types
    assert "ticket.created" in types, types
    assert types.count("task.succeeded") == 2, types

    stored = json.loads(
        await node(nats_server.url, "kvget", constants.TICKETS_BUCKET, "js-follow-1")
    )
    assert stored["id"] == "js-follow-1"
    assert stored["status"] == "done"
    assert stored["tasks"] == ["a", "b"]

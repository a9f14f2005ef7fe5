"""The watchdog on real processes: a supervisor (as `omoi up` runs one) with its control
subjects, a real worker process and a child that crashes at once, and the monitor. The
worker is wedged (SIGSTOP: alive, silent); the watchdog has its supervisor restart it,
under a new id. The crasher's loop is escalated, once."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from agents.monitor.agent import Monitor
from agents.settings import Settings
from agents.supervisor import Child, Supervisor, agent_argv
from agents.supervisor_control import SupervisorControl, this_host
from bus import Bus
from bus import constants as c
from schemas import AGENTS_TOKEN
from schemas.supervisor import RestartReply, RestartRequest, SupervisorStatus
from tests.helpers import EventLog, Running, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
async def supervised(settings: Settings, bus: Bus) -> AsyncIterator[Supervisor]:
    children = [
        Child("worker-1", agent_argv("worker", "--capability", "shell"), agent=True),
        Child("crasher", [sys.executable, "-c", "raise SystemExit(3)"]),
    ]
    env = {**os.environ, **settings.to_env()}
    sup = Supervisor(children, env, log_dir=settings.data_dir / "logs",
                     backoff_base_s=0.05, backoff_cap_s=0.2)  # fmt: skip
    control = SupervisorControl(bus, sup)
    await sup.start()
    await control.start()
    yield sup
    await control.stop()
    await control.stop()  # twice is fine
    await sup.shutdown(grace_s=5)


async def test_a_wedged_agent_is_restarted_by_its_supervisor_and_a_crash_loop_escalated(
    settings: Settings, bus: Bus, events: EventLog, running: Running, supervised: Supervisor
) -> None:
    worker = supervised.children[0]
    first_id = worker.agent_id
    assert first_id is not None

    async def beating() -> bool:
        beat = await bus.heartbeats.value(first_id)
        return beat is not None and beat.ready

    await wait_until(beating, timeout=30)
    # The control subject answers anyone allowed to ask (here the admin test bus).
    raw = await bus.request(c.supervisor_subject(this_host(), "status"), b"", 5)
    names = {ch.name for ch in SupervisorStatus.model_validate_json(raw).children}
    assert names == {"worker-1", "crasher"}
    restart = c.supervisor_subject(this_host(), "restart")
    for asked, why in (
        (b"restart everything", "not a restart request"),
        (RestartRequest(agent_id="someone-else", reason="x").to_json(), "no child runs as"),
    ):
        reply = RestartReply.model_validate_json(await bus.request(restart, asked, 5))
        assert not reply.ok and why in (reply.error or "")

    # The monitor connects as itself: what it asks, its permissions allow.
    assert settings.nats_url
    as_monitor = await Bus.connect(
        settings.nats_url, name="monitor", credentials=settings.credentials("monitor")
    )
    try:
        await running.start(Monitor(as_monitor, settings))
        loop = await events.wait_type(AGENTS_TOKEN, "agent.crash_looping", timeout=30)
        assert loop.data["child"] == "crasher" and loop.data["host"] == this_host()
        assert loop.data["restarts"] >= 3 and loop.data["last_exit"] == 3
        await events.wait_type(AGENTS_TOKEN, "agent.restarted", child="crasher")

        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGSTOP)  # alive, holding its pid, beating no more
        asked = await events.wait_type(AGENTS_TOKEN, "agent.restart_requested", timeout=30)
        assert asked.agent == first_id and asked.data["ok"] and asked.data["child"] == "worker-1"
        assert "wedged: no heartbeat" in asked.data["reason"]

        async def new_id_beats() -> bool:
            if worker.agent_id == first_id or worker.agent_id is None:
                return False
            beat = await bus.heartbeats.value(worker.agent_id)
            return beat is not None and beat.ready

        await wait_until(new_id_beats, timeout=30)
        assert worker.restarts == 1 and worker.last_exit == -signal.SIGKILL
        await events.wait_type(AGENTS_TOKEN, "agent.restarted", child="worker-1")
        # One escalation for the crasher however long it loops.
        assert len(events.of(AGENTS_TOKEN, "agent.crash_looping")) == 1
    finally:
        await running.stop_all()
        await as_monitor.close()

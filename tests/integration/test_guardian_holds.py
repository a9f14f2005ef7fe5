"""The guardian and a crash loop, on real processes: a supervisor (as `omoi up` runs one)
with a worker child that dies at every start, the monitor's watchdog, and the guardian.
The loop is escalated; holding a worker nobody saw beat is proposed, an operator approves
it, the supervisor stops restarting the child, and undoing it starts the child again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents.guardian.agent import Guardian
from agents.monitor.agent import Monitor
from agents.settings import Settings
from agents.supervisor import Child, Supervisor, agent_argv
from agents.supervisor_control import this_host
from bus import Bus
from bus import constants as c
from schemas import AGENTS_TOKEN
from schemas.guardian import Intervention, InterventionReply, InterventionRequest
from schemas.supervisor import HoldReply, HoldRequest
from tests.helpers import EventLog, Running, supervising, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
async def supervised(settings: Settings, bus: Bus) -> AsyncIterator[Supervisor]:
    # A label the worker refuses: it exits 2 at every start, before its first beat.
    children = [Child("worker-9", agent_argv("worker", "--label", "NOT A LABEL"), agent=True)]
    async with supervising(settings, bus, children, backoff_base_s=0.05,
                           backoff_cap_s=0.2) as sup:  # fmt: skip
        yield sup


async def connect(settings: Settings, role: str) -> Bus:
    assert settings.nats_url
    return await Bus.connect(settings.nats_url, name=role, credentials=settings.credentials(role))


async def ask(bus: Bus, verb: str, intervention_id: str) -> InterventionReply:
    subject = c.GUARDIAN_APPROVE if verb == "approve" else c.GUARDIAN_UNDO
    raw = await bus.request(subject, InterventionRequest(id=intervention_id).to_json(), 10.0)
    return InterventionReply.model_validate_json(raw)


async def test_a_crash_looping_worker_is_held_on_approval_and_released_on_undo(
    settings: Settings, bus: Bus, events: EventLog, running: Running, supervised: Supervisor
) -> None:
    child = supervised.children[0]
    buses = [await connect(settings, role) for role in ("monitor", "guardian", "operator")]
    as_monitor, as_guardian, operator = buses
    try:
        await running.start(Guardian(as_guardian, settings))
        await running.start(Monitor(as_monitor, settings))
        crash = await events.wait_type(AGENTS_TOKEN, "agent.crash_looping", timeout=60)
        assert crash.data["role"] == "worker" and crash.data["child"] == "worker-9"
        proposed = Intervention.model_validate(
            (await events.wait_type(AGENTS_TOKEN, "guardian.proposed", timeout=30)).data
        )
        assert proposed.kind == "hold_agent" and proposed.target == f"{this_host()}.worker-9"
        assert "no heartbeat says what work it takes" in proposed.reason
        assert child.held is None  # only proposed

        approved = await ask(operator, "approve", proposed.id)
        assert approved.ok, approved.error
        assert child.held is not None and "crash looping" in child.held
        await wait_until(lambda: _stopped(child), timeout=10)
        restarts = child.restarts
        status = await bus.request(c.supervisor_subject(this_host(), "status"), b"", 5)
        assert b'"held":"guardian: crash looping' in status

        undone = await ask(operator, "undo", proposed.id)
        assert undone.ok, undone.error
        assert child.held is None
        await wait_until(lambda: _restarted_since(child, restarts), timeout=10)
        # The supervisor's own answer to a child it does not have.
        raw = await bus.request(
            c.supervisor_subject(this_host(), "hold"), HoldRequest(child="nobody").to_json(), 5
        )
        assert "no child 'nobody'" in (HoldReply.model_validate_json(raw).error or "")
    finally:
        await running.stop_all()
        for b in buses:
            await b.close()


async def _stopped(child: Child) -> bool:
    return not child.running


async def _restarted_since(child: Child, restarts: int) -> bool:
    return child.restarts > restarts

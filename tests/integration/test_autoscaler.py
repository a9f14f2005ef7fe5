"""The autoscaler on real parts: a burst of 500 queued shell tasks makes it ask the
supervisor for the pool's most workers (real worker processes), and once the queue has
drained it scales the pool back to its least. Every change is an `autoscaler.scaled`
event; it runs under its own identity, whose permissions are all it uses."""

from __future__ import annotations

import pytest

from agents.autoscaler.agent import Autoscaler
from agents.autoscaler.policy import Pool, ScaleRules
from agents.planner.agent import Planner
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from schemas import AGENTS_TOKEN, Event
from schemas.supervisor import ScaleReply, ScaleRequest
from schemas.ticket import TicketStatus
from tests.helpers import EventLog, Running, submit, supervising, ticket_finished, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

POOL = Pool("implementation", "shell", min=0, max=3)
TICKETS, TASKS = 10, 50


async def test_a_burst_scales_a_pool_to_its_max_and_a_drained_queue_back_to_its_min(
    bus: Bus, settings: Settings, events: EventLog, running: Running
) -> None:
    s = settings.model_copy(update={"autoscaler_interval_s": 0.3})
    async with supervising(s, bus, [], host="scaled-host", pools=[POOL.name]) as supervisor:
        await running.start(Planner(bus, s))
        for n in range(TICKETS):
            tasks = [{"name": f"t{i}", "phase": "implementation", "command": "true"}
                     for i in range(TASKS)]  # fmt: skip
            assert (await submit(bus, {"id": f"AS{n}", "title": "burst", "tasks": tasks}))["ok"]
        assert s.nats_url
        own = await Bus.connect(s.nats_url, name="autoscaler",
                                credentials=s.credentials("autoscaler"))  # fmt: skip
        rules = ScaleRules(tasks_per_worker=10, cooldown_s=0.0, down_after_s=1.0)
        await running.start(Autoscaler(own, s, pools=[POOL], rules=rules, host="scaled-host"))

        def scaled(to: int) -> object:
            def match(e: Event) -> bool:
                return e.type == "autoscaler.scaled" and e.data["to"] == to

            return match

        up = await events.wait(scaled(POOL.max), timeout=60)
        assert up.ticket_id == AGENTS_TOKEN and up.data["pool"] == "implementation-shell"
        assert up.data["from"] == 0 and up.data["pending"] >= POOL.max * rules.tasks_per_worker
        assert len(supervisor.replicas(POOL.name)) == POOL.max

        for n in range(TICKETS):
            done = await wait_until(lambda n=n: ticket_finished(bus, f"AS{n}"), timeout=150)
            assert done.status is TicketStatus.DONE, done.reason
        down = await events.wait(scaled(POOL.min), timeout=60)
        assert down.data["from"] >= 1 and "workers are enough" in down.data["reason"]
        assert supervisor.replicas(POOL.name) == []
        changes = [e.data["to"] for e in events.events if e.type == "autoscaler.scaled"]
        assert max(changes) == POOL.max and all(0 <= n <= POOL.max for n in changes)
        # A pool the supervisor was not given is refused, by name.
        subject = c.supervisor_subject("scaled-host", c.SCALE_VERB)
        asked = ScaleRequest(pool="design-shell", replicas=2).to_json()
        refused = ScaleReply.model_validate_json(await bus.request(subject, asked, 10))
        assert not refused.ok and "no pool 'design-shell'" in (refused.error or "")
        assert supervisor.replicas("design-shell") == []
        await own.close()

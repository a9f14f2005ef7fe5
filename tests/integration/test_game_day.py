"""Game day: the whole fleet story on real processes.

A planner, a recorder, a monitor (with alert rules, a signed webhook and a real SMTP
server) and a guardian run as their own processes and identities, beside three workers:
a good one, one whose machine is broken (every task fails) and a slow one; a supervisor
runs a worker that crashes at every start. After a first wave on the good worker alone
sets the baseline, a second wave runs on all three:

1. the monitor flags the failing and the slow worker;
2. a critical alert reaches the webhook and the inbox;
3. the watchdog counts the crash looper's restarts and escalates the loop;
4. the guardian quarantines the failing worker on its own, and proposes quarantining the
   slow one and holding the crash looper, which an operator approves;
5. the remaining tickets finish on the good worker;
6. all of it can be read as traces, in SQL and on the dashboard.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agents.settings import Settings
from agents.supervisor import Child, Supervisor, agent_argv
from agents.supervisor_control import this_host
from bus import Bus
from bus import constants as c
from schemas import AGENTS_TOKEN, Event
from schemas.guardian import Intervention, InterventionReply, InterventionRequest
from store.reader import Reader
from tests.alert_receivers import Inbox, WebhookReceiver, smtp_server
from tests.conftest import agent_env
from tests.helpers import AgentProcess, EventLog, stop_all, submit, supervising, wait_until
from tests.integration.test_gateway import gateway_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECRET = "game-day-webhook-secret"
RULES = """\
[[rule]]
name = "worker-failing"
severity = "critical"
anomaly = ["failure_rate"]

[[rule]]
name = "worker-slow"
severity = "warning"
anomaly = ["run_time"]

[[route]]
severity = ["critical"]
webhook = "{webhook}"
email = ["oncall@example.com"]
"""
# What the machine a worker runs on does to every task: nothing, break it, or slow it.
TASK = 'if [ -n "$BROKEN" ]; then echo "make: not found" >&2; exit 2; fi; sleep ${SLOW:-0.05}'


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET.encode()).start()
    yield r
    r.stop()


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def game(settings: Settings, tmp_path: Path, receiver: WebhookReceiver) -> Settings:
    rules = tmp_path / "alerts.toml"
    rules.write_text(RULES.format(webhook=receiver.url))
    return settings.model_copy(
        update={
            "anomaly_interval_s": 1.0,
            "anomaly_window_s": 6.0,
            "anomaly_baseline_s": 600.0,
            "store_publish_interval_s": 0.5,
            "alert_rules": rules,
            "alert_retry_base_s": 0.1,
            # A broken worker fails at once and is free again first: with quick retries it
            # would use up a task's attempts before the monitor has a window to judge.
            "retry_base_s": 0.5,
            "retry_cap_s": 2.0,
        }
    )


@pytest.fixture
async def fleet(
    game: Settings, tmp_path: Path, inbox: tuple[Inbox, int]
) -> AsyncIterator[dict[str, AgentProcess]]:
    env = {
        **agent_env(game),
        "OMOI_ALERT_WEBHOOK_SECRET": SECRET,
        "OMOI_SMTP_HOST": "127.0.0.1",
        "OMOI_SMTP_PORT": str(inbox[1]),
    }
    machines = {
        "w-good": {},
        "w-bad": {"BROKEN": "1", "OMOI_TASK_ENV_PASS": "BROKEN"},
        "w-slow": {"SLOW": "1.5", "OMOI_TASK_ENV_PASS": "SLOW"},
    }
    made = {
        role: AgentProcess(role, role, env, tmp_path / f"{role}.log")
        for role in ("planner", "recorder", "monitor", "guardian")
    }
    made |= {
        name: AgentProcess("worker", name, {**env, **extra}, tmp_path / f"{name}.log")
        for name, extra in machines.items()
    }
    yield made
    await stop_all(list(made.values()))


@pytest.fixture
async def crash_looper(game: Settings, bus: Bus) -> AsyncIterator[Supervisor]:
    # A worker whose configuration it refuses: it exits 2 at every start.
    child = Child("worker-9", agent_argv("worker", "--label", "NOT A LABEL"), agent=True)
    async with supervising(game, bus, [child], backoff_base_s=0.2, backoff_cap_s=1.0) as sup:
        yield sup


def tickets(prefix: str, n: int, tasks: int) -> list[dict[str, Any]]:
    def task(j: int) -> dict[str, Any]:
        return {"name": f"t{j}", "phase": "implementation", "command": TASK, "max_retries": 20}

    return [
        {"id": f"{prefix}-{i}", "title": f"{prefix} {i}", "tasks": [task(j) for j in range(tasks)]}
        for i in range(n)
    ]


async def operator(game: Settings) -> Bus:
    assert game.nats_url
    return await Bus.connect(game.nats_url, name="op", credentials=game.credentials("operator"))


async def approve(bus: Bus, iv: Intervention) -> Intervention:
    raw = await bus.request(c.GUARDIAN_APPROVE, InterventionRequest(id=iv.id).to_json(), 10.0)
    reply = InterventionReply.model_validate_json(raw)
    assert reply.ok and reply.intervention is not None, reply.error
    return reply.intervention


def proposal(events: EventLog, target: str) -> Intervention | None:
    for e in events.of(AGENTS_TOKEN, "guardian.proposed"):
        if e.data["target"] == target:
            return Intervention.model_validate(e.data)
    return None


async def test_game_day(
    game: Settings,
    bus: Bus,
    events: EventLog,
    fleet: dict[str, AgentProcess],
    crash_looper: Supervisor,
    receiver: WebhookReceiver,
    inbox: tuple[Inbox, int],
) -> None:
    for name in ("planner", "recorder", "monitor", "guardian", "w-good"):
        await fleet[name].start(bus)
    # The baseline: a first wave on the good worker alone.
    first = tickets("calm", 6, 4)
    for ticket in first:
        assert (await submit(bus, ticket))["ok"]
    for ticket in first:
        await events.wait_type(ticket["id"], "ticket.done", timeout=60)

    # The bad day: two more workers, a crash looper, and a second wave.
    await fleet["w-bad"].start(bus)
    await fleet["w-slow"].start(bus)
    second = tickets("storm", 24, 3)
    for ticket in second:
        assert (await submit(bus, ticket))["ok"]

    # 1. Both are flagged.
    failing = await events.wait(_anomaly("failure_rate", "w-bad"), timeout=90)
    slow = await events.wait(_anomaly("run_time", "w-slow"), timeout=90)
    assert failing.data["evidence"] and slow.data["observed"] > 2 * slow.data["baseline"]

    # 2. The critical alert reaches the webhook and the inbox (the warning only the bus).
    async def told() -> bool:
        return bool(receiver.hooks) and bool(inbox[0].mails)

    await wait_until(told, timeout=60)
    hook = receiver.hooks[0]
    assert hook.signed and hook.body["rule"] == "worker-failing"
    assert hook.body["alerts"][0]["labels"]["agent"] == "w-bad"
    (to, mail), *_ = inbox[0].mails
    assert to == ["oncall@example.com"] and "CRITICAL" in mail["Subject"]
    await events.wait(lambda e: e.type == "alert.firing" and e.data["rule"] == "worker-slow")

    # 3. The watchdog sees the crash loop and escalates it, once.
    loop = await events.wait_type(AGENTS_TOKEN, "agent.crash_looping", timeout=90)
    assert loop.data["child"] == "worker-9" and loop.data["restarts"] >= 3
    assert events.of(AGENTS_TOKEN, "agent.restarted")

    # 4. The guardian quarantines the failing worker itself, and proposes the rest.
    applied = await events.wait(
        lambda e: e.type == "guardian.applied" and e.data["target"] == "w-bad", timeout=60
    )
    assert applied.data["autonomous"] and applied.data["kind"] == "quarantine_worker"
    held_since = await _quarantine_announced(bus, "w-bad")
    ops = await operator(game)
    try:
        hold = f"{this_host()}.worker-9"
        await wait_until(lambda: _proposed(events, "w-slow", hold), timeout=60)
        slow_iv, hold_iv = proposal(events, "w-slow"), proposal(events, hold)
        assert slow_iv is not None and hold_iv is not None
        assert (await approve(ops, slow_iv)).status == "applied"
        assert (await approve(ops, hold_iv)).status == "applied"
    finally:
        await ops.close()
    assert crash_looper.children[0].held is not None
    slow_since = await _quarantine_announced(bus, "w-slow")

    # 5. The remaining tickets finish, on the good worker once the others were held.
    for ticket in second:
        await events.wait_type(ticket["id"], "ticket.done", timeout=120)
    late = [
        e
        for t in second
        for e in events.of(t["id"], "task.started")
        if (e.agent == "w-bad" and e.at > held_since) or (e.agent == "w-slow" and e.at > slow_since)
    ]
    assert late == [], [(e.task, e.agent) for e in late]
    by_worker = {e.agent for t in second for e in events.of(t["id"], "task.succeeded")}
    assert "w-good" in by_worker and "w-bad" not in by_worker

    # 6. Readable afterwards: traces and SQL in the store, the dashboard over it.
    reader = Reader(game.published_dir, refresh_s=0.1)
    victim = next(
        e.ticket_id
        for t in second
        for e in events.of(t["id"], "task.retrying")
        if e.agent == "w-bad"
    )

    async def recorded() -> bool:
        rows = reader.query("SELECT count(*) FROM interventions WHERE status = 'applied'").rows
        done = reader.query("SELECT count(*) FROM tickets WHERE status = 'done'").rows
        return rows[0][0] == 3 and done[0][0] == len(first) + len(second)

    await wait_until(recorded, timeout=60)
    roles = {r[0] for r in reader.query(
        "SELECT DISTINCT role FROM spans WHERE ticket_id = ?", [victim]).rows}  # fmt: skip
    assert {"planner", "worker"} <= roles
    failed_attempts = reader.query(
        "SELECT count(*) FROM spans WHERE ticket_id = ? AND agent = 'w-bad' AND status = 'error'",
        [victim],
    ).rows[0][0]
    assert failed_attempts >= 1
    # (A busy machine may add late heartbeats of theirs.)
    found = set(reader.query("SELECT agent, kind FROM anomalies WHERE agent LIKE 'w-%'").rows)
    assert {("w-bad", "failure_rate"), ("w-slow", "run_time")} <= found
    assert not {kind for agent, kind in found if agent == "w-good"} - {"heartbeat_gap"}
    decided = {
        row[0]: row[1:]
        for row in reader.query(
            "SELECT target, kind, decided_by, approved_by FROM interventions "
            "WHERE status = 'applied'"
        ).rows
    }
    assert decided["w-bad"][0] == "quarantine_worker" and decided["w-bad"][2] is None
    assert decided["w-slow"][2] is not None and decided[hold][0] == "hold_agent"
    fired = {r[0] for r in reader.query("SELECT rule FROM alerts").rows}
    assert fired >= {"worker-failing", "worker-slow"}
    audited = reader.query("SELECT count(*) FROM audit_log WHERE action LIKE 'guardian.%'").rows[0][
        0
    ]
    assert audited >= 3
    async with gateway_client(game, bus, reader) as api:
        page = (await api.get("/")).text
        # The alerts have resolved by now (the monitor saw the workers stop); the guardian's
        # part stays on the dashboard.
        for kind, target in (("quarantine_worker", "w-bad"), ("quarantine_worker", "w-slow"),
                             ("hold_agent", hold)):  # fmt: skip
            assert f'data-kind="{kind}" data-status="applied" data-target="{target}"' in page
        ticket_page = (await api.get(f"/tickets/{victim}")).text
        assert '<svg class="waterfall"' in ticket_page and "w-bad" in ticket_page
        if shots := os.environ.get("OMOI_SCREENSHOTS"):  # the README's pictures, on demand
            await _screenshots(Path(shots), str(api.base_url), api.headers, victim)
    _write_story(game.data_dir / "game-day.json", events)


def _anomaly(kind: str, agent: str) -> Any:
    return lambda e: e.type == "anomaly.detected" and e.agent == agent and e.data["kind"] == kind


async def _proposed(events: EventLog, *targets: str) -> bool:
    return all(proposal(events, t) is not None for t in targets)


async def _quarantine_announced(bus: Bus, agent: str) -> datetime:
    """When the worker's heartbeat first said it is quarantined: it takes nothing after."""

    async def beat() -> datetime | None:
        found = await bus.heartbeats.value(agent)
        return found.at if found is not None and found.quarantined else None

    at: datetime = await wait_until(beat, timeout=20)
    return at


async def _screenshots(out: Path, url: str, headers: Any, ticket: str) -> None:
    from playwright.async_api import async_playwright

    out.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                           args=["--no-sandbox"])  # fmt: skip
        context = await browser.new_context(
            viewport={"width": 1400, "height": 1000},
            extra_http_headers={"Authorization": headers["authorization"]},
        )
        page = await context.new_page()
        # The dashboard's top (alerts, guardian, the newest tickets); the whole ticket page.
        for path, name, whole in (("/", "dashboard.png", False),
                                  (f"/tickets/{ticket}", "ticket-trace.png", True)):  # fmt: skip
            await page.set_viewport_size({"width": 1400, "height": 1000 if whole else 760})
            await page.goto(url.rstrip("/") + path)
            await page.wait_for_load_state("networkidle")
            await page.screenshot(path=str(out / name), full_page=whole)
        await browser.close()


def _write_story(path: Path, events: EventLog) -> None:
    """The agents' side of the day, kept beside the logs for a person reading a failure."""
    story = [_line(e) for e in events.of(AGENTS_TOKEN)]
    path.write_text(json.dumps(story, indent=1, default=str))


def _line(e: Event) -> dict[str, Any]:
    return {"at": e.at, "type": e.type, "agent": e.agent, "id": e.id}

"""`GET /metrics` against a real fleet: NATS for queues, dead letters and heartbeats, a real
store (recorder, published segments) for tasks, attempts, run times and cost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agents.recorder.agent import Recorder
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from gateway.__main__ import PublishedStore
from schemas import AGENTS_TOKEN, Event, EventType, utcnow
from schemas.alert import Alert, AlertNotice, AlertStatus, Severity
from schemas.token import Role
from tests.conftest import Running
from tests.helpers import EventLog, submit, wait_until
from tests.integration.test_gateway import gateway_client, make_token

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]


def samples(text: str) -> dict[str, list[Sample]]:
    """Every sample by its name, as Prometheus' own parser reads the page."""
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    for sample in found.get(name, []):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


async def test_metrics_show_queues_tasks_attempts_run_times_agents_and_dead_letters(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    running: Running,
    start_planner: Start,
    start_worker: Start,
) -> None:
    s = settings.model_copy(update={"store_publish_interval_s": 0.2})
    await running.start(Recorder(bus, s))
    await start_planner()
    await start_worker()  # shell only: the agent task below waits in its queue
    tasks = [
        {"name": "ok", "phase": "design", "command": "true"},
        {"name": "flaky", "phase": "design", "command": "exit 3", "max_retries": 1},
    ]
    assert (await submit(bus, {"id": "m1", "title": "metrics", "tasks": tasks}))["ok"]
    waiting = [{"name": "think", "phase": "requirements", "capability": "agent",
                "instructions": "never runs here"}]  # fmt: skip
    assert (await submit(bus, {"id": "m2", "title": "queued", "tasks": waiting}))["ok"]
    await bus.nc.publish(c.SUBMIT_SUBJECT, b"not json")  # a dead letter of intake
    # An alert firing, as the monitor announces one.
    alert = Alert(rule="backlog", severity=Severity.WARNING, key="backlog/x", summary="deep",
                  started_at=utcnow())  # fmt: skip
    notice = AlertNotice(id="backlog.firing.1", status=AlertStatus.FIRING, rule="backlog",
                         severity=Severity.WARNING, alerts=[alert])  # fmt: skip
    data = notice.model_dump(mode="json")
    await bus.publish_event(
        Event(id=notice.id, type=EventType.ALERT_FIRING, ticket_id=AGENTS_TOKEN, data=data)
    )
    await events.wait_type("m1", "ticket.failed")
    await events.wait_type("m2", "task.queued")

    viewer = await make_token(bus, Role.VIEWER, "prometheus")
    # The gateway's own identity: what it reads for a scrape, its permissions allow.
    assert s.nats_url
    as_gateway = await Bus.connect(s.nats_url, name="gateway", credentials=s.credentials("gateway"))
    try:
        store = PublishedStore(s.published_dir)
        async with gateway_client(s, as_gateway, store, token=viewer) as api:

            async def scraped() -> dict[str, list[Sample]] | None:
                r = await api.get("/metrics")
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
                found = samples(r.text)
                # A scrape's queries may see two publishes of the store: wait for both outcomes.
                design = {"phase": "design", "capability": "shell"}
                if value(found, "omoi_tasks", status="failed") != 1 or (
                    value(found, "omoi_task_attempts_total", **design, outcome="failed") != 1
                ):
                    return None  # the store has not published the outcome yet
                if value(found, "omoi_dead_letters", origin="intake") is None:
                    return None
                if value(found, "omoi_alerts_firing", severity="warning") != 1:
                    return None
                return found

            found = await wait_until(scraped, timeout=30)
            async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
                assert (await anonymous.get("/metrics")).status_code == 401
    finally:
        await as_gateway.close()

    assert value(found, "omoi_metrics_source_up", source="nats") == 1
    assert value(found, "omoi_metrics_source_up", source="store") == 1
    # Tasks by status, from the store.
    assert value(found, "omoi_tasks", status="succeeded") == 1
    assert value(found, "omoi_tasks", status="queued") == 1
    # Attempts: the flaky task failed twice (its retry too), the good one succeeded once.
    design = {"phase": "design", "capability": "shell"}
    assert value(found, "omoi_task_attempts_total", **design, outcome="succeeded") == 1
    assert value(found, "omoi_task_attempts_total", **design, outcome="retrying") == 1
    assert value(found, "omoi_task_attempts_total", **design, outcome="failed") == 1
    # Run time: three attempts, cumulative buckets ending at +Inf with the count.
    assert value(found, "omoi_task_run_seconds_count", **design) == 3
    assert value(found, "omoi_task_run_seconds_bucket", **design, le="+Inf") == 3
    buckets = [s.value for s in found["omoi_task_run_seconds_bucket"]]
    assert buckets == sorted(buckets)
    assert (value(found, "omoi_task_run_seconds_sum", **design) or 0) > 0
    # Attempts per finished task: one took one, the other two.
    assert value(found, "omoi_task_attempts_per_task_bucket", **design, le="1") == 1
    assert value(found, "omoi_task_attempts_per_task_bucket", **design, le="2") == 2
    assert value(found, "omoi_task_attempts_per_task_sum", **design) == 3
    # Queue depth: the agent task waits in its consumer; the shell queues are empty.
    agent_queue = {"stream": c.TASKS_STREAM, "consumer": c.task_consumer("requirements", "agent")}
    assert value(found, "omoi_consumer_pending_messages", **agent_queue) == 1
    shell_queue = {"stream": c.TASKS_STREAM, "consumer": c.task_consumer("design", "shell")}
    assert value(found, "omoi_consumer_pending_messages", **shell_queue) == 0
    recorder = {"stream": c.EVENTS_STREAM, "consumer": c.RECORDER_EVENTS_CONSUMER}
    assert value(found, "omoi_consumer_pending_messages", **recorder) is not None
    # Dead letters and heartbeats, live from NATS.
    assert (value(found, "omoi_dead_letters", origin="intake") or 0) >= 1
    ages = {s.labels["role"]: s.value for s in found["omoi_agent_heartbeat_age_seconds"]}
    assert {"planner", "worker", "recorder"} <= ages.keys()
    assert all(0 <= age < 30 for age in ages.values())
    assert value(found, "omoi_agents", role="worker", health="ok") == 1
    assert value(found, "omoi_alerts_firing", severity="warning") == 1
    assert value(found, "omoi_alerts_firing", severity="critical") == 0


async def test_a_missing_store_costs_its_metrics_only(
    bus: Bus, settings: Settings, start_planner: Start, tmp_path: Any
) -> None:
    await start_planner()
    viewer = await make_token(bus, Role.VIEWER, "prometheus")
    nowhere = PublishedStore(tmp_path / "no-store")
    async with gateway_client(settings, bus, nowhere, token=viewer) as api:
        r = await api.get("/metrics")
    assert r.status_code == 200
    found = samples(r.text)
    assert value(found, "omoi_metrics_source_up", source="store") == 0
    assert value(found, "omoi_metrics_source_up", source="nats") == 1
    assert "omoi_tasks" not in found
    assert value(found, "omoi_agents", role="planner", health="ok") == 1

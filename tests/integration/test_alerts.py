"""Alerts on real parts: a monitor on a nats-server judging a DuckDB store, a local
webhook receiver that checks signatures, a real SMTP server (aiosmtpd). A critical alert
reaches both, retried through the receiver's errors; every attempt is an event and the
history is SQL. Receivers that are down or slow are retried and recorded and hold up
nothing; a rule file with a mistake stops the monitor at start with its line."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from agents.monitor.agent import Monitor
from agents.monitor.alert_rules import parse_rules
from agents.monitor.notify import Notifier, RetryPolicy, Smtp, public_url
from agents.settings import Settings
from benchmarks.workloads import steady
from bus import Bus
from schemas import AGENTS_TOKEN, utcnow
from schemas.alert import AlertNotice, AlertStatus, Delivery, Severity
from store.reader import Reader
from store.records import RecordedEvent
from tests.alert_receivers import Inbox, WebhookReceiver, smtp_server
from tests.helpers import EventLog, Running, wait_until
from tests.integration.monitor_support import GOOD, LANES, Store

pytestmark = pytest.mark.integration

SECRET = b"test-webhook-secret"
RULES = """\
[[rule]]
name = "worker-failing"
severity = "critical"
anomaly = ["failure_rate"]

[[route]]
severity = ["critical"]
webhook = "{webhook}"
email = ["oncall@example.com"]
"""


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET).start()
    yield r
    r.stop()


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


def notifier(rules_text: str, smtp_port: int | None, retry: RetryPolicy) -> Notifier:
    smtp = Smtp("127.0.0.1", smtp_port, "omoi@test") if smtp_port else None
    return Notifier(parse_rules(rules_text), httpx.AsyncClient(), webhook_secret=SECRET,
                    smtp=smtp, retry=retry)  # fmt: skip


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_critical_alert_reaches_the_webhook_and_the_inbox_and_is_history_in_sql(
    settings: Settings,
    store: Store,
    monitor_bus: Bus,
    events: EventLog,
    running: Running,
    receiver: WebhookReceiver,
    inbox: tuple[Inbox, int],
) -> None:
    mail, smtp_port = inbox
    receiver.statuses = [500, 503]  # the receiver fails twice, then takes it
    rng, now = random.Random(3), utcnow()
    store.add(list(steady(rng, LANES, GOOD, now - timedelta(hours=2), 1.9, 600)))
    recent = now - timedelta(minutes=4)
    store.add(
        list(steady(rng, LANES[:1], ["w-bad"], recent, 0.06, 100, failing=["w-bad"], prefix="B"))
    )
    fast = settings.model_copy(update={"anomaly_interval_s": 0.2})
    rules_text = RULES.format(webhook=receiver.url)
    monitor = Monitor(
        monitor_bus, fast, store=Reader(fast.published_dir, refresh_s=0.1),
        alerts=parse_rules(rules_text),
        notifier=notifier(rules_text, smtp_port, RetryPolicy(attempts=4, base_s=0.05, timeout_s=5)),
    )  # fmt: skip
    await running.start(monitor)

    firing = await events.wait_type(AGENTS_TOKEN, "alert.firing")
    notice = AlertNotice.model_validate(firing.data)
    assert (notice.rule, notice.severity, notice.status) == (
        "worker-failing",
        Severity.CRITICAL,
        AlertStatus.FIRING,
    )
    (alert,) = notice.alerts
    assert alert.labels["agent"] == "w-bad" and len(alert.evidence) == 5

    def delivered(channel: str) -> list[Delivery]:
        return [Delivery.model_validate(e.data) for e in events.of(AGENTS_TOKEN, "alert.delivery")
                if e.data["channel"] == channel]  # fmt: skip

    async def done() -> bool:
        return any(d.ok for d in delivered("webhook")) and any(d.ok for d in delivered("email"))

    await wait_until(done, timeout=20)
    hooks = delivered("webhook")
    assert [(d.attempt, d.ok, d.status, d.final) for d in hooks] == [
        (1, False, 500, False), (2, False, 503, False), (3, True, 200, True),
    ]  # fmt: skip
    # The recorded target has no credentials or query string.
    assert all(d.target.endswith("/hook") and "token" not in d.target for d in hooks)
    (hook,) = receiver.hooks
    assert (
        hook.signed and hook.body["id"] == notice.id and hook.body["alerts"][0]["key"] == alert.key
    )
    ((to, message),) = mail.mails
    assert to == ["oncall@example.com"]
    assert message["Subject"] == "[Omoi CRITICAL] worker-failing: 1 alert firing"
    assert "w-bad failed" in message.get_payload() and "evidence: B" in message.get_payload()
    assert [(d.attempt, d.ok) for d in delivered("email")] == [(1, True)]

    # w-bad recovers: the alert resolves, and that is told too.
    store.add(
        list(steady(rng, LANES[:1], ["w-bad"], now - timedelta(minutes=2), 0.03, 1500, prefix="R"))
    )
    resolved = AlertNotice.model_validate(
        (await events.wait_type(AGENTS_TOKEN, "alert.resolved")).data
    )
    assert resolved.alerts[0].key == alert.key
    await wait_until(lambda: _has(receiver, 2), timeout=10)

    # The history in SQL: the events as the recorder stores them.
    told = [e for e in events.events if e.type.startswith(("alert.", "anomaly."))]
    store.writer.ingest(
        [RecordedEvent.from_event_json(e.to_json(), 10_000 + i) for i, e in enumerate(told)]
    )
    store.writer.publish()
    reader = Reader(settings.published_dir)
    rows = reader.query(
        "SELECT rule, severity, status, key, resolved_at IS NOT NULL FROM alerts", max_rows=10
    ).rows
    assert rows == [("worker-failing", "critical", "resolved", alert.key, True)]
    tries = reader.query(
        "SELECT channel, attempt, ok, status FROM alert_deliveries WHERE notice = ? "
        "ORDER BY channel, attempt",
        [notice.id],
        max_rows=10,
    ).rows
    assert tries == [
        ("email", 1, True, 250),
        ("webhook", 1, False, 500),
        ("webhook", 2, False, 503),
        ("webhook", 3, True, 200),
    ]
    (found,) = reader.query(
        "SELECT kind, agent, resolved_at IS NOT NULL FROM anomalies", max_rows=5
    ).rows
    assert found == ("failure_rate", "w-bad", True)


async def _has(receiver: WebhookReceiver, count: int) -> bool:
    return len(receiver.hooks) >= count


def notice_of(severity: Severity = Severity.CRITICAL) -> AlertNotice:
    return AlertNotice(id="n-1", status=AlertStatus.FIRING, rule="r", severity=severity, alerts=[])


async def test_receivers_that_are_down_slow_or_failing_are_retried_recorded_and_hold_up_nothing(
    receiver: WebhookReceiver,
) -> None:
    receiver.delay_s = 1.0  # slower than the timeout: every attempt times out
    down = closed_port()
    text = f"""\
[[rule]]
name = "r"
severity = "critical"
anomaly = []

[[route]]
severity = ["critical"]
webhook = "{receiver.url}"

[[route]]
severity = ["critical"]
webhook = "http://127.0.0.1:{down}/hook"
email = ["oncall@example.com"]
"""
    n = notifier(text, closed_port(), RetryPolicy(attempts=3, base_s=0.05, timeout_s=0.3))
    recorded: list[Delivery] = []

    async def record(d: Delivery) -> None:
        recorded.append(d)

    n.send(notice_of(), record)
    assert n.in_flight == 3  # slow webhook, down webhook, down mail server: all under way
    assert recorded == []  # and send() returned before any attempt ended

    async def finished() -> bool:
        return sum(d.final for d in recorded) == 3

    await wait_until(finished, timeout=15)
    by: dict[str, list[Delivery]] = {}
    for d in recorded:
        by.setdefault(d.target, []).append(d)
    slow, gone, mail = (
        public_url(receiver.url),
        f"http://127.0.0.1:{down}/hook",
        "oncall@example.com",
    )
    assert set(by) == {slow, gone, mail}
    for tries in by.values():  # three attempts each, the last one final, none delivered
        assert [(d.attempt, d.ok, d.final) for d in tries] == [
            (1, False, False),
            (2, False, False),
            (3, False, True),
        ]
    assert {d.error for d in by[slow]} == {"timed out after 0.3s"} and receiver.requests == 3
    assert all("ConnectError" in (d.error or "") for d in by[gone])
    assert all("ConnectionRefusedError" in (d.error or "") for d in by[mail])
    await n.close(1.0)
    await n.close(1.0)  # twice is fine


async def test_a_4xx_is_not_retried_and_a_record_that_fails_does_not_stop_delivery(
    receiver: WebhookReceiver,
) -> None:
    receiver.statuses = [404]
    text = RULES.format(webhook=receiver.url).replace('email = ["oncall@example.com"]\n', "")
    n = notifier(text, None, RetryPolicy(attempts=3, base_s=0.05, timeout_s=2))
    recorded: list[Delivery] = []

    async def record(d: Delivery) -> None:
        recorded.append(d)
        raise RuntimeError("the bus is away")

    n.send(notice_of(), record)
    await n.close(5.0)
    assert [(d.attempt, d.status, d.final) for d in recorded] == [(1, 404, True)]
    assert receiver.requests == 1


async def test_a_bad_rule_file_stops_the_monitor_at_start_with_its_line(
    tmp_path: Path, settings: Settings
) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text('[[rule]]\nname = "x"\nseverity = "severe"\nanomaly = []\n')
    env = {**os.environ, **settings.to_env(), "OMOI_ALERT_RULES": str(rules)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents.monitor", env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert f"{rules}:3: [[rule]] #1: severity: Input should be" in err.decode()
    # A webhook route without the secret to sign with is refused the same way.
    rules.write_text(RULES.format(webhook="http://127.0.0.1:1/hook"))
    env["OMOI_SMTP_HOST"] = "127.0.0.1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents.monitor", env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and "needs OMOI_ALERT_WEBHOOK_SECRET" in err.decode()

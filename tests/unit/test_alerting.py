"""Alert rules as files (every mistake named with its line), and evaluation: alerts start
once, wait out `for_s`, are grouped by rule and end when their condition goes."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from agents.errors import AlertRulesError
from agents.monitor.alert_rules import check_channels, parse_rules
from agents.monitor.alerting import AlertBook, Signals, conditions
from agents.monitor.notify import public_url, sign
from schemas.alert import AlertStatus, Severity
from schemas.anomaly import Anomaly, AnomalyKind

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = """\
[[rule]]
name = "worker-failing"
severity = "critical"
anomaly = ["failure_rate"]

[[rule]]
name = "backlog"
severity = "warning"
metric = "queue_depth"
above = 500
for_s = 60

[[rule]]
name = "dead-letters"
severity = "info"
metric = "dead_letters"
above = 0

[[route]]
severity = ["critical"]
webhook = "https://hooks.example.com/omoi"
email = ["oncall@example.com"]
"""


def test_a_rule_file_parses() -> None:
    rules = parse_rules(RULES)
    assert [r.name for r in rules.rule] == ["worker-failing", "backlog", "dead-letters"]
    assert [r.webhook for r in rules.routes_for(Severity.CRITICAL)] == [
        "https://hooks.example.com/omoi"
    ]
    assert rules.routes_for(Severity.WARNING) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"critical"\nanomaly', '"severe"\nanomaly'),
         "alerts.toml:3: [[rule]] #1: severity: Input should be 'info', 'warning' or 'critical'"),
        (("above = 500\n", ""), "alerts.toml:6: [[rule]] #2: a metric rule needs `above"),
        (("for_s = 60", "for_s = -1"), "alerts.toml:11: [[rule]] #2: for_s: Input should be"),
        (("for_s", "fro_s"), "alerts.toml:11: [[rule]] #2: fro_s: Extra inputs are not permitted"),
        (('["failure_rate"]', '["nope"]'), "alerts.toml:4: [[rule]] #1: anomaly.0: Input should"),
        (('metric = "dead_letters"', 'metric = "mood"'), "alerts.toml:16: [[rule]] #3: metric:"),
        (('name = "backlog"', 'name = "Back log"'), "alerts.toml:6: [[rule]] #2: name: lower-case"),
        (('name = "backlog"', 'name = "dead-letters"'),
         "alerts.toml:14: two rules are named 'dead-letters'"),
        (('webhook = "https://hooks.example.com/omoi"\n', 'webhook = "ftp://x"\n'),
         "alerts.toml:21: [[route]] #1: webhook: String should match pattern"),
        (('["oncall@example.com"]', '["a@b.c, evil@x.y"]'),
         "alerts.toml:22: [[route]] #1: email: 'a@b.c, evil@x.y' is not one"),
        (("[[route]]", "[[route]"), "alerts.toml:19: not TOML: Expected ']]'"),
    ],
)  # fmt: skip
def test_a_bad_rule_file_is_named_with_its_line_and_why(
    change: tuple[str, str], message: str
) -> None:
    with pytest.raises(AlertRulesError) as caught:
        parse_rules(RULES.replace(*change), "alerts.toml")
    assert str(caught.value).startswith(message), str(caught.value)


def test_routes_this_monitor_cannot_serve_are_refused_at_start() -> None:
    rules = parse_rules(RULES)
    with pytest.raises(AlertRulesError, match="needs OMOI_ALERT_WEBHOOK_SECRET"):
        check_channels(rules, "alerts.toml", can_sign=False, can_mail=True)
    with pytest.raises(AlertRulesError, match="needs OMOI_SMTP_HOST"):
        check_channels(rules, "alerts.toml", can_sign=True, can_mail=False)
    check_channels(rules, "alerts.toml", can_sign=True, can_mail=True)


def failing(agent: str) -> Anomaly:
    return Anomaly(
        kind=AnomalyKind.FAILURE_RATE, key=f"failure_rate.{agent}", summary=f"{agent} fails",
        agent=agent, observed=1.0, baseline=0.02, score=9.0, threshold=6.0, samples=5,
        baseline_samples=500, window_s=300, evidence=["T1.a#1"],
    )  # fmt: skip


def test_alerts_start_once_grouped_by_rule_and_end_when_the_cause_goes() -> None:
    rules, book = parse_rules(RULES), AlertBook()
    both = Signals(anomalies=[failing("w-1"), failing("w-2")], dead_letters=0)
    (notice,) = book.update(conditions(rules, both), T0)
    assert (notice.rule, notice.status, notice.severity) == (
        "worker-failing", AlertStatus.FIRING, Severity.CRITICAL,
    )  # fmt: skip
    assert [a.key for a in notice.alerts] == [
        "worker-failing/failure_rate.w-1", "worker-failing/failure_rate.w-2",
    ]  # fmt: skip
    assert notice.alerts[0].labels == {"kind": "failure_rate", "agent": "w-1"}
    assert notice.alerts[0].evidence == ["T1.a#1"]
    # Still so: nothing new to say.
    assert book.update(conditions(rules, both), T0 + timedelta(seconds=15)) == []
    # One recovers: its alert ends, alone in its notice.
    later = T0 + timedelta(seconds=30)
    (ended,) = book.update(conditions(rules, Signals(anomalies=[failing("w-2")])), later)
    assert ended.status is AlertStatus.RESOLVED
    assert [a.key for a in ended.alerts] == ["worker-failing/failure_rate.w-1"]
    assert ended.alerts[0].started_at == T0 and ended.id.startswith("worker-failing.resolved.")


def test_a_threshold_must_hold_for_its_for_s_before_it_fires() -> None:
    rules, book = parse_rules(RULES), AlertBook()

    def deep(depth: int) -> Signals:
        return Signals(queue_depth={"OMOI_TASKS/design-shell": depth, "OMOI_TASKS/x": 3})

    assert book.update(conditions(rules, deep(900)), T0) == []
    assert book.update(conditions(rules, deep(100)), T0 + timedelta(seconds=30)) == []  # dipped
    assert book.update(conditions(rules, deep(900)), T0 + timedelta(seconds=40)) == []
    (notice,) = book.update(conditions(rules, deep(950)), T0 + timedelta(seconds=100))
    (alert,) = notice.alerts
    assert alert.key == "backlog/OMOI_TASKS/design-shell" and alert.value == 950
    assert alert.started_at == T0 + timedelta(seconds=40)  # when it began to hold
    assert alert.labels == {"metric": "queue_depth", "consumer": "OMOI_TASKS/design-shell"}
    assert "queue_depth of OMOI_TASKS/design-shell is 950, above 500" in alert.summary


def test_store_figures_are_not_judged_without_a_store() -> None:
    rules = parse_rules(RULES)
    assert conditions(rules, Signals(dead_letters=None)) == []
    (held,) = conditions(rules, Signals(dead_letters=2))
    assert held.key == "dead-letters" and held.summary == "dead_letters is 2, above 0"


def test_signature_and_recorded_url() -> None:
    # HMAC-SHA256 over "<timestamp>.<body>", as docs/alerts.md tells a receiver to check.
    want = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(b"k", "1700000000", b"{}") == f"sha256={want}"
    assert public_url("https://u:p@h.example:8443/a/b?token=s#f") == "https://h.example:8443/a/b"

"""Alert evaluation: pure functions from the rules and what the monitor sees now to the
alerts that start and end. Deduplicated (an alert is told once when it starts and once
when it ends, however many evaluations it lasts) and grouped (one rule's alerts that
change at the same evaluation are one notice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agents.monitor.alert_rules import PER_SUBJECT, AlertRules, Rule
from schemas.alert import Alert, AlertNotice, AlertStatus
from schemas.anomaly import Anomaly


@dataclass(frozen=True)
class Signals:
    """What the monitor sees at one evaluation. Store figures are None without a store."""

    anomalies: Sequence[Anomaly] = ()
    queue_depth: Mapping[str, int] = field(default_factory=dict)
    heartbeat_age_s: Mapping[str, float] = field(default_factory=dict)
    stale_agents: int = 0
    failed_attempts: int | None = None
    dead_letters: int | None = None
    cost_usd: float | None = None


@dataclass(frozen=True)
class Condition:
    """A rule that holds now for one subject."""

    rule: Rule
    key: str
    summary: str
    labels: dict[str, str]
    value: float | None = None
    evidence: tuple[str, ...] = ()


def conditions(rules: AlertRules, signals: Signals) -> list[Condition]:
    held: list[Condition] = []
    for rule in rules.rule:
        if rule.anomaly is not None:
            held += _on_anomalies(rule, signals.anomalies)
        else:
            held += _on_metric(rule, signals)
    return held


def _on_anomalies(rule: Rule, anomalies: Iterable[Anomaly]) -> list[Condition]:
    kinds = set(rule.anomaly or ())
    return [
        Condition(
            rule=rule,
            key=f"{rule.name}/{a.key}",
            summary=rule.summary or a.summary,
            labels={
                k: v
                for k, v in (
                    ("kind", a.kind.value),
                    ("agent", a.agent),
                    ("phase", a.phase),
                    ("capability", a.capability),
                    ("consumer", a.consumer),
                )
                if v
            },
            value=a.observed,
            evidence=tuple(a.evidence),
        )
        for a in anomalies
        if not kinds or a.kind in kinds
    ]


def _on_metric(rule: Rule, s: Signals) -> list[Condition]:
    assert rule.metric is not None
    assert rule.above is not None
    values: Mapping[str, float | None]
    if rule.metric == "queue_depth":
        values = s.queue_depth
    elif rule.metric == "heartbeat_age_s":
        values = s.heartbeat_age_s
    else:
        values = {"": getattr(s, rule.metric)}
    held = []
    for subject, value in values.items():
        if value is None or value <= rule.above:
            continue
        what = f"{rule.metric} of {subject}" if subject else rule.metric
        labels = {PER_SUBJECT[rule.metric]: subject} if subject else {}
        held.append(
            Condition(
                rule=rule,
                key=f"{rule.name}/{subject}" if subject else rule.name,
                summary=rule.summary or f"{what} is {value:g}, above {rule.above:g}",
                labels={"metric": rule.metric, **labels},
                value=float(value),
            )
        )
    return held


@dataclass
class AlertBook:
    """The alerts firing now, and the conditions waiting out their rule's `for_s`."""

    firing: dict[str, Alert] = field(default_factory=dict)
    pending: dict[str, datetime] = field(default_factory=dict)

    def update(self, held: Iterable[Condition], now: datetime) -> list[AlertNotice]:
        """The notices this evaluation makes: alerts that start (held for `for_s`) and
        alerts that end (no longer held), one notice per rule and status."""
        held_now = {c.key: c for c in held}
        for key in list(self.pending):
            if key not in held_now:
                del self.pending[key]
        started: list[Alert] = []
        for key, c in held_now.items():
            if key in self.firing:
                continue
            since = self.pending.setdefault(key, now)
            if (now - since).total_seconds() < c.rule.for_s:
                continue
            del self.pending[key]
            alert = Alert(
                rule=c.rule.name, severity=c.rule.severity, key=key, summary=c.summary,
                labels=c.labels, value=c.value, threshold=c.rule.above, started_at=since,
                evidence=list(c.evidence),
            )  # fmt: skip
            self.firing[key] = alert
            started.append(alert)
        ended = [self.firing.pop(key) for key in list(self.firing) if key not in held_now]
        return [
            *_notices(started, AlertStatus.FIRING, now),
            *_notices(ended, AlertStatus.RESOLVED, now),
        ]


def _notices(alerts: Sequence[Alert], status: AlertStatus, now: datetime) -> list[AlertNotice]:
    by_rule: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_rule.setdefault(alert.rule, []).append(alert)
    stamp = int(now.timestamp() * 1000)
    return [
        AlertNotice(
            id=f"{rule}.{status.value}.{stamp}",
            status=status,
            rule=rule,
            severity=group[0].severity,
            alerts=sorted(group, key=lambda a: a.key),
            at=now,
        )
        for rule, group in sorted(by_rule.items())
    ]

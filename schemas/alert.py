"""Alerts: what the monitor's rules (a TOML file) fire on, and what it told whom.

`alert.firing` and `alert.resolved` events carry an `AlertNotice` (one rule's alerts that
changed together: a group); `alert.delivery` events carry a `Delivery`, one per attempt
to send a notice to a webhook or a mailbox. All on `omoi.events._agents.alert.*`, so the
store keeps the history (views `alerts` and `alert_deliveries`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from schemas.common import WireModel, utcnow


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(WireModel):
    """One alert: a rule whose condition holds for one subject (`key`)."""

    rule: str
    severity: Severity
    key: str
    summary: str
    # What it is about: an agent, a consumer, a phase ... (names as in the anomaly).
    labels: dict[str, str] = Field(default_factory=dict)
    value: float | None = None
    threshold: float | None = None
    started_at: datetime
    evidence: list[str] = Field(default_factory=list)


class AlertNotice(WireModel):
    """Alerts of one rule that started (or ended) at the same evaluation, sent as one."""

    id: str
    status: AlertStatus
    rule: str
    severity: Severity
    alerts: list[Alert]
    at: datetime = Field(default_factory=utcnow)


class Delivery(WireModel):
    """One attempt to send a notice. `target` is the webhook's URL without credentials
    or query, or the mail's recipients."""

    notice: str
    channel: str  # "webhook" or "email"
    target: str
    attempt: int = Field(ge=1)
    ok: bool
    final: bool  # the last attempt: it succeeded, or no retry follows
    status: int | None = None  # the HTTP status, or the SMTP reply code
    error: str | None = None
    duration_ms: float = 0.0
    at: datetime = Field(default_factory=utcnow)

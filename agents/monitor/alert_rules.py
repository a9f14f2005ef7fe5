"""Alert rules, from a TOML file (`OMOI_ALERT_RULES`): what fires, how bad it is, and
where each severity is sent. Parsed once at start; a file that cannot be used stops the
monitor with its line and the reason.

    [[rule]]
    name = "worker-failing"
    severity = "critical"
    anomaly = ["failure_rate"]        # fires on these anomaly kinds (empty: any)

    [[rule]]
    name = "backlog"
    severity = "warning"
    metric = "queue_depth"            # fires while the metric is above the threshold
    above = 500
    for_s = 60                        # ... for this long

    [[route]]
    severity = ["critical", "warning"]
    webhook = "https://hooks.example.com/omoi"
    email = ["oncall@example.com"]

Every alert is on the dashboard whatever the routes say.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agents.errors import AlertRulesError
from schemas.alert import Severity
from schemas.anomaly import AnomalyKind

# What a threshold rule can watch. Per subject: one alert per consumer or agent.
Metric = Literal[
    "queue_depth",  # a durable consumer's pending messages (per consumer)
    "heartbeat_age_s",  # seconds since an agent's last beat (per agent)
    "stale_agents",  # agents that missed 3 beats
    "failed_attempts",  # attempts that failed or are retrying, in the anomaly window
    "dead_letters",  # dead letters stored in the anomaly window
    "cost_usd",  # what attempts cost in the anomaly window
]
PER_SUBJECT = {"queue_depth": "consumer", "heartbeat_age_s": "agent"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    name: str
    severity: Severity
    summary: str | None = None
    # Exactly one of: the anomaly kinds it fires on (empty list: any), or a metric.
    anomaly: list[AnomalyKind] | None = None
    metric: Metric | None = None
    above: float | None = None
    for_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_condition(self) -> Rule:
        if not _NAME.match(self.name):
            raise ValueError("name: lower-case letters, digits, '.', '_' or '-', up to 64")
        if (self.anomaly is None) == (self.metric is None):
            raise ValueError("a rule has either `anomaly = [...]` or `metric = ...`")
        if self.metric is not None and self.above is None:
            raise ValueError("a metric rule needs `above = <threshold>`")
        if self.metric is None and self.above is not None:
            raise ValueError("`above` is for metric rules")
        return self


class Route(_Strict):
    severity: list[Severity] = Field(min_length=1)
    webhook: str | None = Field(default=None, pattern=r"^https?://")
    email: list[str] = Field(default_factory=list)

    @field_validator("email")
    @classmethod
    def _addresses(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            if "@" not in address or any(c in address for c in "\r\n,; "):
                raise ValueError(f"{address!r} is not one address")
        return addresses

    @model_validator(mode="after")
    def _somewhere(self) -> Route:
        if self.webhook is None and not self.email:
            raise ValueError("a route needs a `webhook` or an `email` list")
        return self


class AlertRules(_Strict):
    rule: list[Rule] = Field(default_factory=list)
    route: list[Route] = Field(default_factory=list)

    def routes_for(self, severity: Severity) -> list[Route]:
        return [r for r in self.route if severity in r.severity]


def load_rules(path: Path) -> AlertRules:
    """The rules in `path`; AlertRulesError says `path:line: why`."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise AlertRulesError(f"{path}: cannot read the alert rules: {exc.strerror}") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "alert rules") -> AlertRules:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.12's error has the position only in its message.
        found = re.search(r"^(.*) \(at line (\d+), column \d+\)$", str(exc))
        why, line = (found.group(1), found.group(2)) if found else (str(exc), "1")
        raise AlertRulesError(f"{source}:{line}: not TOML: {why}") from None
    try:
        rules = AlertRules.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        line = _line_of(text, loc)
        field = ".".join(str(p) for p in loc[2:])
        what = f"[[{loc[0]}]] #{int(loc[1]) + 1}" if len(loc) >= 2 else str(loc[0] if loc else "")
        message = error["msg"].removeprefix("Value error, ")
        where = f"{what}: {field}" if field else what
        raise AlertRulesError(f"{source}:{line}: {where}: {message}") from None
    seen: set[str] = set()
    for i, rule in enumerate(rules.rule):
        if rule.name in seen:
            line = _line_of(text, ("rule", i, "name"))
            raise AlertRulesError(f"{source}:{line}: two rules are named {rule.name!r}")
        seen.add(rule.name)
    return rules


def _line_of(text: str, loc: Sequence[object]) -> int:
    """The line of the table (and, if it can be found, the key) an error is about: the
    n-th `[[rule]]` or `[[route]]` header, then the key's line inside it."""
    lines = text.splitlines()
    if len(loc) < 2 or not isinstance(loc[1], int):
        return 1
    header = re.compile(rf"^\s*\[\[\s*{re.escape(str(loc[0]))}\s*\]\]")
    starts = [i for i, line in enumerate(lines) if header.match(line)]
    if loc[1] >= len(starts):
        return 1
    start = starts[loc[1]]
    if len(loc) >= 3:
        key = re.compile(rf"^\s*{re.escape(str(loc[2]))}\s*=")
        for i in range(start + 1, len(lines)):
            if lines[i].lstrip().startswith("["):
                break
            if key.match(lines[i]):
                return i + 1
    return start + 1


def check_channels(rules: AlertRules, source: str, *, can_sign: bool, can_mail: bool) -> None:
    """Routes this monitor can serve: a webhook needs the secret it signs with, mail an
    SMTP server. Said at start rather than at the first alert."""
    for route in rules.route:
        if route.webhook and not can_sign:
            raise AlertRulesError(
                f"{source}: a webhook route needs OMOI_ALERT_WEBHOOK_SECRET (or _FILE), "
                "the secret its notices are signed with"
            )
        if route.email and not can_mail:
            raise AlertRulesError(f"{source}: an email route needs OMOI_SMTP_HOST")

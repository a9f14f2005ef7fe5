"""The monitor's alerting, built from settings at the process's edge: the rules file,
checked against the channels this machine can serve, and the notifier that sends."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx

from agents.monitor.alert_rules import AlertRules, check_channels, load_rules
from agents.monitor.notify import Notifier, RetryPolicy, Smtp
from agents.settings import Settings


@functools.cache
def _load(path: Path, can_sign: bool, can_mail: bool) -> AlertRules:
    # Cached: the entry point checks the file before connecting, the agent then uses it.
    rules = load_rules(path)
    check_channels(rules, str(path), can_sign=can_sign, can_mail=can_mail)
    return rules


def alert_rules(settings: Settings) -> AlertRules | None:
    """The rules of `settings.alert_rules` (None: no alerts). Raises AlertRulesError."""
    if settings.alert_rules is None:
        return None
    return _load(
        settings.alert_rules,
        settings.alert_webhook_secret is not None,
        settings.smtp_host is not None,
    )


def notifier_for(rules: AlertRules, settings: Settings) -> Notifier:
    secret = settings.alert_webhook_secret
    smtp = None
    if settings.smtp_host:
        password = settings.smtp_password
        smtp = Smtp(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            user=settings.smtp_user,
            password=password.get_secret_value() if password else None,
            starttls=settings.smtp_starttls,
        )
    return Notifier(
        rules,
        httpx.AsyncClient(timeout=settings.alert_timeout_s, follow_redirects=False),
        webhook_secret=secret.get_secret_value().encode() if secret else None,
        smtp=smtp,
        retry=RetryPolicy(
            attempts=settings.alert_attempts,
            base_s=settings.alert_retry_base_s,
            timeout_s=settings.alert_timeout_s,
        ),
    )

"""nats-server's refusal log lines (as nats-server 2.15 writes them) as audit entries."""

from __future__ import annotations

from bus.server_audit import from_server_log

KEY = "UD6LPLSUEOX63A3FAIX5F54CGZPDQBX76RTQST6GJKK2K4AVBUWV2323"
ROLES = {KEY: "worker"}
PREFIX = "[26554] 2026/12/02 06:41:39.023065 [ERR] 127.0.0.1:43678 - cid:5 - "
CLIENT = f'"v2.16.0:python3:omoi-worker" - "$G/nkey:{KEY}"'


def test_a_connection_without_credentials() -> None:
    entry = from_server_log(PREFIX + "authentication error", ROLES)
    assert entry is not None
    assert (entry.action, entry.outcome, entry.actor) == ("auth.failure", "denied", "anonymous")
    assert (entry.via, entry.source) == ("nats", "127.0.0.1:43678")


def test_an_unknown_key_and_a_known_one() -> None:
    unknown = from_server_log(PREFIX + 'authentication error - Nkey "UABC"', ROLES)
    assert unknown is not None and unknown.actor == "nkey:UABC"
    key = next(iter(ROLES))
    rotated = from_server_log(PREFIX + f'authentication error - Nkey "{key}"', ROLES)
    assert rotated is not None and rotated.actor == "nats:worker"


def test_denied_publish_and_subscription() -> None:
    publish = from_server_log(
        PREFIX + CLIENT + ' - Publish Violation - Subject "omoi.events.T-1.gate.passed"', ROLES
    )
    assert publish is not None
    assert (publish.action, publish.actor, publish.role) == ("auth.denied", "nats:worker", "worker")
    assert publish.target == "omoi.events.T-1.gate.passed"
    assert publish.client == "v2.16.0:python3:omoi-worker"
    assert "publish to" in publish.detail
    sub = from_server_log(
        PREFIX + CLIENT + ' - Subscription Violation - Subject "omoi.tickets.submit", SID 1', ROLES
    )
    assert sub is not None and sub.target == "omoi.tickets.submit" and "subscribe" in sub.detail


def test_other_lines_are_not_entries() -> None:
    for line in (
        "[26554] 2026/12/02 06:41:39.023065 [INF] Server is ready",
        PREFIX + "Slow Consumer Detected",
        "",
    ):
        assert from_server_log(line, ROLES) is None

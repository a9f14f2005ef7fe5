"""What nats-server refuses, as audit entries: its log lines and its system account's
refused-connection advisories, as nats-server 2.15 writes them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus.server_audit import BadAdvisory, from_auth_advisory, from_server_log

KEY = "UD6LPLSUEOX63A3FAIX5F54CGZPDQBX76RTQST6GJKK2K4AVBUWV2323"
ROLES = {KEY: "worker"}
PREFIX = "[26554] 2026/12/02 06:41:39.023065 [ERR] 127.0.0.1:43678 - cid:5 - "
CLIENT = f'"v2.16.0:python3:omoi-worker" - "$G/nkey:{KEY}"'


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
        # Refused connections come from the system account, heard on every node.
        PREFIX + f'authentication error - Nkey "{KEY}"',
        "",
    ):
        assert from_server_log(line, ROLES) is None


def advisory(**client: Any) -> bytes:
    return json.dumps({
        "type": "io.nats.server.advisory.v1.client_disconnect",
        "id": "vjY6Xj37GT3tkAkoxxl8s7",
        "timestamp": "2026-12-02T10:25:59.821133983Z",
        "server": {"name": "n3", "host": "127.0.0.1", "id": "NBEDZS6QPG", "ver": "2.15.1"},
        "client": {"host": "10.0.0.7", "id": 13, "acc": "$G", "lang": "python3",
                   "ver": "2.16.0", "kind": "Client", **client},
        "reason": "Authentication Failure",
    }).encode()  # fmt: skip


def test_a_refused_connection_names_who_where_and_which_server() -> None:
    entry = from_auth_advisory(advisory(user=KEY, name="omoi-worker"))
    assert (entry.action, entry.outcome, entry.via) == ("auth.failure", "denied", "nats")
    assert (entry.actor, entry.source, entry.target) == (f"nkey:{KEY}", "10.0.0.7", "n3")
    assert entry.client == "omoi-worker (python3 2.16.0)"
    assert "Authentication Failure" in entry.detail
    # The advisory's id: two monitors hearing it store it once.
    assert (
        entry.id == from_auth_advisory(advisory(user=KEY)).id == "nats-auth-vjY6Xj37GT3tkAkoxxl8s7"
    )


def test_without_credentials_or_with_a_user_name() -> None:
    assert from_auth_advisory(advisory()).actor == "anonymous"
    assert from_auth_advisory(advisory(user="bob")).actor == "user:bob"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b"{}",
        json.dumps({"type": "io.nats.server.advisory.v1.client_connect", "id": "x"}).encode(),
        json.dumps(
            {"type": "io.nats.server.advisory.v1.client_disconnect", "id": "x", "client": "bob"}
        ).encode(),
    ],
)
def test_anything_else_is_a_bad_advisory(payload: bytes) -> None:
    with pytest.raises(BadAdvisory):
        from_auth_advisory(payload)

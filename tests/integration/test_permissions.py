"""The trust boundary on the bus: nats-server itself refuses what a role may not do.

Each role connects with its own identity; every allowed and denied publish and
subscription in the table is tried against a real server with `omoi up`'s authorization
block. A refusal is the server's `-ERR Permissions Violation`, which reaches the client
before the answer to the ping that follows it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from bus import AuthError, Bus, EmbeddedNatsServer
from bus import constants as c
from bus.auth import AuthDir, CredentialsError, load_credentials
from bus.permissions import ROLES
from schemas import Event, EventType
from tests.integration.permission_table import PUBLISH, SUBSCRIBE, VERDICT, WORKERS_INFO, T

pytestmark = pytest.mark.integration


@pytest.fixture
async def server(tmp_path: Path, auth_dir: AuthDir) -> AsyncIterator[EmbeddedNatsServer]:
    # Its own server: a probe must not touch a topology another fixture uses.
    server = EmbeddedNatsServer(
        tmp_path / "probe-nats", port=0, authorization=auth_dir.server_block.read_text()
    )
    await server.start()
    yield server
    await server.stop()


class Probe:
    """A raw client as one role, collecting what the server refuses."""

    def __init__(self) -> None:
        self.refusals: list[str] = []
        self.nc: Client | None = None
        self._refused = asyncio.Event()

    async def connect(self, url: str, auth: AuthDir, role: str) -> Probe:
        creds = auth.credentials(role)

        async def on_error(exc: Exception) -> None:
            if "permissions violation" in str(exc).lower():
                self.refusals.append(str(exc))
                self._refused.set()

        self.nc = await nats.connect(
            url,
            nkeys_seed_str=creds.seed,
            inbox_prefix=creds.inbox_prefix,
            error_cb=on_error,
            max_reconnect_attempts=0,
        )
        return self

    async def refused(self, expected: bool) -> list[str]:
        """What the server refused. The server answers in order, but nats-py hands an
        -ERR to the error callback as a task of its own: a refusal is awaited, and an
        acceptance is a second round trip with none."""
        assert self.nc is not None
        if expected:
            await asyncio.wait_for(self._refused.wait(), 5)
        else:
            await self.nc.flush(timeout=5)
            await self.nc.flush(timeout=5)
        return self.refusals

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


@pytest.mark.parametrize(("role", "subject", "allowed"), PUBLISH)
async def test_the_server_enforces_publish_permissions(
    server: EmbeddedNatsServer, auth_dir: AuthDir, role: str, subject: str, allowed: bool
) -> None:
    probe = await Probe().connect(server.url, auth_dir, role)
    try:
        assert probe.nc is not None
        await probe.nc.publish(subject, b"{}")
        refused = await probe.refused(expected=not allowed)
        if allowed:
            assert refused == [], f"{role} may publish {subject}"
        else:
            assert refused and subject.lower() in refused[0].lower(), f"{role}: {subject}"
    finally:
        await probe.close()


@pytest.mark.parametrize(("role", "subject", "allowed"), SUBSCRIBE)
async def test_the_server_enforces_subscribe_permissions(
    server: EmbeddedNatsServer, auth_dir: AuthDir, role: str, subject: str, allowed: bool
) -> None:
    probe = await Probe().connect(server.url, auth_dir, role)
    try:
        assert probe.nc is not None
        await probe.nc.subscribe(subject)
        refused = await probe.refused(expected=not allowed)
        if allowed:
            assert refused == [], f"{role} may subscribe to {subject}"
        else:
            assert refused and "subscription" in refused[0].lower(), f"{role}: {subject}"
    finally:
        await probe.close()


async def test_an_agent_answers_a_request_once_and_only_the_one_it_received(
    server: EmbeddedNatsServer, auth_dir: AuthDir
) -> None:
    """`allow_responses`: a worker may publish into whichever inbox asked it (here a
    viewer's nats.js-style `_INBOX.`), once; never into an inbox that did not ask."""
    worker = await Probe().connect(server.url, auth_dir, "worker")
    viewer = await Probe().connect(server.url, auth_dir, "viewer")
    try:
        assert worker.nc is not None and viewer.nc is not None
        asked: asyncio.Queue[Any] = asyncio.Queue()

        async def on_request(msg: Any) -> None:
            asked.put_nowait(msg)

        await worker.nc.subscribe(WORKERS_INFO, cb=on_request)
        await worker.nc.flush()
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        answers = await viewer.nc.subscribe(inbox)
        await viewer.nc.publish(WORKERS_INFO, b"", reply=inbox)
        request = await asyncio.wait_for(asked.get(), 5)
        assert request.reply == inbox
        await worker.nc.publish(request.reply, b"first")
        assert (await answers.next_msg(timeout=5)).data == b"first"
        assert await worker.refused(expected=False) == []
        await worker.nc.publish(request.reply, b"second")
        refused = await worker.refused(expected=True)
        assert inbox.lower() in refused[0].lower()
    finally:
        await worker.close()
        await viewer.close()


def test_every_role_is_in_the_tables() -> None:
    assert {r for r, _, _ in PUBLISH} == set(ROLES)


async def test_connecting_without_credentials_or_with_unknown_ones_is_refused(
    server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    with pytest.raises(AuthError, match="refused the credentials"):
        await Bus.connect(server.url, name="anonymous", max_reconnect_attempts=-1)
    stranger = AuthDir(tmp_path / "stranger").ensure().credentials("admin")
    with pytest.raises(AuthError, match="refused the credentials"):
        await Bus.connect(server.url, name="stranger", credentials=stranger)


async def test_a_forged_verdict_is_refused_and_never_stored(
    settings_bus: Bus, auth_dir: AuthDir, server: EmbeddedNatsServer
) -> None:
    """A worker (or anyone but a validator) claiming a gate passed: the server drops it,
    so the event stream, which the planner applies, never holds it."""
    forged = Event(
        id=f"{T}.gate.testing.1", type=EventType.GATE_PASSED, ticket_id=T, data={"phase": "testing"}
    )
    worker = await Bus.connect(
        server.url, name="forger", credentials=auth_dir.credentials("worker"), patience_s=1.0
    )
    try:
        with pytest.raises(Exception):  # noqa: B017,PT011 (refused: no ack ever comes)
            await worker.publish_event(forged)
    finally:
        await worker.close()
    held = await settings_bus.live_subjects(c.EVENTS_STREAM, c.ticket_events_filter(T))
    assert held == {}
    # The validator's verdict is stored.
    validator = await Bus.connect(
        server.url, name="validator", credentials=auth_dir.credentials("validator")
    )
    try:
        await validator.publish_event(forged)
    finally:
        await validator.close()
    held = await settings_bus.live_subjects(c.EVENTS_STREAM, c.ticket_events_filter(T))
    assert held == {VERDICT: 1}


async def test_a_watcher_cannot_take_over_a_durable_consumer(
    settings_bus: Bus, auth_dir: AuthDir, server: EmbeddedNatsServer
) -> None:
    """The bare (ephemeral) create subject a viewer may use admits no durable name, so it
    cannot reconfigure the guardian's consumer through it."""
    before = await settings_bus.admin.consumer_info(c.EVENTS_STREAM, c.GUARDIAN_CONSUMER)
    probe = await Probe().connect(server.url, auth_dir, "viewer")
    try:
        assert probe.nc is not None
        for key in ("durable_name", "name"):
            request = {
                "stream_name": c.EVENTS_STREAM,
                "config": {key: c.GUARDIAN_CONSUMER, "filter_subject": "omoi.events.x.>"},
            }
            reply = await probe.nc.request(
                f"$JS.API.CONSUMER.CREATE.{c.EVENTS_STREAM}", json.dumps(request).encode(), 5
            )
            assert "error" in json.loads(reply.data), key
    finally:
        await probe.close()
    after = await settings_bus.admin.consumer_info(c.EVENTS_STREAM, c.GUARDIAN_CONSUMER)
    assert after.config.filter_subjects == before.config.filter_subjects


def test_credentials_files_must_be_private_and_well_formed(tmp_path: Path) -> None:
    auth = AuthDir(tmp_path / "auth").ensure()
    seed = auth.seed_file("worker")
    assert seed.stat().st_mode & 0o777 == 0o600
    assert auth.path.stat().st_mode & 0o777 == 0o700
    assert load_credentials(seed).role == "worker"
    assert "SU" not in repr(load_credentials(seed))  # the seed never shows in a log line
    seed.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_credentials(seed)
    seed.chmod(0o600)
    (tmp_path / "copied").mkdir()
    bad = tmp_path / "copied" / "viewer.nk"
    bad.write_text("not a seed\n")
    bad.chmod(0o600)
    with pytest.raises(CredentialsError, match="not an nkey user seed"):
        load_credentials(bad)
    with pytest.raises(CredentialsError, match="cannot read"):
        load_credentials(tmp_path / "auth" / "gateway-missing.nk", "gateway")
    with pytest.raises(CredentialsError, match="unknown role"):
        load_credentials(tmp_path / "auth" / "root.nk")
    # Existing identities survive a restart: ensure keeps them.
    before = auth.public_keys()["planner"]
    assert AuthDir(auth.path).ensure().public_keys()["planner"] == before


@pytest.fixture
async def settings_bus(
    server: EmbeddedNatsServer, auth_dir: AuthDir, tmp_path: Path
) -> AsyncIterator[Bus]:
    """The admin's bus on the probe server, with the topology."""
    from bus.topology import TopologyConfig

    bus = await Bus.connect(
        server.url,
        name="test-admin",
        topology=TopologyConfig(),
        credentials=auth_dir.credentials("admin"),
    )
    yield bus
    await bus.close()


async def test_what_the_server_denies_is_audited(tmp_path: Path, auth_dir: AuthDir) -> None:
    """`omoi up` reads its server's log: a denied publish by a known role becomes an
    audit entry. (Refused connections: tests/integration/test_refused_connections.py.)"""
    from bus.audit import AuditTrail
    from bus.server_audit import ServerRefusals
    from bus.topology import TopologyConfig
    from tests.helpers import audit_entries, wait_until

    refusals = ServerRefusals(auth_dir.public_keys())
    server = EmbeddedNatsServer(
        tmp_path / "audited-nats",
        port=0,
        authorization=auth_dir.server_block.read_text(),
        on_log=refusals,
    )
    await server.start()
    admin = await Bus.connect(
        server.url,
        name="admin",
        topology=TopologyConfig(),
        credentials=auth_dir.credentials("admin"),
    )
    refusals.trail = AuditTrail(admin)
    try:
        probe = await Probe().connect(server.url, auth_dir, "worker")
        assert probe.nc is not None
        await probe.nc.publish(VERDICT, b"{}")
        await probe.refused(expected=True)
        await probe.close()

        got = await wait_until(lambda: audit_entries(admin, "auth.denied"), timeout=10)
        denied = got[0]
        assert (denied.actor, denied.target, denied.via) == ("nats:worker", VERDICT, "nats")
        assert denied.source.startswith("127.0.0.1:")
    finally:
        await refusals.trail.flush()
        await admin.close()
        await server.stop()

"""Refused connections are audited wherever they happen: every server of a cluster
announces them in its system account, and the monitor, listening there as `system`,
records each once, even with two monitors listening."""

from __future__ import annotations

from pathlib import Path

import nkeys
import pytest

from agents.monitor.agent import Monitor
from agents.settings import Settings
from bus import AuthError, Bus, TopologyConfig
from bus.auth import AuthDir, Credentials
from bus.cluster import LocalCluster
from bus.server_events import ServerEvents
from schemas.audit import AuditEntry
from tests.helpers import Running, audit_entries, wait_until

pytestmark = pytest.mark.integration


async def test_a_refused_connection_on_any_node_is_audited_once(
    cluster: LocalCluster, auth_dir: AuthDir, tmp_path: Path
) -> None:
    n1, n2, n3 = cluster.nodes
    admin = await Bus.connect(
        cluster.url,
        name="admin",
        topology=TopologyConfig(replicas=3),
        credentials=auth_dir.credentials("admin"),
    )
    settings = Settings(nats_url=n1.url, data_dir=tmp_path / "data", auth_dir=auth_dir.path)
    running = Running()
    connections: list[Bus | ServerEvents] = []
    try:
        # Two monitors, each on its own node, as `monitor` and `system` there.
        for node in (n1, n2):
            bus = await Bus.connect(
                node.url, name="monitor", credentials=auth_dir.credentials("monitor")
            )
            events = await ServerEvents.connect(node.url, auth_dir.credentials("system"))
            connections += [bus, events]
            await running.start(Monitor(bus, settings, server_events=events))

        stranger = nkeys.encode_seed(b"\x01" * 32, nkeys.PREFIX_BYTE_USER).decode()
        stranger_key = nkeys.from_seed(stranger.encode()).public_key.decode()
        # A well-formed identity the cluster does not know (another deployment's, or
        # one rotated away).
        unknown = Credentials(role="worker", seed=stranger, path=tmp_path / "stranger.nk")
        with pytest.raises(AuthError):
            await Bus.connect(n3.url, name="intruder", credentials=unknown)
        with pytest.raises(AuthError):
            await Bus.connect(n2.url, name="anonymous", max_reconnect_attempts=0)

        async def both() -> list[AuditEntry]:
            got = await audit_entries(admin, "auth.failure")
            return got if {e.actor for e in got} >= {f"nkey:{stranger_key}", "anonymous"} else []

        got = await wait_until(both, timeout=15)
        by_actor = {e.actor: e for e in got}
        intruder = by_actor[f"nkey:{stranger_key}"]
        assert (intruder.target, intruder.source, intruder.via) == ("n3", "127.0.0.1", "nats")
        assert intruder.client.startswith("intruder (python3")
        assert by_actor["anonymous"].target == "n2"
        # Both monitors heard each refusal; the stream kept one entry of each.
        await running.stop_all()
        assert len(await audit_entries(admin, "auth.failure")) == 2
    finally:
        await running.stop_all()
        for connection in connections:
            await connection.close()
        await admin.close()

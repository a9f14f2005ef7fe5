"""Provisioning converges an existing deployment instead of failing on it."""

from __future__ import annotations

import pytest

from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from bus.topology import TopologyConfig, provision

pytestmark = pytest.mark.integration


async def heartbeat_ttl(bus: Bus) -> float:
    info = await bus.js.stream_info(f"KV_{c.HEARTBEATS_BUCKET}")
    return float(info.config.max_age or 0)


async def test_agents_with_other_heartbeat_intervals_share_the_bucket(
    nats_server: EmbeddedNatsServer,
) -> None:
    bus = await Bus.connect(nats_server.url, name="t", topology=TopologyConfig(heartbeat_ttl_s=150))
    try:
        # A faster-beating agent must neither fail nor shorten a slower one's entries...
        await provision(bus.js, TopologyConfig(heartbeat_ttl_s=25))
        assert await heartbeat_ttl(bus) == 150
        # ...and a slower one lengthens them, keeping the bucket's other settings.
        await provision(bus.js, TopologyConfig(heartbeat_ttl_s=300))
        assert await heartbeat_ttl(bus) == 300
        info = await bus.js.stream_info(f"KV_{c.HEARTBEATS_BUCKET}")
        assert info.config.deny_delete is True
        # Running it again changes nothing.
        await provision(bus.js, TopologyConfig(heartbeat_ttl_s=300))
        assert await heartbeat_ttl(bus) == 300
    finally:
        await bus.close()

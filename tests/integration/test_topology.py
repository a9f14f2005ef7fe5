"""Provisioning converges an existing deployment instead of failing on it."""

from __future__ import annotations

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from bus.auth import Credentials
from bus.topology import TopologyConfig, provision
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


async def heartbeat_ttl(bus: Bus) -> float:
    info = await bus.js.stream_info(f"KV_{c.HEARTBEATS_BUCKET}")
    return float(info.config.max_age or 0)


async def test_agents_with_other_heartbeat_intervals_share_the_bucket(
    nats_server: EmbeddedNatsServer, admin: Credentials
) -> None:
    bus = await Bus.connect(
        nats_server.url, name="t", topology=TopologyConfig(heartbeat_ttl_s=150), credentials=admin
    )
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


async def test_a_consumer_whose_ack_policy_changed_resumes_after_its_ack_floor(
    nats_server: EmbeddedNatsServer, admin: Credentials
) -> None:
    """An older deployment's recorder consumer acked each message; the current one acks a
    batch at once. Provisioning recreates it where the old one stood, and only once."""
    bus = await Bus.connect(nats_server.url, name="t", topology=TopologyConfig(), credentials=admin)
    try:
        await bus.js.delete_consumer(c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER)
        await bus.js.add_consumer(
            c.EVENTS_STREAM,
            ConsumerConfig(
                durable_name=c.RECORDER_EVENTS_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
        for i in range(5):
            await bus.js.publish(f"omoi.events.t{i}.task.queued", b"{}")
        old = await bus.js.pull_subscribe_bind(c.RECORDER_EVENTS_CONSUMER, c.EVENTS_STREAM)
        for msg in await old.fetch(3, timeout=5):
            await msg.ack_sync()
        await old.unsubscribe()

        await provision(bus.js, TopologyConfig())
        info = await bus.js.consumer_info(c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER)
        assert info.config.ack_policy == AckPolicy.ALL
        assert info.config.opt_start_seq == 4
        assert info.num_pending == 2  # the two never acked; none of the three that were
        created = info.created

        await provision(bus.js, TopologyConfig())
        again = await bus.js.consumer_info(c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER)
        assert again.created == created
        assert again.config.ack_policy == AckPolicy.ALL
    finally:
        await bus.close()


async def test_an_upgrade_copies_only_new_outcomes_to_the_planners_and_retires_the_old_consumer(
    nats_server: EmbeddedNatsServer, admin: Credentials
) -> None:
    """A deployment from before sharded planners has a week of outcomes in OMOI_EVENTS and
    one `planner-events` consumer on it. Provisioning copies only outcomes from then on
    into OMOI_PLANNER (the old ones were the old consumer's), keeps that start when run
    again, and deletes the old consumer."""
    bus = await Bus.connect(nats_server.url, name="t", topology=TopologyConfig(), credentials=admin)
    try:
        await bus.js.delete_stream(c.PLANNER_STREAM)
        await bus.js.add_consumer(
            c.EVENTS_STREAM,
            ConsumerConfig(durable_name="planner-events", ack_policy=AckPolicy.EXPLICIT),
        )
        for i in range(5):
            await bus.js.publish(f"omoi.events.old{i}.task.succeeded", b"{}")
        await provision(bus.js, TopologyConfig())
        await bus.js.publish("omoi.events.new.task.succeeded", b"{}")
        await provision(bus.js, TopologyConfig())  # again: nothing moves

        info = await bus.js.stream_info(c.PLANNER_STREAM)
        sources = info.config.sources or []
        assert [s.opt_start_seq for s in sources] == [6]

        async def copied() -> dict[str, int]:
            return await bus.live_subjects(c.PLANNER_STREAM, ">")

        async def any_copied() -> bool:
            return bool(await copied())

        await wait_until(any_copied)
        partition = c.planner_partition("new")
        assert await copied() == {f"omoi.planner.{partition}.new.task.succeeded": 1}
        consumers = await bus.js.consumers_info(c.EVENTS_STREAM)
        assert "planner-events" not in {x.name for x in consumers}
    finally:
        await bus.close()

"""Faults of a 3-node JetStream cluster under load, with agents as real processes.

Three nats-server processes are clustered on loopback (ephemeral ports), every stream
and bucket has three replicas, and two planners (sharing the tickets' partitions) and two
workers run as processes against all three URLs. The load is tickets of three chained
shell tasks, each appending its name to one file, so every run of every task is counted.
Each test kills part of the cluster mid-load and ends with every ticket done, every task
run exactly once, nothing left queued or running, and the returned node caught up.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats.errors
import pytest

from agents.settings import Settings
from bus import Bus
from bus import constants as c
from bus.auth import AuthDir, Credentials
from bus.cluster import LocalCluster
from tests.conftest import agent_env
from tests.helpers import AgentProcess, stop_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TICKETS = 40
TASKS = ("a", "b", "c")
STREAMS = (
    c.INTAKE_STREAM,
    c.TASKS_STREAM,
    c.GATES_STREAM,
    c.EVENTS_STREAM,
    c.DLQ_STREAM,
    *(c.kv_stream(b) for b in (c.TICKETS_BUCKET, c.TASKS_BUCKET, c.HEARTBEATS_BUCKET)),
)


@pytest.fixture
def cluster_settings(tmp_path: Path, cluster: LocalCluster, auth_dir: AuthDir) -> Settings:
    # Fast heartbeats and sweeps; the production ack wait, so that riding out an election
    # never needs a redelivery.
    return Settings(
        nats_url=cluster.url,
        data_dir=tmp_path / "data",
        auth_dir=auth_dir.path,
        replicas=3,
        heartbeat_interval_s=0.5,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        ack_wait_s=30.0,
        shutdown_grace_s=2.0,
        reconcile_interval_s=1.0,
        lost_message_after_s=3.0,
        fetch_poll_s=0.25,
    )


@pytest.fixture
async def cluster_bus(cluster_settings: Settings, admin: Credentials) -> AsyncIterator[Bus]:
    assert cluster_settings.nats_url
    bus = await Bus.connect(
        cluster_settings.nats_url,
        name="test",
        topology=cluster_settings.topology(),
        credentials=admin,
    )
    yield bus
    await bus.close()


class Load:
    """Tickets of three chained tasks, each appending `<ticket>.<task>` to `runs`."""

    def __init__(self, bus: Bus, runs: Path) -> None:
        self.bus = bus
        self.runs = runs
        self.ids = [f"cl{i:03d}" for i in range(TICKETS)]

    def ticket(self, ticket_id: str) -> dict[str, object]:
        record = f"echo $OMOI_TICKET_ID.$OMOI_TASK >> {self.runs}"
        tasks = [
            {"name": name, "phase": "implementation", "command": record}
            | ({"depends_on": [TASKS[i - 1]]} if i else {})
            for i, name in enumerate(TASKS)
        ]
        return {"id": ticket_id, "title": f"load {ticket_id}", "tasks": tasks}

    async def submit(self) -> None:
        # A core publish is captured by the intake stream: durable without a planner reply.
        for ticket_id in self.ids:
            await self.bus.notify(
                c.TRUSTED_SUBMIT_SUBJECT, json.dumps(self.ticket(ticket_id)).encode()
            )

    async def done(self) -> int:
        found = await asyncio.gather(*(self.bus.tickets.read(t) for t in self.ids))
        return sum(1 for f in found if f is not None and f.value.status == "done")

    async def wait_done(self, at_least: int, timeout: float = 120.0) -> None:
        async def reached() -> bool:
            return await self.done() >= at_least

        await wait_until(reached, timeout=timeout, interval=0.2)

    def counted(self) -> Counter[str]:
        return Counter(self.runs.read_text().split()) if self.runs.exists() else Counter()


@pytest.fixture
async def agents(
    cluster_settings: Settings, cluster_bus: Bus, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    made: list[AgentProcess] = []
    env = agent_env(cluster_settings)

    async def start() -> None:
        for role, agent_id in (
            ("planner", "planner-1"),
            ("planner", "planner-2"),
            ("worker", "worker-1"),
            ("worker", "worker-2"),
        ):
            proc = AgentProcess(role, agent_id, env, tmp_path / f"{agent_id}.log")
            made.append(await proc.start(cluster_bus))

    yield start
    await stop_all(made)


async def stream_leader(bus: Bus, stream: str) -> str:
    info = await bus.admin.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


async def caught_up(bus: Bus) -> bool:
    """Every replica of every stream is online and current."""
    for stream in STREAMS:
        try:
            info = await bus.admin.stream_info(stream)
        except nats.errors.Error:
            return False  # a node still busy catching up may not answer in time
        replicas = (info.cluster.replicas or []) if info.cluster else []
        if len(replicas) != 2 or not all(r.current and not r.offline for r in replicas):
            return False
    return True


async def finish_and_check(load: Load, bus: Bus) -> None:
    await load.wait_done(TICKETS)
    counted = load.counted()
    expected = {f"{t}.{name}" for t in load.ids for name in TASKS}
    assert set(counted) == expected, f"missing runs: {sorted(expected - set(counted))[:10]}"
    twice = {run: n for run, n in counted.items() if n > 1}
    assert not twice, f"tasks that ran more than once: {twice}"
    for ticket_id in load.ids:
        for name in TASKS:
            task = await bus.tasks.value(f"{ticket_id}.{name}")
            assert task is not None and task.status == "succeeded", (ticket_id, name, task)
            assert task.attempts == 1, (ticket_id, name, task.errors)
    await wait_until(lambda: caught_up(bus), timeout=60, interval=0.25)
    await wait_until(lambda: copied_once(bus), timeout=30, interval=0.25)


async def copied_once(bus: Bus) -> bool:
    """The planners' copy holds each outcome once: none skipped, none copied again after a
    leader change."""
    outcomes = 0
    for kind in c.PLANNER_EVENT_FILTERS:
        outcomes += sum((await bus.live_subjects(c.EVENTS_STREAM, kind)).values())
    info = await bus.admin.stream_info(c.PLANNER_STREAM)
    return bool(outcomes) and info.state.messages == outcomes


async def kill_task_stream_leader(cluster: LocalCluster, bus: Bus) -> str:
    leader = await stream_leader(bus, c.TASKS_STREAM)
    await cluster.kill(leader)
    return leader


async def kill_planner_stream_leader(cluster: LocalCluster, bus: Bus) -> str:
    # The node leading the planners' copy of the outcomes: the next leader must go on
    # copying from where this one stopped, neither skipping outcomes nor copying them all.
    leader = await stream_leader(bus, c.PLANNER_STREAM)
    await cluster.kill(leader)
    return leader


async def kill_meta_leader(cluster: LocalCluster, bus: Bus) -> str:
    leader = await cluster.meta_leader()
    assert leader is not None
    await cluster.kill(leader)
    return leader


async def wipe_task_state_leader(cluster: LocalCluster, bus: Bus) -> str:
    # The node leading the task state: its disk, and with it its copy of every stream, is gone.
    victim = await stream_leader(bus, c.kv_stream(c.TASKS_BUCKET))
    await cluster.kill(victim, wipe=True)
    return victim


@pytest.mark.parametrize(
    "fault",
    [kill_task_stream_leader, kill_planner_stream_leader, kill_meta_leader, wipe_task_state_leader],
    ids=["task-stream-leader", "planner-stream-leader", "meta-leader", "node-with-empty-disk"],
)
async def test_losing_a_node_under_load_strands_nothing(
    cluster: LocalCluster,
    cluster_bus: Bus,
    agents: Callable[[], Awaitable[None]],
    tmp_path: Path,
    fault: Callable[[LocalCluster, Bus], Awaitable[str]],
) -> None:
    await agents()
    load = Load(cluster_bus, tmp_path / "runs.log")
    await load.submit()
    await load.wait_done(TICKETS // 4)
    lost = await fault(cluster, cluster_bus)
    await load.wait_done(TICKETS // 2)
    await cluster.restart(lost)
    await finish_and_check(load, cluster_bus)

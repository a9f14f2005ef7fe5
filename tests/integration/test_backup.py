"""`omoi backup` of a running system, `omoi restore` into an empty server, and agents that
carry on there: the same tickets, tasks and events, and in-flight work finishes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agents.executors import ShellExecutor
from agents.planner.agent import Planner
from agents.settings import Settings
from agents.worker.agent import Worker
from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from bus.auth import AuthDir
from bus.backup import Snapshots
from cli.backup import restore_backup, take_backup
from cli.backup_files import read_verified
from schemas import ErrorCategory, TaskState, TicketState, TicketStatus
from tests.conftest import ALL_PHASES
from tests.helpers import EventLog, Running, gated, read_pid, stream_holds, submit, wait_until
from tests.integration.backup_support import kv_entries, omoi, omoi_streams, stream_position

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
STATE_BUCKETS = (c.TICKETS_BUCKET, c.TASKS_BUCKET)


@asynccontextmanager
async def restored_system(
    tmp_path: Path, settings: Settings, running: Running, name: str
) -> AsyncIterator[tuple[EmbeddedNatsServer, Settings]]:
    """A second, empty server, and settings for agents on it with their own data dir."""
    # The same identities as the source: a restore moves data, not credentials.
    server = EmbeddedNatsServer(
        tmp_path / f"nats-{name}",
        port=0,
        authorization=AuthDir(settings.auth_path).server_block.read_text(),
    )
    await server.start()
    try:
        yield (
            server,
            settings.model_copy(
                update={"nats_url": server.url, "data_dir": tmp_path / f"data-{name}"}
            ),
        )
    finally:
        # Agents may run on it: they stop (every agent may be stopped twice) before it does.
        await running.stop_all()
        await server.stop()


async def start_agents(bus: Bus, settings: Settings, running: Running, workers: int = 1) -> Worker:
    await running.start(Planner(bus, settings))
    worker = None
    for _ in range(workers):
        worker = Worker(
            bus, settings, phases=ALL_PHASES, capabilities=("shell",),
            executors={"shell": ShellExecutor(dict(os.environ), settings)},
        )  # fmt: skip
        await running.start(worker)
    assert worker is not None
    return worker


async def test_backup_of_a_running_system_restores_it_and_in_flight_work_finishes(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    running: Running,
    start_planner: Start,
    start_worker: Start,
    tmp_path: Path,
) -> None:
    await start_planner()
    await start_worker()
    finished = [
        {"name": "spec", "phase": "requirements", "command": "echo spec > SPEC.md"},
        {"name": "check", "phase": "testing", "command": "true"},
    ]
    assert (await submit(bus, {"id": "done-1", "title": "before", "tasks": finished}))["ok"]
    await events.wait_type("done-1", "ticket.done")
    assert not (await submit(bus, {"title": ""}))["ok"]  # a rejection: a dead letter
    await wait_until(lambda: stream_holds(bus, c.DLQ_STREAM, 1))
    # A git workspace: its bundle in `omoi_workspaces` carries `prep`'s work to the
    # restored system's worker, which has a data dir of its own.
    origin = origin_repository(tmp_path / "origin")
    in_flight = [
        {"name": "prep", "phase": "requirements", "command": "echo prep > prep.txt"},
        {"name": "work", "phase": "implementation", "command": gated("work")},
        {"name": "after", "phase": "testing", "command": "test -f prep.txt"},
    ]
    busy = {"id": "busy", "title": "in flight", "tasks": in_flight, "repository": str(origin)}
    busy["deliver"] = False  # its result stays in Omoi: no delivery agent runs here
    assert (await submit(bus, busy))["ok"]
    await events.wait_type("busy", "task.started", task="work")
    await read_pid(settings.workspaces_dir / "busy" / "work.pid")

    backup = tmp_path / "backup"
    assert settings.nats_url
    code, out, err = await omoi(settings.nats_url, "backup", str(backup))
    assert code == 0, err
    assert "backup complete" in out
    manifest = json.loads((backup / "manifest.json").read_text())
    backed_up = {s["name"] for s in manifest["streams"]}
    assert backed_up == {
        c.INTAKE_STREAM, c.TASKS_STREAM, c.GATES_STREAM, c.DELIVERIES_STREAM, c.EVENTS_STREAM,
        c.PLANNER_STREAM, c.DLQ_STREAM, c.AUDIT_STREAM, c.LOGS_STREAM, c.SPANS_STREAM,
        *(c.kv_stream(b) for b in (c.TICKETS_BUCKET, c.TASKS_BUCKET, c.HEARTBEATS_BUCKET,
                                   c.LOCKS_BUCKET, c.TOKENS_BUCKET, c.INTERVENTIONS_BUCKET,
                                   c.QUARANTINE_BUCKET, c.PARTITIONS_BUCKET)),
        c.obj_stream(c.WORKSPACES_BUCKET),
    }  # fmt: skip
    assert manifest["server_version"] and manifest["omoi_version"]
    # The source is quiet now (the gated task holds the ticket): this is what was backed up.
    source_kv = {b: await kv_entries(bus, b) for b in STATE_BUCKETS}
    event_count = next(s["messages"] for s in manifest["streams"] if s["name"] == c.EVENTS_STREAM)
    await wait_until(lambda: _holds(events, event_count))
    source_events = [e.id for e in events.events]
    source_streams = await omoi_streams(settings.nats_url)
    assert source_streams[c.EVENTS_STREAM]["state"]["messages"] == event_count

    async with restored_system(tmp_path, settings, running, "restored") as (server, s2):
        code, out, err = await omoi(server.url, "restore", str(backup))
        assert code == 0, err
        assert "restore complete" in out
        bus2 = await Bus.connect(
            server.url, name="test-restored", credentials=settings.credentials("admin")
        )
        try:
            assert {b: await kv_entries(bus2, b) for b in STATE_BUCKETS} == source_kv
            log2 = await EventLog(bus2).start()
            await wait_until(lambda: _holds(log2, event_count))
            assert [e.id for e in log2.events] == source_events
            restored = await omoi_streams(server.url)
            for entry in manifest["streams"]:
                want = stream_position(entry)
                got = restored[entry["name"]]["state"]
                if entry["name"] in (
                    c.kv_stream(c.HEARTBEATS_BUCKET),
                    c.kv_stream(c.PARTITIONS_BUCKET),
                ):
                    # Beats and partition leases go on at the source, and restored ones age
                    # out with the bucket's TTL: the sequence is kept, entries may be gone.
                    assert got["last_seq"] == want["last_seq"]
                    assert got["messages"] <= want["messages"]
                    continue
                assert got == want, entry["name"]
                assert want == source_streams[entry["name"]]["state"], entry["name"]
            for name in (c.INTAKE_STREAM, c.TASKS_STREAM, c.GATES_STREAM):
                # Work queues: what each consumer has still to deliver or to see acked is
                # all there, no more and no less. (nats-server 2.15 keeps ack floors, not
                # always the pending deliveries: those come back as new deliveries.)
                assert _outstanding(restored[name]) == _outstanding(source_streams[name]), name
            durable = c.task_consumer("implementation", "shell")
            assert _outstanding(restored[c.TASKS_STREAM])[durable] == 1  # the running task
            for planner in c.PLANNER_EVENTS_CONSUMERS:
                assert (
                    restored[c.PLANNER_STREAM]["consumers"][planner]["ack_floor"]
                    == source_streams[c.PLANNER_STREAM]["consumers"][planner]["ack_floor"]
                ), planner
            # The recorder starts over so a new analytics store gets every event.
            recorder = restored[c.EVENTS_STREAM]["consumers"][c.RECORDER_EVENTS_CONSUMER]
            assert recorder["ack_floor"] == 0 and recorder["pending"] == len(source_events)

            worker = await start_agents(bus2, s2, running)
            rerun = await log2.wait(
                lambda e: e.type == "task.started" and e.task == "work" and e.agent == worker.id
            )
            assert rerun.ticket_id == "busy" and rerun.data["attempt"] == 2
            workspace = s2.workspaces_dir / "busy"
            await read_pid(workspace / "work.pid")
            (workspace / "release").touch()
            await log2.wait_type("busy", "ticket.done", timeout=30)
            task = await bus2.tasks.value("busy.work")
            assert task is not None and task.status == "succeeded" and task.attempts == 2
            # The restored workspace went on from `prep`'s commit, restored with the rest.
            assert (workspace / "prep.txt").read_text() == "prep\n"
            assert task.errors[0].category == ErrorCategory.WORKER_LOST
            done = await bus2.tickets.value("done-1")
            assert done is not None and done.status is TicketStatus.DONE
            # The finished ticket is not run again.
            assert len(log2.of("done-1", "task.started")) == len(
                events.of("done-1", "task.started")
            )
            await log2.stop()
        finally:
            await running.stop_all()
            await bus2.close()


def origin_repository(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
         "-m", "origin"], cwd=path, check=True,
    )  # fmt: skip
    return path


def _outstanding(stream: dict[str, Any]) -> dict[str, int]:
    """Per consumer, the messages not yet delivered plus those delivered and not acked."""
    return {n: at["pending"] + at["ack_pending"] for n, at in stream["consumers"].items()}


async def _holds(log: EventLog, n: int) -> bool:
    return len(log.events) == n


async def test_backup_while_tickets_are_processed_is_consistent(
    bus: Bus, settings: Settings, running: Running, start_planner: Start, start_worker: Start,
    tmp_path: Path,
) -> None:  # fmt: skip
    await start_planner()
    await start_worker()
    await start_worker()
    tasks = [
        {"name": "a", "phase": "requirements", "command": "sleep 0.02"},
        {"name": "b", "phase": "implementation", "command": "sleep 0.02"},
        {"name": "c", "phase": "testing", "command": "sleep 0.02"},
    ]
    submitted = [f"load-{i}" for i in range(24)]
    for ticket_id in submitted:
        payload = {"id": ticket_id, "title": ticket_id, "tasks": tasks}
        await bus.nc.publish(c.TRUSTED_SUBMIT_SUBJECT, json.dumps(payload).encode())
    await wait_until(lambda: _done_count(bus, submitted, 4))

    assert settings.nats_url
    backup = tmp_path / "backup"
    snapshots = await Snapshots.connect(
        settings.nats_url, name="test-backup", credentials=settings.credentials("admin")
    )
    try:
        manifest = await take_backup(snapshots, backup)
    finally:
        await snapshots.close()
    assert read_verified(backup) == manifest
    await running.stop_all()  # the source has done its part

    async with restored_system(tmp_path, settings, running, "restored") as (server, s2):
        target = await Snapshots.connect(
            server.url, name="test-restore", credentials=settings.credentials("admin")
        )
        try:
            await restore_backup(target, backup, manifest, force=False)
        finally:
            await target.close()
        restored = await omoi_streams(server.url)
        for entry in manifest.streams:
            # Each snapshot holds exactly the state the server announced when it began.
            want = stream_position(entry.model_dump())
            assert restored[entry.name]["state"] == want, entry.name
            for consumer, at in restored[entry.name]["consumers"].items():
                assert at["ack_floor"] <= at["delivered"] <= entry.last_seq, (entry.name, consumer)

        bus2 = await Bus.connect(
            server.url, name="test-restored", credentials=settings.credentials("admin")
        )
        try:
            tickets = await bus2.tickets.values()
            unfinished = [t.id for t in tickets if not t.status.terminal]
            assert unfinished, "the backup should have caught tickets in progress"
            for ticket in tickets:  # tickets are taken before tasks: each one's tasks exist
                for name in ticket.tasks:
                    assert isinstance(await bus2.tasks.value(f"{ticket.id}.{name}"), TaskState)
            await start_agents(bus2, s2, running, workers=2)
            # Done when every restored ticket, and every submission still in the intake
            # stream, has finished.
            finals = await wait_until(lambda: _all_done(bus2, len(tickets)), timeout=45)
            assert {t.status for t in finals} == {TicketStatus.DONE}
            assert {t.id for t in tickets} <= {t.id for t in finals}
        finally:
            await running.stop_all()
            await bus2.close()


async def _done_count(bus: Bus, ids: list[str], at_least: int) -> bool:
    done = 0
    for ticket_id in ids:
        t = await bus.tickets.value(ticket_id)
        done += t is not None and t.status.terminal
    return done >= at_least


async def _all_done(bus: Bus, at_least: int) -> list[TicketState] | None:
    if not await stream_holds(bus, c.INTAKE_STREAM, 0):
        return None
    # From the server: the planner's mirror (on the same Bus) drops finished tickets.
    stored = await kv_entries(bus, c.TICKETS_BUCKET)
    tickets = [TicketState.model_validate_json(value) for _, value in stored.values()]
    if len(tickets) >= at_least and all(t.status.terminal for t in tickets):
        return tickets
    return None

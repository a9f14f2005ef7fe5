"""`--data-dir`: backup and restore on the store of an `omoi up` data directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from cli.up import STATE_FILE
from tests.integration.backup_support import omoi, omoi_streams

pytestmark = pytest.mark.integration


async def test_restore_into_a_data_dir_then_its_server_has_the_data(
    bus: Bus, nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    await bus.js.publish(c.event_subject("t1", "ticket.created"), b"{}")
    backup = tmp_path / "backup"
    assert (await omoi(nats_server.url, "backup", str(backup)))[0] == 0
    source = await omoi_streams(nats_server.url)

    data_dir = tmp_path / "fresh"
    # NATS_URL points at the source: --data-dir wins, so the source is not touched.
    code, out, err = await omoi(
        nats_server.url, "restore", str(backup), "--data-dir", str(data_dir)
    )
    assert code == 0, err
    assert "restore complete" in out
    assert await omoi_streams(nats_server.url) == source

    # The server `omoi up --data-dir fresh` starts holds the restored streams.
    server = EmbeddedNatsServer(data_dir / "nats", port=0)
    await server.start()
    try:
        restored = await omoi_streams(server.url)
    finally:
        await server.stop()
    assert restored[c.EVENTS_STREAM]["state"] == source[c.EVENTS_STREAM]["state"]
    assert set(restored) == set(source)

    # Backed up again from the store, with no server running.
    code, _, err = await omoi(
        nats_server.url, "backup", str(tmp_path / "again"), "--data-dir", str(data_dir)
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert {s["name"] for s in manifest["streams"]} == set(source)


async def test_while_omoi_up_runs_restore_is_refused_and_backup_uses_its_server(
    bus: Bus, nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "running"
    data_dir.mkdir()
    # What `omoi up` leaves while it runs: its pid (alive: ours) and its server's address.
    state = {"pid": os.getpid(), "nats_url": nats_server.url}
    (data_dir / STATE_FILE).write_text(json.dumps(state))
    backup = tmp_path / "backup"
    code, _, err = await omoi(
        "nats://127.0.0.1:1", "backup", str(backup), "--data-dir", str(data_dir)
    )
    assert code == 0, err
    before = await omoi_streams(nats_server.url)

    code, _, err = await omoi(nats_server.url, "restore", str(backup), "--data-dir", str(data_dir))
    assert code == 1
    assert "omoi up is running on" in err and "stop it before restoring" in " ".join(err.split())
    assert await omoi_streams(nats_server.url) == before
    assert not (data_dir / "nats").exists()

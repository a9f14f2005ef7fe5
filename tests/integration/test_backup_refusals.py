"""Bad input to `omoi backup` and `omoi restore`: refused with a clear message and exit
code 1, before anything changes."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bus import Bus, EmbeddedNatsServer
from bus import constants as c
from cli.backup_files import file_sha256
from tests.integration.backup_support import omoi, omoi_streams

pytestmark = pytest.mark.integration


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    """An empty server to restore into."""
    server = EmbeddedNatsServer(tmp_path / "target", port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def backup(bus: Bus, nats_server: EmbeddedNatsServer, tmp_path: Path) -> Path:
    """A good backup of a provisioned server holding an event and a ticket."""
    await bus.js.publish(c.event_subject("t1", "ticket.created"), b"{}")
    kv = await bus.js.key_value(c.TICKETS_BUCKET)
    await kv.put("t1", b'{"id": "t1"}')
    directory = tmp_path / "backup"
    code, _, err = await omoi(nats_server.url, "backup", str(directory))
    assert code == 0, err
    return directory


def _remove_manifest(d: Path) -> None:
    (d / "manifest.json").unlink()


def _manifest_left_as_temp(d: Path) -> None:
    (d / "manifest.json").rename(d / "manifest.json.tmp")


def _corrupt_manifest(d: Path) -> None:
    (d / "manifest.json").write_text('{"format": "omoi-backup", "streams": [')


def _remove_file(d: Path) -> None:
    (d / f"{c.TASKS_STREAM}.tar.s2").unlink()


def _truncate(d: Path) -> None:
    path = d / f"{c.EVENTS_STREAM}.tar.s2"
    path.write_bytes(path.read_bytes()[:-10])


def _flip_a_byte(d: Path) -> None:
    path = d / f"{c.EVENTS_STREAM}.tar.s2"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _empty(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


def _name_unknown_stream(d: Path) -> None:
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["streams"][0]["name"] = "SOMEONE_ELSES"
    (d / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(
            _remove_manifest,
            "has no manifest.json: the backup did not finish",
            id="remove_manifest",
        ),
        pytest.param(
            _manifest_left_as_temp,
            "has no manifest.json: the backup did not finish",
            id="manifest_left_as_temp",
        ),
        pytest.param(_empty, "has no manifest.json: not an Omoi backup", id="empty"),
        pytest.param(_corrupt_manifest, "manifest.json is corrupt", id="corrupt_manifest"),
        pytest.param(
            _remove_file,
            f"{c.TASKS_STREAM}.tar.s2 (stream {c.TASKS_STREAM}) is missing",
            id="remove_file",
        ),
        pytest.param(_truncate, f"{c.EVENTS_STREAM}.tar.s2 is truncated", id="truncate"),
        pytest.param(
            _flip_a_byte,
            f"{c.EVENTS_STREAM}.tar.s2 is corrupt: its SHA-256 does not match",
            id="flip_a_byte",
        ),
        pytest.param(
            _name_unknown_stream, "not an Omoi stream: 'SOMEONE_ELSES'", id="name_unknown_stream"
        ),
    ],
)
async def test_a_damaged_backup_is_refused_and_the_server_is_untouched(
    backup: Path, target: EmbeddedNatsServer, damage: Callable[[Path], None], message: str
) -> None:
    damage(backup)
    code, _, err = await omoi(target.url, "restore", str(backup))
    assert code == 1
    assert message in " ".join(err.split()), err
    assert await omoi_streams(target.url) == {}


async def test_a_missing_backup_directory_is_refused(
    target: EmbeddedNatsServer, tmp_path: Path
) -> None:
    code, _, err = await omoi(target.url, "restore", str(tmp_path / "nowhere"))
    assert code == 1
    assert "no such directory" in err
    assert await omoi_streams(target.url) == {}


async def test_a_server_with_omoi_data_is_refused_and_replaced_with_force(
    bus: Bus, nats_server: EmbeddedNatsServer, backup: Path
) -> None:
    # The server moves on after the backup: one more event, and a ticket changed.
    await bus.js.publish(c.event_subject("t1", "ticket.done"), b"{}")
    kv = await bus.js.key_value(c.TICKETS_BUCKET)
    await kv.put("t1", b'{"id": "t1", "later": true}')
    before = await omoi_streams(nats_server.url)

    code, _, err = await omoi(nats_server.url, "restore", str(backup))
    assert code == 1
    assert "already holds Omoi data" in err and "--force" in err
    assert await omoi_streams(nats_server.url) == before

    code, out, err = await omoi(nats_server.url, "restore", "--force", "--json", str(backup))
    assert code == 0, err
    rows = {row["stream"]: row for row in json.loads(out)["streams"]}
    assert rows[c.EVENTS_STREAM]["messages"] == rows[c.EVENTS_STREAM]["backed_up_messages"] == 1
    after = await omoi_streams(nats_server.url)
    assert after[c.EVENTS_STREAM]["state"]["messages"] == 1
    kv = await bus.js.key_value(c.TICKETS_BUCKET)
    entry = await kv.get("t1")
    assert entry.value == b'{"id": "t1"}'


async def test_an_unreachable_server_is_reported(backup: Path, tmp_path: Path) -> None:
    gone = EmbeddedNatsServer(tmp_path / "gone", port=0)
    await gone.start()
    url = gone.url
    await gone.stop()
    code, _, err = await omoi(url, "restore", str(backup))
    assert code == 1
    assert "cannot reach NATS" in err


async def test_backup_refuses_a_directory_that_is_not_empty(
    nats_server: EmbeddedNatsServer, bus: Bus, tmp_path: Path
) -> None:
    directory = tmp_path / "used"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    code, _, err = await omoi(nats_server.url, "backup", str(directory))
    assert code == 1
    assert "is not empty" in err
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]


async def test_backup_of_a_server_without_omoi_data_is_refused(
    target: EmbeddedNatsServer, tmp_path: Path
) -> None:
    code, _, err = await omoi(target.url, "backup", str(tmp_path / "b"))
    assert code == 1
    assert "holds no Omoi streams" in err
    assert not (tmp_path / "b").exists()


async def test_a_restore_the_server_rejects_midway_is_rolled_back(
    backup: Path, target: EmbeddedNatsServer
) -> None:
    # A snapshot that matches its manifest but is not a snapshot: only the server finds out,
    # after the streams before it were restored.
    bogus = backup / f"{c.EVENTS_STREAM}.tar.s2"
    bogus.write_bytes(b"not an s2 stream " * 100)
    manifest = json.loads((backup / "manifest.json").read_text())
    for entry in manifest["streams"]:
        if entry["name"] == c.EVENTS_STREAM:
            entry["size"] = bogus.stat().st_size
            entry["sha256"] = file_sha256(bogus)
    (backup / "manifest.json").write_text(json.dumps(manifest))

    code, _, err = await omoi(target.url, "restore", str(backup))
    assert code == 1
    said = " ".join(err.split())
    assert f"restore of {c.EVENTS_STREAM} failed" in said, err
    assert "were removed again" in said
    assert await omoi_streams(target.url) == {}

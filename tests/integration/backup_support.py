"""What the backup tests share: the CLI as a user runs it, and a server's Omoi data."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from agents.settings import Settings
from bus import Bus
from bus.backup import Snapshots, is_omoi_stream
from bus.constants import kv_stream
from bus.state import stream_subjects

OMOI = str(Path(sys.executable).parent / "omoi")


async def omoi(url: str, *args: str) -> tuple[int, str, str]:
    """Run `omoi ARGS` against `url`; its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        OMOI, *args,
        env={**os.environ, "NATS_URL": url, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def omoi_streams(url: str) -> dict[str, dict[str, Any]]:
    """Every Omoi stream on the server: its state and its consumers' positions."""
    # As the admin of the test's identities (OMOI_AUTH_DIR), if the server has auth on.
    credentials = Settings.from_env(os.environ).credentials("admin")
    snapshots = await Snapshots.connect(url, name="test-inspect", credentials=credentials)
    try:
        found = {}
        for info in await snapshots.streams():
            name = info["config"]["name"]
            if not is_omoi_stream(name):
                continue
            page = await snapshots.api(f"CONSUMER.LIST.{name}", {})
            found[name] = {
                "state": stream_position(info["state"]),
                "consumers": {c["name"]: consumer_position(c) for c in page.get("consumers") or []},
            }
        return found
    finally:
        await snapshots.close()


def stream_position(state: dict[str, Any]) -> dict[str, int | None]:
    """Messages, first and last sequence; an empty stream has no first (servers report 0
    for one never written to, and last + 1 for one emptied or restored)."""
    messages = int(state["messages"])
    return {
        "messages": messages,
        "first_seq": int(state["first_seq"]) if messages else None,
        "last_seq": int(state["last_seq"]),
    }


def consumer_position(info: dict[str, Any]) -> dict[str, int]:
    return {
        "delivered": info["delivered"]["stream_seq"],
        "ack_floor": info["ack_floor"]["stream_seq"],
        "ack_pending": info["num_ack_pending"],
        "pending": info["num_pending"],
    }


async def kv_entries(bus: Bus, bucket: str) -> dict[str, tuple[int, bytes]]:
    """Every key of a bucket with its revision and stored bytes.

    Listed from the stream's subject index, as the product lists keys: nats-py's
    `kv.keys()` can call an unfinished listing complete, and came back empty here once.
    """
    kv = await bus.js.key_value(bucket)
    prefix = f"$KV.{bucket}."
    subjects = await stream_subjects(bus.js, kv_stream(bucket), f"{prefix}>")
    found = {}
    for subject in subjects:
        entry = await kv.get(subject[len(prefix) :])
        assert entry.value is not None
        found[entry.key] = (entry.revision or 0, bytes(entry.value))
    return found

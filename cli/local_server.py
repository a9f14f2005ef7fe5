"""The bundled nats-server of a data directory, for commands that run without `omoi up`.

`omoi up` (without NATS_URL) keeps its JetStream store under `<data-dir>/nats`. Backup and
restore can work on that store directly: a private server is started on it, on a free port,
and stopped afterwards. While `omoi up` runs, its server owns the store, and the address it
left in `omoi-up.json` is used instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bus import EmbeddedNatsServer
from bus.auth import AuthDir
from cli.up import STATE_FILE


def running_up(data_dir: Path) -> tuple[int, str] | None:
    """The pid and NATS URL of the `omoi up` running on `data_dir`, if one is."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        pid, url = int(state["pid"]), str(state["nats_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a crashed `omoi up` left its state file behind
    except PermissionError:
        pass  # alive, someone else's
    return pid, url


@asynccontextmanager
async def data_dir_server(data_dir: Path) -> AsyncIterator[str]:
    """The URL of a private server on `data_dir`'s store, for the duration."""
    auth = AuthDir(data_dir / "auth").ensure()
    server = EmbeddedNatsServer(
        data_dir / "nats", port=0, authorization=auth.server_block.read_text()
    )
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()

"""`<data-dir>/omoi-up.json`: how the CLI finds a local system that `omoi up` started.

`omoi up` writes it once every agent it started is ready, and removes it when it stops.
A file left behind by an `omoi up` that was killed is recognised by its dead `pid`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)

STATE_FILE = "omoi-up.json"


class UpState(BaseModel):
    nats_url: str
    http_url: str | None = None
    pid: int
    logs: str | None = None
    # Child name to pid and to agent id, as they were when the system became ready.
    agents: dict[str, int] = Field(default_factory=dict)
    agent_ids: dict[str, str] = Field(default_factory=dict)


def write(data_dir: Path, state: UpState) -> None:
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)  # readers never see half a file


def remove(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def running(data_dir: Path) -> UpState | None:
    """The state of a live `omoi up` on `data_dir`; None without one."""
    path = data_dir / STATE_FILE
    try:
        state = UpState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return state if pid_alive(state.pid) else None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True

"""Profiling a running agent with py-spy: sampled from outside the process, which neither
stops nor changes (`--nonblocking`). The CLI profiles agents on its own machine directly
and asks the supervisor of another host for the rest (`omoi.supervisors.<host>.profile`).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Literal

from agents.errors import AgentError

ProfileFormat = Literal["flamegraph", "speedscope", "raw"]
SUFFIXES: dict[str, str] = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}
# py-spy's own start-up and writing, beyond the sampling itself.
OVERHEAD_S = 30.0


class ProfileError(AgentError):
    """py-spy is missing, may not attach to the process, or failed; the message says which."""


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise ProfileError("py-spy is not installed here (pip install py-spy)")
    return found


async def profile_pid(
    pid: int, seconds: int, fmt: ProfileFormat, out: Path, *, idle: bool = False
) -> Path:
    """Sample process `pid` for `seconds` into `out`; returns `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(seconds),
            "--format", fmt, "--output", str(out), "--nonblocking"]  # fmt: skip
    if idle:
        argv.append("--idle")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        said, _ = await asyncio.wait_for(proc.communicate(), seconds + OVERHEAD_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ProfileError(f"py-spy did not finish within {seconds + OVERHEAD_S:.0f}s") from None
    if proc.returncode != 0 or not await asyncio.to_thread(out.exists):
        tail = said.decode(errors="replace").strip().splitlines()[-3:]
        raise ProfileError(f"py-spy failed on pid {pid}: {' / '.join(tail) or proc.returncode}")
    return out

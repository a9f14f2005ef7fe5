"""Run a task's `command` with /bin/sh in the ticket's workspace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Mapping

from agents.errors import PermanentFailure, TaskTimeout, TransientFailure
from agents.executors.base import ExecutionContext
from agents.settings import Settings
from agents.task_env import task_environment
from schemas import TaskResult, TaskState

OUTPUT_TAIL_BYTES = 8 * 1024
DRAIN_S = 2.0
KILL_GRACE_S = 1.0
# The shell's "cannot execute" and "not found": running again will not help.
PERMANENT_EXIT_CODES = frozenset({126, 127})


class ShellExecutor:
    """Each attempt runs in its own process group, so a timeout or cancel kills the whole
    tree, and gets a private TMPDIR that is removed afterwards. Its environment is the
    allow-listed part of `base_env` (agents/task_env.py) and the task's own variables."""

    capability = "shell"
    reads_ticket_state = False

    def __init__(self, base_env: Mapping[str, str], settings: Settings) -> None:
        self._base_env = task_environment(base_env, settings)

    async def run(self, task: TaskState, ctx: ExecutionContext) -> TaskResult:
        if not (task.command or "").strip():
            raise PermanentFailure(f"shell task {task.name!r} has no command")
        ctx.workspace.mkdir(parents=True, exist_ok=True)
        tmp = ctx.workspace / ".omoi-tmp" / f"{task.name}-{ctx.attempt}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**self._base_env, **ctx.env, "TMPDIR": str(tmp)}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            task.command or "",
            cwd=ctx.workspace,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        tail = bytearray()
        reader = asyncio.create_task(_read_tail(proc, tail))
        try:
            async with asyncio.timeout(task.timeout_s):
                code = await proc.wait()
        except TimeoutError:
            raise TaskTimeout(
                f"timed out after {task.timeout_s:g}s; process group killed" + _last_line(tail)
            ) from None
        finally:
            await _kill_group(proc)
            # The process has exited, but its last output may still be in the pipe: read
            # it to EOF (the group is dead, so EOF comes), bounded in case a writer escaped
            # the group.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), DRAIN_S)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            shutil.rmtree(tmp, ignore_errors=True)
        output = tail.decode(errors="replace")
        if code == 0:
            return TaskResult(
                exit_code=0, output_tail=output, duration_s=round(time.monotonic() - started, 3)
            )
        message = f"exit code {code}" + _last_line(tail)
        if code in PERMANENT_EXIT_CODES:
            raise PermanentFailure(message)
        raise TransientFailure(message)


async def _read_tail(proc: asyncio.subprocess.Process, tail: bytearray) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(4096):
        tail.extend(chunk)
        del tail[:-OUTPUT_TAIL_BYTES]


def _last_line(tail: bytearray) -> str:
    lines = tail.decode(errors="replace").strip().splitlines()
    return f": {lines[-1][:300]}" if lines else ""


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Terminate the attempt's whole process group: the shell and anything it started."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)
        if sig is signal.SIGTERM and not _group_alive(pgid):
            break


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True

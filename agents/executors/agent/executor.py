"""Run an `agent` task as an OpenHands conversation in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from agents import tools
from agents.errors import PermanentFailure, TaskTimeout, TransientFailure
from agents.executors.agent.prompt import build_prompt
from agents.executors.agent.protocol import (
    AskLine,
    CallLine,
    DiscoveryLine,
    InboundLine,
    MessageLine,
    ModelCall,
    ModelSpec,
    Progress,
    SessionResult,
    SessionSpec,
)
from agents.executors.base import ExecutionContext, TeamLink
from agents.llm.client import ModelConfig
from agents.procs import detach_from_terminal_and_follow_parent
from agents.settings import Settings
from agents.spans import record_span
from agents.task_env import task_environment
from schemas import TaskResult, TaskState
from schemas.task import Handoff
from schemas.usage import Budget, Usage

log = logging.getLogger(__name__)

# After SIGTERM the session interrupts its conversation and exits; it gets this long.
INTERRUPT_GRACE_S = 1.2
STDERR_TAIL_LINES = 40
CONVERSATION_NS = uuid.UUID("6f6d6f69-0000-4000-8000-6167656e7473")


def conversation_id(task: TaskState) -> str:
    """Fixed per task and generation: a redelivered or retried attempt resumes it."""
    return str(uuid.uuid5(CONVERSATION_NS, f"{task.id}/g{task.generation}"))


class AgentExecutor:
    capability = "agent"
    reads_ticket_state = True

    def __init__(self, settings: Settings, base_env: Mapping[str, str]) -> None:
        self.settings = settings
        # The session's environment is its terminal's (tmux starts with it), so it is a
        # task environment: the allow-list, never the worker's whole environment.
        self._base_env = task_environment(base_env, settings)

    def _model(self) -> ModelSpec:
        config = ModelConfig.from_settings(self.settings)
        if config is None:
            raise PermanentFailure(
                "no model configured: set OMOI_LLM_MODEL (and OMOI_LLM_API_KEY, "
                "OMOI_LLM_BASE_URL as needed)"
            )
        return ModelSpec(
            model=config.model,
            base_url=config.base_url,
            input_cost_per_token=config.input_cost_per_token,
            output_cost_per_token=config.output_cost_per_token,
            num_retries=config.num_retries,
            timeout_s=config.timeout_s,
        )

    def _budget(self, task: TaskState, ctx: ExecutionContext) -> Budget:
        # The task's own limits win over the defaults; the ticket's remainder caps both.
        own = task.budget.model_dump(exclude_none=True) if task.budget else {}
        budget = self.settings.agent_budget().model_copy(update=own).tightest(ctx.budget)
        reason = budget.exhausted_by(Usage())
        if reason:
            raise PermanentFailure(f"budget exhausted before starting: {reason}", category="budget")
        return budget

    async def run(self, task: TaskState, ctx: ExecutionContext) -> TaskResult:
        model = self._model()
        budget = self._budget(task, ctx)
        conv_id = conversation_id(task)
        state_dir = self.settings.agent_state_dir
        spec = SessionSpec(
            task_id=task.id,
            conversation_id=conv_id,
            workspace=str(ctx.workspace.resolve()),
            state_dir=str((state_dir / "conversations").resolve()),
            prompt=build_prompt(
                task, ctx.ticket, ctx.workspace.resolve(), ctx.joined, ctx.recalled
            ),
            model=model,
            budget=budget,
            progress_interval_s=self.settings.progress_interval_s,
            tools=tools.for_task(task.tools),
        )
        # Short: a tmux socket path must fit in 107 bytes.
        tmux_dir = (
            self.settings.data_dir.resolve() / "t" / hashlib.sha1(conv_id.encode()).hexdigest()[:8]
        )
        tmp = state_dir / "tmp" / f"{task.name}-{ctx.attempt}"
        for d in (tmux_dir, tmp, state_dir / "home", state_dir / "sdk"):
            d.mkdir(parents=True, exist_ok=True)
        env = {
            **self._base_env,
            **ctx.env,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OPENHANDS_SUPPRESS_BANNER": "1",
            "OH_PERSISTENCE_DIR": str((state_dir / "sdk").resolve()),
            "HOME": str((state_dir / "home").resolve()),
            "TMPDIR": str(tmp.resolve()),
            "TMUX_TMPDIR": str(tmux_dir),
            "PYTHONUNBUFFERED": "1",
        }
        key = self.settings.llm_api_key
        # A session left by a worker that died (kill -9) may still hold terminals.
        _kill_tmux(tmux_dir)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents.executors.agent.session",
            cwd=ctx.workspace,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group (so a stop reaches all of it), ended by the kernel if
            # this worker dies: a redelivered attempt must not race an orphaned one.
            preexec_fn=detach_from_terminal_and_follow_parent,
            limit=8 * 1024 * 1024,
        )
        assert proc.stdin is not None
        # The key goes after the spec on stdin: in the environment, the terminal would
        # inherit it; in the spec or arguments, it would show in logs and `ps`.
        secret = key.get_secret_value() if key is not None else ""
        proc.stdin.write(f"{spec.model_dump_json()}\n{secret}\n".encode())
        # Stdin stays open: answers to the agent's questions and messages to it follow.
        inbound = Inbound(proc.stdin)
        stop_listening = ctx.team.listen(inbound.message) if ctx.team is not None else None
        stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        results: list[SessionResult] = []
        readers = [
            asyncio.create_task(self._read_stdout(proc, ctx, results, inbound)),
            asyncio.create_task(_read_stderr(proc, stderr)),
        ]
        try:
            async with asyncio.timeout(task.timeout_s):
                await proc.wait()
                await asyncio.gather(*readers)
        except TimeoutError:
            await _stop(proc, tmux_dir)
            raise TaskTimeout(
                f"agent timed out after {task.timeout_s:g}s; session stopped"
            ) from None
        finally:
            if stop_listening is not None:
                stop_listening()
            if proc.returncode is None:
                await _stop(proc, tmux_dir)
            for reader in [*readers, *inbound.asking]:
                reader.cancel()
            await asyncio.gather(*readers, *inbound.asking, return_exceptions=True)
            inbound.close()
            _kill_tmux(tmux_dir)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(tmux_dir, ignore_errors=True)
        if not results:
            # The worker redacts known secrets from this message, like from every outcome.
            tail = "\n".join(stderr)
            raise TransientFailure(
                f"agent session exited {proc.returncode} without a result: {tail[-1500:]}",
                category="executor_error",
            )
        return self._outcome(results[-1])

    def _outcome(self, result: SessionResult) -> TaskResult:
        message = result.message
        if result.outcome == "handoff" and result.handoff is not None:
            return TaskResult(
                summary=result.summary,
                files=result.files,
                usage=result.usage,
                handoff=Handoff(
                    to_capability=result.handoff.to_capability,
                    to_agent=result.handoff.to_agent,
                    context=result.handoff.context,
                ),
            )
        if result.outcome == "finished":
            return TaskResult(
                exit_code=0,
                output_tail=result.summary,
                summary=result.summary,
                files=result.files,
                usage=result.usage,
            )
        failure: PermanentFailure | TransientFailure
        if result.outcome == "budget":
            failure = PermanentFailure(f"budget exceeded: {message}", category="budget")
        elif result.outcome == "stuck":
            failure = PermanentFailure(message, category="agent_stuck")
        else:
            failure = TransientFailure(f"agent {result.outcome}: {message}", category="agent_error")
        failure.usage = result.usage
        raise failure

    async def _read_stdout(
        self,
        proc: asyncio.subprocess.Process,
        ctx: ExecutionContext,
        results: list[SessionResult],
        inbound: Inbound,
    ) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                if b'"kind":"result"' in line:
                    results.append(SessionResult.model_validate_json(line))
                elif b'"kind":"model_call"' in line:
                    _record_model_call(ModelCall.model_validate_json(line))
                elif b'"kind":"progress"' in line:
                    progress = Progress.model_validate_json(line)
                    if ctx.report is not None:
                        await ctx.report(progress.model_dump(exclude={"kind"}))
                else:
                    await _team_line(line, ctx.team, inbound)
            except ValidationError:
                log.debug("unreadable session line: %r", line[:200])


async def _team_line(line: bytes, team: TeamLink | None, inbound: Inbound) -> None:
    """A line for the other agents or the providers: a message, a discovery, a question,
    an integration call (answered on the session's stdin)."""
    if b'"kind":"call"' in line:
        inbound.call(CallLine.model_validate_json(line), team)
    elif b'"kind":"ask"' in line:
        inbound.ask(AskLine.model_validate_json(line), team)
    elif team is None:
        return
    elif b'"kind":"message"' in line:
        sent = MessageLine.model_validate_json(line)
        await team.send(sent.to, sent.text)
    elif b'"kind":"discovery"' in line:
        found = DiscoveryLine.model_validate_json(line)
        await team.discover(found.n, found.discovery)


def _record_model_call(call: ModelCall) -> None:
    """The session's model call as a span of the attempt (the current span here)."""
    record_span(
        f"chat {call.model}",
        start=call.ended_at - timedelta(seconds=call.latency_s),
        end=call.ended_at,
        attributes={
            "gen_ai.request.model": call.model,
            "gen_ai.usage.input_tokens": call.prompt_tokens,
            "gen_ai.usage.output_tokens": call.completion_tokens,
        },
    )


async def _read_stderr(proc: asyncio.subprocess.Process, tail: deque[str]) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        tail.append(line.decode(errors="replace").rstrip())


async def _stop(proc: asyncio.subprocess.Process, tmux_dir: Path) -> None:
    """Interrupt the conversation, then make sure the session and its commands are gone."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), INTERRUPT_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    _kill_tmux(tmux_dir)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), 2.0)


def _kill_tmux(tmux_dir: Path) -> None:
    """Terminal commands run under tmux servers, outside the session's process group."""
    for sock in tmux_dir.glob("tmux-*/*"):
        panes = subprocess.run(
            ["tmux", "-S", str(sock), "list-panes", "-a", "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.split()
        for pid in panes:
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True, timeout=5)
        with contextlib.suppress(OSError):
            sock.unlink()


class Inbound:
    """What the worker writes to a session's stdin: answers and messages, one JSON line
    each. Questions are answered in their own tasks, so a slow answer holds up nothing."""

    def __init__(self, stdin: asyncio.StreamWriter) -> None:
        self.stdin = stdin
        self.asking: list[asyncio.Task[None]] = []

    def _write(self, line: InboundLine) -> None:
        if not self.stdin.is_closing():
            self.stdin.write((line.model_dump_json() + "\n").encode())

    async def message(self, kind: str, text: str) -> None:
        self._write(InboundLine(kind="steer" if kind == "steer" else "message", text=text))

    def ask(self, question: AskLine, team: TeamLink | None) -> None:
        async def answer() -> None:
            found = None
            if team is not None:
                found = await team.ask(question.to, question.question, question.timeout_s)
            text = found if found is not None else f"no answer from {question.to} in time"
            self._write(InboundLine(kind="answer", id=question.id, text=text))

        self.asking.append(asyncio.create_task(answer()))

    def call(self, call: CallLine, team: TeamLink | None) -> None:
        async def answer() -> None:
            text = "no integrations here (no worker team)"
            if team is not None:
                text = await team.call(call.id, call.tool, call.op, call.args)
            self._write(InboundLine(kind="answer", id=call.id, text=text))

        self.asking.append(asyncio.create_task(answer()))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stdin.close()

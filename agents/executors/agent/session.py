"""The child process that runs one OpenHands conversation for one task attempt.

It reads a `SessionSpec` (one JSON line) on stdin, then the model's API key (the rest
of stdin, possibly empty), and writes JSON lines on stdout: `Progress`
at a bounded rate, then exactly one `SessionResult`. The conversation persists under
`state_dir` with an id fixed per task, so a process started again after a crash
resumes the conversation where it stopped instead of starting over. SIGTERM interrupts
the conversation mid-step (`arun()` + `interrupt()`) and ends with an `interrupted`
result.

The parent sets the environment that keeps the SDK offline and inside the data dir
(LITELLM_LOCAL_MODEL_COST_MAP, OH_PERSISTENCE_DIR, TMPDIR, TMUX_TMPDIR, HOME) on top of
a task environment (agents/task_env.py). The terminal's tmux server starts with this
process's environment, so the key is never in it: it reaches only the LLM object.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from agents import tools
from agents.executors.agent.protocol import (
    AskLine,
    InboundLine,
    MessageLine,
    ModelCall,
    Outcome,
    Progress,
    SessionResult,
    SessionSpec,
)
from agents.executors.agent.team_tools import Mailbox, build_tools, handoff_in
from agents.redact import Redactor, install_log_redaction
from agents.tools import ToolContext
from schemas.usage import Usage

log = logging.getLogger("omoi.agent-session")

EDITING_COMMANDS = frozenset({"create", "str_replace", "insert", "undo_edit"})


class Watcher:
    """Follows conversation events: progress lines, touched files, the token budget."""

    def __init__(self, spec: SessionSpec, out: TextIO) -> None:
        self.spec = spec
        self.out = out
        self.lock = threading.Lock()
        self.out_lock = threading.Lock()
        self.tool_calls = 0
        self.last_tool: str | None = None
        self.last_command: str | None = None
        self.files: list[str] = []
        self.summary = ""
        self.error: tuple[str, str] | None = None
        self.over_budget: str | None = None
        self.last_report = 0.0
        self.baseline = Usage()
        self.usage_now: Any = None  # set once the conversation exists
        self.metrics_now: Any = None  # likewise: the conversation's combined metrics
        self.calls_seen = 0
        self.on_over_budget: Any = None

    def __call__(self, event: Any) -> None:
        from openhands.sdk.event import ActionEvent, MessageEvent
        from openhands.sdk.event.conversation_error import ConversationErrorEvent

        with self.lock:
            if isinstance(event, ActionEvent):
                self._on_action(event)
            elif isinstance(event, MessageEvent) and event.source == "agent":
                self.summary = _text(event.llm_message.content) or self.summary
            elif isinstance(event, ConversationErrorEvent):
                self.error = (str(event.code), str(event.detail))
            self._report_model_calls()
            usage = self.usage()
            reason = self.spec.budget.exhausted_by(usage) if usage.iterations else None
            if reason and self.over_budget is None:
                self.over_budget = reason
                if self.on_over_budget is not None:
                    self.on_over_budget()
            now = time.monotonic()
            if isinstance(event, ActionEvent) and (
                now - self.last_report >= self.spec.progress_interval_s
            ):
                self.last_report = now
                self.emit(self.progress(usage))

    def _on_action(self, event: Any) -> None:
        self.tool_calls += 1
        self.last_tool = event.tool_name
        action = event.action
        if action is None:
            return
        command = getattr(action, "command", None)
        if event.tool_name == "terminal" and isinstance(command, str):
            self.last_command = command[:200]
        path = getattr(action, "path", None)
        if event.tool_name == "file_editor" and command in EDITING_COMMANDS and path:
            rel = os.path.relpath(str(path), self.spec.workspace)
            if rel not in self.files:
                self.files.append(rel)
        if event.tool_name == "finish":
            self.summary = str(getattr(action, "message", "") or self.summary)

    def _report_model_calls(self) -> None:
        """A line for each model call made since the last event, for the attempt's trace."""
        if self.metrics_now is None:
            return
        metrics = self.metrics_now()
        calls = metrics.token_usages
        latencies = {r.response_id: r.latency for r in metrics.response_latencies}
        now = datetime.now(UTC)
        for call in calls[self.calls_seen :]:
            self.emit(
                ModelCall(
                    model=str(call.model or metrics.model_name or ""),
                    ended_at=now,
                    latency_s=float(latencies.get(call.response_id, 0.0) or 0.0),
                    prompt_tokens=int(call.prompt_tokens or 0),
                    completion_tokens=int(call.completion_tokens or 0),
                )
            )
        self.calls_seen = len(calls)

    def usage(self) -> Usage:
        if self.usage_now is None:
            return Usage()
        total: Usage = self.usage_now()
        return Usage(
            prompt_tokens=total.prompt_tokens - self.baseline.prompt_tokens,
            completion_tokens=total.completion_tokens - self.baseline.completion_tokens,
            cost_usd=round(total.cost_usd - self.baseline.cost_usd, 6),
            iterations=total.iterations - self.baseline.iterations,
        )

    def progress(self, usage: Usage) -> Progress:
        return Progress(
            tool_calls=self.tool_calls,
            last_tool=self.last_tool,
            last_command=self.last_command,
            files=list(self.files[-50:]),
            usage=usage,
        )

    def emit(self, line: Progress | SessionResult | MessageLine | AskLine | ModelCall) -> None:
        # Tools write from the conversation's thread, progress from the callback's.
        with self.out_lock:
            self.out.write(line.model_dump_json() + "\n")
            self.out.flush()


def _text(content: Any) -> str:
    parts = [getattr(c, "text", "") for c in content or []]
    return "\n".join(p for p in parts if p).strip()


def conversation_usage(conversation: Any) -> Usage:
    metrics = conversation.conversation_stats.get_combined_metrics()
    tokens = metrics.accumulated_token_usage
    return Usage(
        prompt_tokens=int(getattr(tokens, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(tokens, "completion_tokens", 0) or 0),
        cost_usd=float(metrics.accumulated_cost or 0.0),
        iterations=len(metrics.token_usages),
    )


def plugin_tools(spec: SessionSpec, mailbox: Mailbox) -> list[str]:
    """The plugin tools the task gets (agents/tools), registered; a missing one is
    reported and left out (intake checks names, but a worker may lack a package)."""
    ctx = ToolContext(
        emit=mailbox.emit, workspace=Path(spec.workspace), task_id=spec.task_id, call=mailbox.call
    )
    found = tools.installed()
    names: list[str] = []
    for name in spec.tools:
        plugin = found.get(name)
        if plugin is None:
            log.warning("tool %r is not installed on this worker; left out", name)
            continue
        try:
            names += plugin.build(ctx)
        except Exception as exc:  # noqa: BLE001 - a broken tool is left out, not the task
            log.warning("tool %r could not be built, left out: %r", name, exc)
    return names


def build_conversation(
    spec: SessionSpec, api_key: str | None, watcher: Watcher, mailbox: Mailbox
) -> Any:
    from openhands.sdk import LLM, Agent, Conversation, Tool
    from openhands.tools.file_editor import FileEditorTool
    from openhands.tools.task_tracker import TaskTrackerTool
    from openhands.tools.terminal import TerminalTool

    m = spec.model
    llm = LLM(
        model=m.model,
        base_url=m.base_url,
        api_key=SecretStr(api_key) if api_key else None,
        num_retries=m.num_retries,
        timeout=int(m.timeout_s),
        usage_id="omoi-agent",
        input_cost_per_token=m.input_cost_per_token,
        output_cost_per_token=m.output_cost_per_token,
    )
    agent = Agent(
        llm=llm,
        tools=[
            Tool(name=TerminalTool.name, params={"terminal_type": "tmux"}),
            Tool(name=FileEditorTool.name),
            Tool(name=TaskTrackerTool.name),
            *(Tool(name=name) for name in build_tools(mailbox)),
            *(Tool(name=name) for name in plugin_tools(spec, mailbox)),
        ],
    )
    return Conversation(
        agent=agent,
        workspace=spec.workspace,
        persistence_dir=spec.state_dir,
        conversation_id=uuid.UUID(spec.conversation_id),
        callbacks=[watcher],
        visualizer=None,
        max_iteration_per_run=spec.budget.max_iterations or 500,
        delete_on_close=False,
    )


async def run(
    spec: SessionSpec, api_key: str | None, out: TextIO, mailbox: Mailbox | None = None
) -> SessionResult:
    from openhands.sdk.conversation.state import ConversationExecutionStatus as Status

    watcher = Watcher(spec, out)
    mailbox = mailbox or Mailbox(watcher.emit)
    mailbox.emit = watcher.emit
    conversation = await asyncio.to_thread(build_conversation, spec, api_key, watcher, mailbox)
    watcher.usage_now = lambda: conversation_usage(conversation)
    watcher.baseline = conversation_usage(conversation)
    watcher.metrics_now = conversation.conversation_stats.get_combined_metrics
    # A resumed conversation's earlier calls are in an earlier attempt's trace.
    watcher.calls_seen = len(watcher.metrics_now().token_usages)
    watcher.on_over_budget = conversation.interrupt
    state = conversation.state
    resumed = any(getattr(e, "source", None) == "user" for e in state.events)
    if resumed:
        mailbox.handoff = mailbox.handoff or handoff_in(state.events)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        conversation.interrupt()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, interrupt)
    try:
        if state.execution_status is not Status.FINISHED:
            if not resumed:
                conversation.send_message(spec.prompt)
            # After the prompt: a resumed conversation is one with a user message in it.
            mailbox.steer_with(conversation.send_message)
            log.info("%s conversation %s", "resuming" if resumed else "starting", spec.task_id)
            await conversation.arun()
        outcome, message = _outcome(
            watcher, mailbox, interrupted, conversation.state.execution_status
        )
        return SessionResult(
            outcome=outcome,
            handoff=mailbox.handoff if outcome == "handoff" else None,
            message=message[:2000],
            summary=watcher.summary[:4000],
            resumed=resumed,
            files=watcher.files,
            usage=watcher.usage(),
        )
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        # Closing ends the tmux sessions, and with them any command still running.
        await asyncio.to_thread(conversation.close)


def _outcome(
    watcher: Watcher, mailbox: Mailbox, interrupted: bool, status: Any
) -> tuple[Outcome, str]:
    """How the conversation ended, and why, from its status and what was seen of it."""
    from openhands.sdk.conversation.state import ConversationExecutionStatus as Status

    if watcher.over_budget:
        return "budget", watcher.over_budget
    if mailbox.handoff is not None:
        return "handoff", "handed off"
    if interrupted:
        return "interrupted", "interrupted"
    if status is Status.FINISHED:
        return "finished", ""
    if watcher.error and watcher.error[0] in ("MaxIterationsReached", "MaxBudgetReached"):
        return "budget", watcher.error[1]
    if status is Status.STUCK:
        return "stuck", "the agent is stuck repeating itself"
    detail = watcher.error[1] if watcher.error else f"conversation ended {status.value}"
    return "error", detail


def _read_inbound(mailbox: Mailbox) -> None:
    for line in sys.stdin:
        try:
            inbound = InboundLine.model_validate_json(line)
        except ValueError:
            log.warning("unreadable line from the worker: %r", line[:200])
            continue
        if inbound.kind == "answer" and inbound.id:
            mailbox.deliver_answer(inbound.id, inbound.text)
        elif inbound.kind == "steer":
            mailbox.deliver_steering(inbound.text)
        else:
            mailbox.deliver_message(inbound.text)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # The spec and the key come first, one line each; the worker keeps stdin open for
    # answers and messages (`InboundLine`s) until the session ends.
    spec = SessionSpec.model_validate_json(sys.stdin.readline())
    secret = sys.stdin.readline().rstrip("\n")
    api_key = secret or None
    mailbox = Mailbox(lambda line: None)
    threading.Thread(target=_read_inbound, args=(mailbox,), daemon=True).start()
    # Its stderr becomes the worker's failure message when it ends without a result.
    install_log_redaction(Redactor([secret]))
    out = sys.stdout
    try:
        result = asyncio.run(run(spec, api_key, out, mailbox))
    except Exception as exc:
        log.exception("session failed")
        result = SessionResult(outcome="error", message=f"{type(exc).__name__}: {exc}"[:2000])
    out.write(result.model_dump_json() + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

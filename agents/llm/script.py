"""The scripted model's script file and its pure turn selection.

A script is a list of conversations. A chat request is matched to the first conversation
whose `match` regex is found in its first user message; the number of assistant messages
already in the request picks the turn. Selection is therefore stateless: a client that
resumes a persisted conversation continues at the right turn.

Everything here is pure; `agents.llm.scripted` adds the HTTP server around it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

FINISHED_CONTENT = "(scripted model: script finished)"
_PREVIEW_CHARS = 120
_CONTENT_PIECE = 48  # characters per streamed content delta


class ScriptError(ValueError):
    """A script file that cannot be read or is not a valid script."""


class NoScriptMatch(ValueError):
    """No conversation of the script matches the request's first user message."""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class Turn(BaseModel):
    """One assistant reply: optional text, optional tool calls."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage | None = None
    delay_s: float = Field(default=0.0, ge=0)


class Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    match: str
    turns: list[Turn] = Field(default_factory=list)
    repeat_last: bool = False

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.S)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from exc
        return value


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    conversations: list[Conversation]

    @classmethod
    def loads(cls, text: str) -> Script:
        return cls.model_validate_json(text)

    @classmethod
    def load(cls, path: Path | str) -> Script:
        """Read a script file; any problem raises `ScriptError` naming the file."""
        try:
            return cls.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValidationError) as exc:
            raise ScriptError(f"invalid scripted-model script {str(path)!r}: {exc}") from exc


@dataclass(frozen=True)
class Selection:
    """The conversation and turn a request maps to; `turn` is None once the script is done."""

    conversation_index: int
    conversation_name: str
    turn_index: int
    turn: Turn | None
    variables: dict[str, str]


@dataclass(frozen=True)
class Reply:
    """The assistant message to send, in OpenAI wire terms (arguments as JSON strings)."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    usage: dict[str, int]
    delay_s: float


def message_text(content: Any) -> str:
    """The text of a message's `content`: a string or a list of `{"type": "text"}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        return "\n".join(parts)
    return ""


def _role_is(message: Any, role: str) -> bool:
    return isinstance(message, dict) and message.get("role") == role


def substitute(value: Any, variables: dict[str, str]) -> Any:
    """Replace `${name}` in every string, recursing into lists and dict values."""
    if isinstance(value, str):
        return Template(value).safe_substitute(variables)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def select(script: Script, messages: list[Any]) -> Selection:
    """Map a request's messages to a conversation and turn. Raises `NoScriptMatch`."""
    first_user = next((m for m in messages if _role_is(m, "user")), None)
    text = message_text(first_user.get("content")) if first_user is not None else None
    if text is not None:
        for index, conversation in enumerate(script.conversations):
            found = re.search(conversation.match, text, re.S)
            if found is None:
                continue
            variables = {k: v for k, v in found.groupdict().items() if v is not None}
            turn_index = sum(1 for m in messages if _role_is(m, "assistant"))
            turn = _turn_at(conversation, turn_index)
            if turn is not None:
                turn = Turn.model_validate(substitute(turn.model_dump(), variables))
            return Selection(index, conversation.name, turn_index, turn, variables)
    preview = "" if text is None else text[:_PREVIEW_CHARS]
    raise NoScriptMatch(
        f"scripted model: no conversation matches the first user message (starts: {preview!r})"
    )


def _turn_at(conversation: Conversation, index: int) -> Turn | None:
    if index < len(conversation.turns):
        return conversation.turns[index]
    if conversation.repeat_last and conversation.turns:
        return conversation.turns[-1]
    return None


def tool_call_id(conversation_index: int, turn_index: int, position: int) -> str:
    return f"call_{conversation_index}_{turn_index}_{position}"


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def prompt_chars(messages: list[Any]) -> int:
    return sum(len(message_text(m.get("content"))) for m in messages if isinstance(m, dict))


def reply(selection: Selection, messages: list[Any]) -> Reply:
    """The assistant reply for a selection: the turn's text and tool calls, with usage."""
    turn = selection.turn
    if turn is None:
        content: str | None = FINISHED_CONTENT
        calls: list[dict[str, Any]] = []
        delay = 0.0
    else:
        content, delay = turn.content, turn.delay_s
        calls = [
            {
                "id": tool_call_id(selection.conversation_index, selection.turn_index, j),
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for j, call in enumerate(turn.tool_calls)
        ]
        if content is None and not calls:
            content = ""
    if turn is not None and turn.usage is not None:
        prompt, completion = turn.usage.prompt_tokens, turn.usage.completion_tokens
    else:
        out_chars = len(content or "") + sum(len(c["function"]["arguments"]) for c in calls)
        prompt, completion = _tokens(prompt_chars(messages)), max(1, _tokens(out_chars))
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    finish = "tool_calls" if calls else "stop"
    return Reply(content, calls, finish, usage, delay)


def completion(answer: Reply, envelope: dict[str, Any]) -> dict[str, Any]:
    """A `chat.completion` body; `envelope` holds id, object, created, model, fingerprint."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    finish = answer.finish_reason
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {**envelope, "choices": [choice], "usage": answer.usage}


def stream_events(
    answer: Reply, envelope: dict[str, Any], include_usage: bool
) -> list[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed reply, in order (without [DONE])."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**envelope, "choices": [choice]}

    events = [chunk({"role": "assistant"})]
    text = answer.content or ""
    for start in range(0, len(text), _CONTENT_PIECE):
        events.append(chunk({"content": text[start : start + _CONTENT_PIECE]}))
    for j, call in enumerate(answer.tool_calls):
        events.append(chunk({"tool_calls": [{"index": j, **call}]}))
    events.append(chunk({}, answer.finish_reason))
    if include_usage:
        events.append({**envelope, "choices": [], "usage": answer.usage})
    return events

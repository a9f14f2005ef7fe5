"""The scripted model server: turn selection, the OpenAI wire format, openai and litellm."""

from __future__ import annotations

import os

# litellm fetches its model cost map from the internet on import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import http.client
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from agents.llm.script import (
    FINISHED_CONTENT,
    NoScriptMatch,
    Script,
    ScriptError,
    reply,
    select,
)
from agents.llm.scripted import ScriptedModelServer

WRITE_REQUIREMENTS = {
    "name": "file_editor",
    "arguments": {
        "command": "create",
        "path": "${workspace}/docs/requirements.md",
        "file_text": "# Requirements for ${ticket}\n",
        "extra": {"nested": ["in ${workspace}", 3, None], "keep": "${unknown}"},
    },
}

SCRIPT: dict[str, Any] = {
    "description": "test script",
    "conversations": [
        {
            "name": "requirements",
            "match": r"Ticket (?P<ticket>T\d+).*Workspace: (?P<workspace>/\S+)",
            "turns": [
                {"content": "Writing the requirements.", "tool_calls": [WRITE_REQUIREMENTS]},
                {
                    "tool_calls": [{"name": "finish", "arguments": {"message": "done"}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20},
                },
            ],
        },
        {
            "name": "loop",
            "match": "keep going",
            "turns": [{"tool_calls": [{"name": "think", "arguments": {"thought": "hmm"}}]}],
            "repeat_last": True,
        },
        {"name": "slow", "match": "^slow", "turns": [{"content": "late", "delay_s": 30}]},
        {"name": "chat", "match": ".", "turns": [{"content": "hello " * 30}]},
    ],
}

TASK = "Ticket T7: write requirements.\nWorkspace: /tmp/ws-7\nThanks."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"the {name} tool",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": True},
        },
    }
    for name in ("file_editor", "finish", "think")
]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str = "ok") -> dict[str, Any]:
    return {"role": "assistant", "content": text}


@pytest.fixture
def script() -> Script:
    return Script.model_validate(SCRIPT)


@pytest.fixture
def server(script: Script, tmp_path: Path) -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(script, request_log=tmp_path / "requests.jsonl") as running:
        yield running


def post(url: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    return _open(request)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    return _open(urllib.request.Request(url))


def _open(request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


# --- selection (pure) -------------------------------------------------------------------


def test_selects_conversation_by_regex_and_turn_by_assistant_count(script: Script) -> None:
    first = select(script, [{"role": "system", "content": "sys"}, user(TASK)])
    assert (first.conversation_index, first.conversation_name, first.turn_index) == (
        0,
        "requirements",
        0,
    )
    assert first.turn is not None and first.turn.tool_calls[0].name == "file_editor"

    tool_result = {"role": "tool", "tool_call_id": "call_0_0_0", "content": "created"}
    second = select(script, [user(TASK), assistant(), tool_result, user("go on")])
    assert second.turn_index == 1
    assert second.turn is not None and second.turn.tool_calls[0].name == "finish"

    # Only the FIRST user message is matched; later ones do not change the conversation.
    other = select(script, [user("keep going"), assistant(), user(TASK)])
    assert (other.conversation_name, other.turn_index) == ("loop", 1)
    assert select(script, [user("anything")]).conversation_name == "chat"


def test_content_parts_are_joined_for_matching(script: Script) -> None:
    parts = [
        {"type": "text", "text": "Ticket T9: do it."},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "Workspace: /w/9"},
    ]
    selection = select(script, [{"role": "user", "content": parts}])
    assert selection.conversation_name == "requirements"
    assert selection.variables == {"ticket": "T9", "workspace": "/w/9"}


def test_named_groups_substitute_into_nested_tool_call_arguments(script: Script) -> None:
    selection = select(script, [user(TASK)])
    assert selection.turn is not None
    assert selection.turn.content == "Writing the requirements."
    assert selection.turn.tool_calls[0].arguments == {
        "command": "create",
        "path": "/tmp/ws-7/docs/requirements.md",
        "file_text": "# Requirements for T7\n",
        "extra": {"nested": ["in /tmp/ws-7", 3, None], "keep": "${unknown}"},
    }
    # The script itself is untouched.
    assert (
        script.conversations[0].turns[0].tool_calls[0].arguments == WRITE_REQUIREMENTS["arguments"]
    )


def test_repeat_last_reuses_the_last_turn_with_fresh_call_ids(script: Script) -> None:
    ids = []
    for count in range(3):
        messages = [user("keep going")] + [assistant()] * count
        selection = select(script, messages)
        assert selection.turn is not None and selection.turn.tool_calls[0].name == "think"
        ids.append(reply(selection, messages).tool_calls[0]["id"])
    assert ids == ["call_1_0_0", "call_1_1_0", "call_1_2_0"]


def test_finished_script_answers_plainly(script: Script) -> None:
    messages = [user(TASK), assistant(), assistant()]
    selection = select(script, messages)
    assert selection.turn_index == 2 and selection.turn is None
    answer = reply(selection, messages)
    assert (answer.content, answer.tool_calls, answer.finish_reason) == (
        FINISHED_CONTENT,
        [],
        "stop",
    )


def test_usage_is_scripted_or_estimated(script: Script) -> None:
    messages = [user(TASK), assistant()]
    assert reply(select(script, messages), messages).usage == {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
    }
    messages = [user("abcde")]  # 5 chars -> 2 tokens; "hello " * 30 = 180 chars -> 45
    assert reply(select(script, messages), messages).usage == {
        "prompt_tokens": 2,
        "completion_tokens": 45,
        "total_tokens": 47,
    }


def test_no_match_raises(script: Script) -> None:
    narrow = Script.model_validate({"conversations": [SCRIPT["conversations"][0]]})
    with pytest.raises(NoScriptMatch, match=r"starts: 'x{120}'\)"):
        select(narrow, [user("x" * 500)])
    with pytest.raises(NoScriptMatch, match="no conversation matches"):
        select(script, [{"role": "system", "content": "no user message"}])


def test_invalid_script_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"conversations": [{"name": "x", "match": "(", "turns": []}]}))
    with pytest.raises(ScriptError, match=r"(?s)bad\.json.*invalid regex"):
        Script.load(bad)
    bad.write_text('{"conversations": [], "typo": 1}')
    with pytest.raises(ScriptError, match=r"(?s)bad\.json.*typo"):
        Script.load(bad)
    with pytest.raises(ScriptError, match=r"missing\.json"):
        Script.load(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SCRIPT))
    assert Script.load(good) == Script.model_validate(SCRIPT)


# --- HTTP -------------------------------------------------------------------------------


def test_no_match_is_an_openai_style_400(tmp_path: Path) -> None:
    narrow = Script.model_validate({"conversations": [SCRIPT["conversations"][0]]})
    with ScriptedModelServer(narrow) as server:
        status, headers, body = post(f"{server.url}/chat/completions", {"messages": [user("hi")]})
        assert status == 400 and headers["X-Omoi-Scripted-Model"] == "1"
        assert json.loads(body) == {
            "error": {
                "message": "scripted model: no conversation matches the first user message"
                " (starts: 'hi')",
                "type": "invalid_request_error",
                "code": "no_script_match",
            }
        }
        with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
            with pytest.raises(openai.BadRequestError, match="no_script_match"):
                client.chat.completions.create(model="scripted-model", messages=[user("hi")])
        assert server.requests == []


def test_raw_endpoints_and_errors(server: ScriptedModelServer) -> None:
    root = server.url.removesuffix("/v1")
    status, headers, body = get(f"{root}/health")
    assert (status, json.loads(body)) == (200, {"status": "ok", "scripted": True})
    assert headers["X-Omoi-Scripted-Model"] == "1"
    status, _, body = get(f"{server.url}/models")
    assert json.loads(body)["data"] == [
        {"id": "scripted-model", "object": "model", "owned_by": "omoi-scripted"}
    ]
    status, headers, body = get(f"{root}/nope")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    assert headers["X-Omoi-Scripted-Model"] == "1"
    status, _, body = post(f"{server.url}/embeddings", {"input": "x"})
    assert status == 200 and len(json.loads(body)["data"][0]["embedding"]) == 256
    status, _, body = post(f"{server.url}/embeddings", {"input": []})
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_input"
    status, _, body = post(f"{server.url}/completions", {"prompt": "x"})
    assert status == 404
    status, _, body = post(f"{server.url}/chat/completions", b"{not json")
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_json"
    status, _, body = post(f"{server.url}/chat/completions", {"messages": "nope"})
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_json"

    # The unversioned path answers too; a finished script says so.
    messages = [user(TASK), assistant(), assistant()]
    status, headers, body = post(f"{root}/chat/completions", {"messages": messages})
    completion = json.loads(body)
    assert status == 200 and headers["X-Omoi-Scripted-Model"] == "1"
    assert completion["model"] == "scripted-model"
    assert completion["system_fingerprint"] == "omoi-scripted-model"
    assert completion["id"].startswith("chatcmpl-scripted-")
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": FINISHED_CONTENT},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]


def test_raw_stream_is_server_sent_events(server: ScriptedModelServer) -> None:
    body = {"messages": [user(TASK)], "stream": True}
    status, headers, raw = post(f"{server.url}/chat/completions", body)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage


def test_openai_client_gets_tool_calls(
    server: ScriptedModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agents.llm.scripted")
    with openai.OpenAI(base_url=server.url, api_key="sk-secret") as client:
        completion = client.chat.completions.create(
            model="scripted-model",
            messages=[{"role": "system", "content": "be good"}, user(TASK)],
            tools=TOOLS,
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Writing the requirements."
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id == "call_0_0_0" and call.type == "function"
    assert call.function.name == "file_editor"
    arguments = json.loads(call.function.arguments)
    assert arguments["path"] == "/tmp/ws-7/docs/requirements.md"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.model == "scripted-model"
    assert "POST /v1/chat/completions" in caplog.text  # requests are logged, keys never
    assert "sk-secret" not in caplog.text


def test_openai_client_streams_tool_calls_and_usage(server: ScriptedModelServer) -> None:
    messages = [user(TASK), assistant(), user("next")]
    content, calls, finish, usage = "", {}, None, None
    with openai.OpenAI(base_url=server.url, api_key="x") as client:
        stream = client.chat.completions.create(
            model="scripted-model",
            messages=messages,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    content += choice.delta.content or ""
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or []:
                        entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                        assert delta.function is not None
                        entry["id"] = delta.id or entry.get("id")
                        entry["name"] += delta.function.name or ""
                        entry["arguments"] += delta.function.arguments or ""
    assert content == "" and finish == "tool_calls"
    assert calls == {0: {"id": "call_0_1_0", "name": "finish", "arguments": '{"message": "done"}'}}
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 20, 120)


def test_openai_client_streams_long_content(server: ScriptedModelServer) -> None:
    with openai.OpenAI(base_url=server.url, api_key="x") as client:
        stream = client.chat.completions.create(
            model="scripted-model", messages=[user("chat please")], stream=True
        )
        with stream:
            chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1 and "".join(pieces) == "hello " * 30
    assert all(c.usage is None for c in chunks)


def litellm_warnings[F: Callable[..., Any]](test: F) -> F:
    """Ignore the two pydantic warnings litellm itself silences at import time.

    litellm calls `warnings.filterwarnings("ignore", ...)` for these when imported, but pytest
    restores its own filters (`error`) after each test, so whichever litellm test runs after
    the one that imported it would fail on them: a UserWarning when pydantic builds a schema
    for litellm's `ChatCompletionReasoningItem` TypedDict (a `ReadOnly` item), and a
    deprecation warning from litellm's streaming handler reading `model_fields` and
    `model_computed_fields` on an instance while checking whether the include_usage chunk is empty.
    """
    readonly = "ignore:Item 'summary' on TypedDict class 'ChatCompletionReasoningItem':UserWarning"
    computed = (
        r"ignore:Accessing the 'model_\w+' attribute on the instance is deprecated"
        ":pydantic.warnings.PydanticDeprecatedSince211"
    )
    return pytest.mark.filterwarnings(computed)(pytest.mark.filterwarnings(readonly)(test))


@litellm_warnings
def test_litellm_completion_returns_tool_call(server: ScriptedModelServer) -> None:
    import litellm

    response = litellm.completion(
        model="openai/scripted-model",
        api_base=server.url,
        api_key="x",
        messages=[user(TASK)],
        tools=TOOLS,
    )
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "tool_calls"
    assert message.content == "Writing the requirements."
    (call,) = message.tool_calls
    assert call.id == "call_0_0_0" and call.function.name == "file_editor"
    assert json.loads(call.function.arguments)["file_text"] == "# Requirements for T7\n"
    assert response.usage.total_tokens > 0


@litellm_warnings
def test_litellm_streaming_returns_tool_call(server: ScriptedModelServer) -> None:
    import litellm

    messages = [user(TASK)]
    stream = litellm.completion(
        model="openai/scripted-model",
        api_base=server.url,
        api_key="x",
        messages=messages,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    built = litellm.stream_chunk_builder(chunks, messages=messages)
    assert built is not None
    message = built.choices[0].message
    assert built.choices[0].finish_reason == "tool_calls"
    assert message.content == "Writing the requirements."
    (call,) = message.tool_calls
    assert call.id == "call_0_0_0" and call.function.name == "file_editor"
    assert json.loads(call.function.arguments)["path"] == "/tmp/ws-7/docs/requirements.md"
    assert built.usage.total_tokens > 0


def test_request_log_gets_one_line_per_request(server: ScriptedModelServer, tmp_path: Path) -> None:
    first = [user(TASK)]
    second = [user(TASK), assistant(), user("next")]
    for messages in (first, second):
        status, _, _ = post(f"{server.url}/chat/completions", {"messages": messages})
        assert status == 200
    post(f"{server.url}/chat/completions", b"broken")  # not handled: not logged
    expected = [
        {"conversation": "requirements", "turn": 0, "messages": first, "credential": None},
        {"conversation": "requirements", "turn": 1, "messages": second, "credential": None},
    ]
    assert server.requests == expected
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == expected


def test_stop_interrupts_a_delayed_reply(script: Script) -> None:
    server = ScriptedModelServer(script)
    server.start()
    outcome: list[BaseException | int] = []

    def call() -> None:
        try:
            outcome.append(post(f"{server.url}/chat/completions", {"messages": [user("slow")]})[0])
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert server.wait_for_requests(1, timeout=10)
    started = time.monotonic()
    server.stop()
    server.stop()  # idempotent
    caller.join(timeout=10)
    assert not caller.is_alive() and time.monotonic() - started < 5
    assert len(outcome) == 1 and isinstance(outcome[0], BaseException)


def test_module_entry_point_serves_until_terminated(tmp_path: Path) -> None:
    script_file = tmp_path / "script.json"
    script_file.write_text(json.dumps(SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.llm.scripted", "--script", str(script_file), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()))
        reader.start()
        reader.join(timeout=30)
        assert lines, "no URL line within 30 s"
        prefix = "SCRIPTED MODEL (not a real LLM) listening on http://127.0.0.1:"
        assert lines[0].startswith(prefix) and lines[0].endswith("/v1\n")
        url = lines[0].removeprefix("SCRIPTED MODEL (not a real LLM) listening on ").strip()
        status, _, body = get(url.removesuffix("/v1") + "/health")
        assert (status, json.loads(body)["scripted"]) == (200, True)
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_module_entry_point_rejects_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = subprocess.run(
        [sys.executable, "-m", "agents.llm.scripted", "--script", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert result.returncode == 2 and "bad.json" in result.stderr and not result.stdout

"""A scripted, OpenAI-compatible chat-completions server: a stand-in for a real LLM.

It answers from a script file (see `agents.llm.script`), so the OpenHands SDK and litellm
can run fully offline against 127.0.0.1. Every response says it is scripted: the model is
`scripted-model`, the fingerprint `omoi-scripted-model`, and each response carries the
header `X-Omoi-Scripted-Model: 1`. It answers embeddings requests too
(agents/llm/scripted_embeddings.py).

    python -m agents.llm.scripted --script FILE [--host H] [--port P] [--request-log F]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast

from agents.llm.script import (
    NoScriptMatch,
    Reply,
    Script,
    ScriptError,
    completion,
    reply,
    select,
    stream_events,
)
from agents.llm.scripted_embeddings import embeddings_response

logger = logging.getLogger(__name__)

MODEL_ID = "scripted-model"
FINGERPRINT = "omoi-scripted-model"
MAX_BODY_BYTES = 32 * 1024 * 1024
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
EMBEDDING_PATHS = frozenset({"/v1/embeddings", "/embeddings"})


class ScriptedModelServer:
    """Serves a `Script` over HTTP in a daemon thread; `url` is the OpenAI base URL."""

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        request_log: Path | None = None,
    ) -> None:
        self.script = script
        self.host = host
        self.port = port
        self.request_log = request_log
        self.requests: list[dict[str, Any]] = []
        self._recorded = threading.Condition()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> None:
        """Bind and serve in a daemon thread; returns once the socket is listening."""
        if self._httpd is not None:
            raise RuntimeError("scripted model server already started")
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler, self)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        serve = functools.partial(httpd.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="scripted-model", daemon=True)
        self._thread.start()
        logger.info("scripted model (not a real LLM) listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving, interrupting delayed replies and open connections. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        with self._recorded:
            connections = list(self._connections)
        for conn in connections:  # wake handlers blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Block until at least `count` requests were handled; False on timeout."""
        with self._recorded:
            return self._recorded.wait_for(lambda: len(self.requests) >= count, timeout)

    def _record(self, entry: dict[str, Any]) -> None:
        with self._recorded:
            self.requests.append(entry)
            if self.request_log is not None:
                with self.request_log.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(entry) + "\n")
            self._recorded.notify_all()

    def _track(self, conn: socket.socket, active: bool) -> None:
        with self._recorded:
            if active:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _next_id(self) -> str:
        with self._recorded:
            return f"chatcmpl-scripted-{next(self._ids)}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], app: ScriptedModelServer
    ) -> None:
        self.app = app
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-reply (or stop() cutting them off) are not our errors.
        logger.debug("scripted model: connection from %s ended", client_address, exc_info=True)


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "OmoiScriptedModel/1"
    # Headers and body go out as two writes: with Nagle's algorithm on, a kept-alive
    # client's delayed ACK held every answer back 40 ms.
    disable_nagle_algorithm = True

    @property
    def app(self) -> ScriptedModelServer:
        return cast(_HTTPServer, self.server).app

    def setup(self) -> None:
        super().setup()
        self.app._track(self.connection, True)

    def finish(self) -> None:
        self.app._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status; headers (Authorization!) are never logged.
        logger.debug("%s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("X-Omoi-Scripted-Model", "1")
        super().end_headers()

    def _send_json(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/v1/models", "/models"):
            model = {"id": MODEL_ID, "object": "model", "owned_by": "omoi-scripted"}
            self._send_json(200, {"object": "list", "data": [model]})
        elif path == "/health":
            self._send_json(200, {"status": "ok", "scripted": True})
        else:
            self._not_found()

    def _not_found(self) -> None:
        message = f"scripted model: no route {self.command} {self.path.split('?', 1)[0]}"
        self._send_json(404, _error(message, "not_found"), close=True)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in CHAT_PATHS and path not in EMBEDDING_PATHS:
            self._not_found()
            return
        request = self._read_json()
        if request is None:
            return
        if path in EMBEDDING_PATHS:
            entry: dict[str, Any] = {"conversation": "embeddings", "turn": 0, "messages": []}
            entry.update(input=request.get("input"), credential=self._credential())
            self.app._record(entry)
            self._send_json(*embeddings_response(request))
            return
        messages = request.get("messages")
        if not isinstance(messages, list):
            self._send_json(400, _error("scripted model: 'messages' must be a list", "bad_json"))
            return
        try:
            selection = select(self.app.script, messages)
        except NoScriptMatch as exc:
            logger.warning("%s", exc)
            self._send_json(400, _error(str(exc), "no_script_match"))
            return
        name, turn = selection.conversation_name, selection.turn_index
        self.app._record({"conversation": name, "turn": turn, "messages": messages,
                          "credential": self._credential()})  # fmt: skip
        answer = reply(selection, messages)
        if answer.delay_s > 0 and self.app._stopping.wait(answer.delay_s):
            self.close_connection = True  # shutting down: hang up without an answer
            return
        if request.get("stream") is True:
            options = request.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            self._stream(answer, include_usage=usage)
        else:
            self._send_json(200, completion(answer, self._envelope("chat.completion")))

    def _credential(self) -> str | None:
        # Which credential came, as a digest: whether the key reached the model client
        # is testable, and the key itself is never kept (the request log is a file).
        auth = self.headers.get("Authorization") or ""
        return hashlib.sha256(auth.encode()).hexdigest() if auth else None

    def _read_json(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            message = f"scripted model: bad or too large Content-Length (max {MAX_BODY_BYTES})"
            self._send_json(413 if length > 0 else 400, _error(message, "bad_length"), close=True)
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            self._send_json(400, _error(f"scripted model: invalid JSON body: {exc}", "bad_json"))
            return None
        if not isinstance(body, dict):
            self._send_json(400, _error("scripted model: body must be a JSON object", "bad_json"))
            return None
        return body

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.app._next_id(),
            "object": kind,
            "created": int(time.time()),
            "model": MODEL_ID,
            "system_fingerprint": FINGERPRINT,
        }

    def _stream(self, answer: Reply, *, include_usage: bool) -> None:
        events = stream_events(answer, self._envelope("chat.completion.chunk"), include_usage)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agents.llm.scripted",
        description="Serve a scripted model (NOT a real LLM) on an OpenAI-compatible API.",
    )
    parser.add_argument("--script", type=Path, required=True, help="script JSON file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--request-log", type=Path, default=None, help="JSONL of requests")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        script = Script.load(args.script)
    except ScriptError as exc:
        parser.exit(2, f"error: {exc}\n")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = ScriptedModelServer(
        script, host=args.host, port=args.port, request_log=args.request_log
    )
    server.start()
    try:
        print(f"SCRIPTED MODEL (not a real LLM) listening on {server.url}", flush=True)  # noqa: T201
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

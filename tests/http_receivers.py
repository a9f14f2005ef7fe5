"""A local HTTP server in a thread of its own, on a free loopback port: the base of the
test receivers that stand in for collectors and webhooks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ThreadedReceiver:
    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# (method, path, Authorization header, JSON body or None) -> (status, JSON answer or None)
JsonAnswer = Callable[[str, str, str, Any], tuple[int, Any]]


def json_handler(answer: JsonAnswer) -> type[QuietHandler]:
    """A handler for a JSON REST stand-in: each GET or POST read as JSON and answered with
    what `answer` returns (no body for None)."""

    class Handler(QuietHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            auth = self.headers.get("Authorization", "")
            status, answered = answer(self.command, urlsplit(self.path).path, auth, body)
            data = b"" if answered is None else json.dumps(answered, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

    return Handler

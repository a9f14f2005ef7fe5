"""Where alert notices go in tests: a local webhook receiver that checks each request's
HMAC signature as a real receiver would, and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.http_receivers import QuietHandler, ThreadedReceiver


@dataclass(frozen=True)
class Hook:
    body: dict[str, Any]
    signed: bool  # the signature matched the body, the timestamp and the secret


class WebhookReceiver(ThreadedReceiver):
    """Answers POSTs with the next status of `statuses` (then 200), after `delay_s`."""

    def __init__(self, secret: bytes, statuses: list[int] | None = None) -> None:
        self.secret = secret
        self.statuses = list(statuses or [])
        self.delay_s = 0.0
        self.hooks: list[Hook] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stamp = self.headers.get("X-Omoi-Timestamp", "")
                given = self.headers.get("X-Omoi-Signature", "")
                want = (
                    "sha256="
                    + hmac.new(
                        receiver.secret, stamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                fresh = stamp.isdigit() and abs(time.time() - int(stamp)) < 300
                with receiver._lock:
                    receiver.requests += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if status == 200:
                    signed = fresh and hmac.compare_digest(given, want)
                    with receiver._lock:
                        receiver.hooks.append(Hook(json.loads(body), signed))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.serve(Handler)

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook?token=not-recorded"


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


class _EphemeralController(Controller):
    """aiosmtpd's controller on a port the system picks: its start-up probe must connect
    to the port the server got, not to 0."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@contextmanager
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = _EphemeralController(inbox, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()

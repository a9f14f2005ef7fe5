"""Sending alert notices: HMAC-signed webhooks and mail over SMTP, each attempt recorded.

Deliveries run as tasks of their own, retried with capped exponential backoff, so a
receiver that is down, slow or failing costs the monitor nothing but those tasks: its
checks go on. At most `MAX_IN_FLIGHT` deliveries wait at once; past that a new one is
recorded as dropped rather than queued without end.

The webhook body is the notice as JSON. `X-Omoi-Timestamp` is the send time (Unix
seconds) and `X-Omoi-Signature` is `sha256=<hex>` of HMAC-SHA256 over
`<timestamp>.<body>` with the shared secret, so a receiver can tell a forged or replayed
notice from ours (docs/alerts.md shows the check).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import smtplib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx

from agents.monitor.alert_rules import AlertRules, Route
from schemas.alert import AlertNotice, Delivery

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 100
SIGNATURE_HEADER = "X-Omoi-Signature"
TIMESTAMP_HEADER = "X-Omoi-Timestamp"
# HTTP statuses worth another try: the receiver may take it later.
_RETRY_STATUSES = {408, 425, 429}

Record = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_s: float = 1.0
    cap_s: float = 60.0
    timeout_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    starttls: bool = False


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def public_url(url: str) -> str:
    """The URL as it may be recorded: no credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    retry: bool
    status: int | None = None
    error: str | None = None


class Notifier:
    """Sends each notice to the routes of its severity; `close` waits for what is left."""

    def __init__(
        self,
        rules: AlertRules,
        http: httpx.AsyncClient,
        *,
        webhook_secret: bytes | None,
        smtp: Smtp | None,
        retry: RetryPolicy,
    ) -> None:
        self.rules = rules
        self._http = http
        self._secret = webhook_secret
        self._smtp = smtp
        self._retry = retry
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, notice: AlertNotice, record: Record) -> None:
        """Start delivering `notice`; `record` is told of every attempt."""
        for route in self.rules.routes_for(notice.severity):
            for channel, target, attempt_once in self._channels(route, notice):
                if len(self._tasks) >= MAX_IN_FLIGHT:
                    dropped = Delivery(notice=notice.id, channel=channel, target=target,
                                       attempt=1, ok=False, final=True,
                                       error="dropped: too many deliveries in flight")  # fmt: skip
                    self._spawn(_record_safely(record, dropped))
                    continue
                self._spawn(self._deliver(notice.id, channel, target, attempt_once, record))

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def close(self, grace_s: float) -> None:
        """Let deliveries in flight finish for up to `grace_s`, then cancel them; the
        HTTP client is closed too. Safe to call twice."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d alert deliveries were cut short by shutdown", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        await self._http.aclose()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _channels(
        self, route: Route, notice: AlertNotice
    ) -> list[tuple[str, str, Callable[[], Awaitable[_Outcome]]]]:
        out: list[tuple[str, str, Callable[[], Awaitable[_Outcome]]]] = []
        if route.webhook:
            url = route.webhook
            out.append(("webhook", public_url(url), lambda: self._post(url, notice)))
        if route.email and self._smtp is not None:
            to = list(route.email)
            out.append(("email", ", ".join(to), lambda: self._mail(to, notice)))
        elif route.email:
            log.warning("notice %s not mailed: no SMTP server (OMOI_SMTP_HOST)", notice.id)
        return out

    async def _deliver(
        self,
        notice: str,
        channel: str,
        target: str,
        once: Callable[[], Awaitable[_Outcome]],
        record: Record,
    ) -> None:
        for attempt in range(1, self._retry.attempts + 1):
            started = time.monotonic()
            try:
                outcome = await asyncio.wait_for(once(), self._retry.timeout_s)
            except TimeoutError:
                outcome = _Outcome(False, True, error=f"timed out after {self._retry.timeout_s:g}s")
            final = outcome.ok or not outcome.retry or attempt == self._retry.attempts
            await _record_safely(
                record,
                Delivery(
                    notice=notice,
                    channel=channel,
                    target=target,
                    attempt=attempt,
                    ok=outcome.ok,
                    final=final,
                    status=outcome.status,
                    error=outcome.error,
                    duration_ms=(time.monotonic() - started) * 1000,
                ),
            )
            if final:
                if not outcome.ok:
                    log.warning("alert notice %s not delivered to %s %s: %s",
                                notice, channel, target, outcome.error)  # fmt: skip
                return
            await asyncio.sleep(self._retry.delay(attempt))

    async def _post(self, url: str, notice: AlertNotice) -> _Outcome:
        body = notice.to_json()
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: stamp}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, stamp, body)
        try:
            reply = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _Outcome(False, True, error=f"{type(exc).__name__}: {exc}"[:300])
        if reply.is_success:
            return _Outcome(True, False, status=reply.status_code)
        retry = reply.status_code >= 500 or reply.status_code in _RETRY_STATUSES
        return _Outcome(False, retry, status=reply.status_code, error=f"HTTP {reply.status_code}")

    async def _mail(self, to: list[str], notice: AlertNotice) -> _Outcome:
        assert self._smtp is not None
        return await asyncio.to_thread(_send_mail, self._smtp, to, notice, self._retry.timeout_s)


async def _record_safely(record: Record, delivery: Delivery) -> None:
    try:
        await record(delivery)
    except Exception:
        log.warning("could not record delivery of %s", delivery.notice, exc_info=True)


def mail_for(smtp: Smtp, to: list[str], notice: AlertNotice) -> EmailMessage:
    count = len(notice.alerts)
    msg = EmailMessage()
    msg["Subject"] = (
        f"[Omoi {notice.severity.value.upper()}] {notice.rule}: "
        f"{count} alert{'s' if count != 1 else ''} {notice.status.value}"
    )
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = f"<{notice.id}@omoi>"
    lines = [f"{notice.rule} ({notice.severity.value}) is {notice.status.value}.", ""]
    for alert in notice.alerts:
        lines.append(f"- {alert.summary}")
        lines += [f"    evidence: {ref}" for ref in alert.evidence]
    lines += ["", f"notice {notice.id} at {notice.at.isoformat()}"]
    msg.set_content("\n".join(lines))
    return msg


def _send_mail(smtp: Smtp, to: list[str], notice: AlertNotice, timeout_s: float) -> _Outcome:
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s) as client:
            if smtp.starttls:
                client.starttls()
            if smtp.user and smtp.password:
                client.login(smtp.user, smtp.password)
            client.send_message(mail_for(smtp, to, notice))
    except smtplib.SMTPResponseException as exc:
        # 4xx: try again later; 5xx: it will never take it.
        return _Outcome(False, exc.smtp_code < 500, status=exc.smtp_code,
                        error=f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:300])  # fmt: skip
    except (smtplib.SMTPException, OSError) as exc:
        return _Outcome(False, True, error=f"{type(exc).__name__}: {exc}"[:300])
    return _Outcome(True, False, status=250)

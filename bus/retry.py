"""Riding out passing NATS trouble: retry with backoff, and log an outage once.

During a leader election, a node restart or a reconnect, JetStream calls time out or
find no responders for a few seconds. Every operation the bus retries is safe to repeat:
publishes carry a `Nats-Msg-Id` the stream deduplicates, and compare-and-set writes
recognise their own earlier write (`bus.state`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from bus.errors import Unavailable, is_transient

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.05
BACKOFF_CAP_S = 2.0
# Jitter from a generator of its own, not the random module's shared one, whose state
# seeded code relies on (bus/trace_context.py has the story).
_JITTER = random.Random()


def backoff(failures: int, *, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_CAP_S) -> float:
    """Delay before retry number `failures` (1-based): doubling, capped, with jitter."""
    delay: float = min(cap, first * 2.0 ** max(failures - 1, 0))
    return delay * (0.5 + _JITTER.random() / 2)


class Outage:
    """Logs a run of failures of one thing once when it starts and once when it ends,
    instead of once per failed attempt."""

    def __init__(self, what: str, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]):
        self.what = what
        self.log = logger
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> int:
        """Record a failure; returns how many in a row."""
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s unavailable (%s); retrying", self.what, _describe(exc))
        return self.failures

    def ok(self) -> None:
        if self.since is not None:
            self.log.info(
                "%s available again after %.1fs (%d retries)",
                self.what,
                time.monotonic() - self.since,
                self.failures,
            )
        self.since = None
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None


async def retrying[T](
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    patience_s: float | None,
    outage: Outage | None = None,
    on_retry: Callable[[BaseException], Awaitable[None]] | None = None,
) -> T:
    """`call()`, retried with backoff while it fails with passing trouble.

    Gives up with `Unavailable` after `patience_s` (None: never; cancellation still
    ends it). Other errors propagate at once. Failures are reported to `outage`, which
    may be shared by many operations so that one outage is logged once. `on_retry`
    runs before each retry.
    """
    if outage is None:
        outage = Outage(what, log)
    failures = 0
    deadline = None if patience_s is None else time.monotonic() + patience_s
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            outage.failed(exc)
            log.debug("%s failed (%r); retry %d", what, exc, failures)
            if deadline is not None and time.monotonic() >= deadline:
                raise Unavailable(f"{what}: still failing after {patience_s:g}s: {exc!r}") from exc
            await asyncio.sleep(backoff(failures))
            if on_retry is not None:
                await on_retry(exc)
            continue
        if failures:
            outage.ok()
        return result


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Patience:
    """How long a bus keeps retrying through passing trouble, shared by its operations so
    an outage is logged once for all of them."""

    def __init__(self, patience_s: float | None, outage: Outage | None = None) -> None:
        self.patience_s = patience_s
        self.outage = outage or Outage("NATS", log)

    async def run[T](
        self,
        call: Callable[[], Awaitable[T]],
        what: str,
        on_retry: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> T:
        return await retrying(
            call, what, patience_s=self.patience_s, outage=self.outage, on_retry=on_retry
        )

"""The bus package's exceptions, and what counts as passing trouble.

Handlers say what should happen to a message by raising `Retry`, `Reject` or `Abandon`.
Those are decisions, not errors, so they do not derive from `BusError`;
`bus.settle.settle` turns them into ack/nak/term in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

# JetStream API error codes that mean "not now" rather than "never": the cluster or the
# stream has no leader yet, or the server is still catching up. (A 500 in general is not
# one: "ack policy can not be updated" is a 500 too.)
_TRANSIENT_API_CODES = frozenset({503})
_TRANSIENT_ERR_CODES = frozenset(
    {
        10005,  # no suitable peers for placement (a node is down or not joined yet)
        10008,  # JetStream cluster not available
        10009,  # JetStream cluster can not handle request (not the leader, mid-election)
        10023,  # insufficient resources (often a node still recovering)
        10074,  # cluster peer not member
        10077,  # JetStream not enabled for account (during server start)
    }
)


class BusError(Exception):
    """Root of everything the bus package raises."""


class ServerStartError(BusError):
    """The embedded nats-server did not come up."""


class ConflictError(BusError):
    """A compare-and-set update kept losing to concurrent writers."""


class Unavailable(BusError):
    """NATS could not be reached, or kept failing with passing trouble (leader election,
    reconnect, no answer) for longer than the bus was told to wait."""


class NoAnswer(BusError):
    """A request got no reply: nobody serves the subject, or nobody answered in time."""


class NotProvisioned(BusError):
    """A stream or bucket of the Omoi topology is not on the server (yet): `omoi up`, or
    an agent started with the topology, creates it."""


class AuthError(BusError):
    """The server refused this client's credentials (none, unknown or revoked), or they
    could not be loaded. Retrying does not help: the message says what to fix."""


class HandlerOutcome(Exception):
    """Base for the decisions a message handler can raise."""


class Retry(HandlerOutcome):
    """Hand the message back to be delivered again after `delay` seconds."""

    def __init__(self, reason: str, delay: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class Reject(HandlerOutcome):
    """The message can never be processed: dead-letter it with the reason and drop it."""

    def __init__(self, reason: str, category: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class Abandon(HandlerOutcome):
    """Leave the message alone (no ack): this delivery is stale and another one owns it."""


def bus_error(exc: Exception, what: str) -> BusError:
    """nats-py's `exc` as the bus error it means, for callers outside `bus/`."""
    if isinstance(exc, BusError):
        return exc
    if isinstance(exc, nats.errors.AuthorizationError):
        return AuthError(f"{what}: the server refused the credentials ({exc})")
    if isinstance(exc, nats.js.errors.NotFoundError):
        return NotProvisioned(f"{what}: {exc}")
    return Unavailable(f"{what}: {str(exc) or type(exc).__name__}")


@contextmanager
def as_bus_errors(what: str) -> Iterator[None]:
    """Let NATS trouble out of a block as bus errors (see `bus_error`)."""
    try:
        yield
    except (nats.errors.Error, OSError) as exc:
        raise bus_error(exc, what) from exc


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is trouble that passes: retrying the same operation later can work.

    A leader election, a node restarting or a reconnect show up as timeouts, "no
    responders", 503s and a few 500s; none of them says the operation itself is wrong.
    """
    if isinstance(exc, Unavailable | asyncio.TimeoutError):
        return True
    if isinstance(
        exc,
        nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.StaleConnectionError
        | nats.errors.OutboundBufferLimitError
        | nats.errors.FlushTimeoutError
        | nats.js.errors.NoStreamResponseError
        | nats.js.errors.ServiceUnavailableError,
    ):
        return True
    if isinstance(exc, nats.js.errors.APIError):
        if getattr(exc, "err_code", None) in _TRANSIENT_ERR_CODES:
            return True
        if isinstance(exc, nats.js.errors.NotFoundError | nats.js.errors.BadRequestError):
            return False
        return getattr(exc, "code", None) in _TRANSIENT_API_CODES
    return False

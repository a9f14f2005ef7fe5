"""The bus package's exceptions.

Handlers signal what should happen to a message by raising one of the `HandlerOutcome`
subclasses; `bus.settle.settle` turns that into ack/nak/term in one place.
"""

from __future__ import annotations


class BusError(Exception):
    """Root of everything the bus package raises."""


class ServerStartError(BusError):
    """The embedded nats-server did not come up."""


class ConflictError(BusError):
    """A compare-and-set update kept losing to concurrent writers."""


class HandlerOutcome(BusError):
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

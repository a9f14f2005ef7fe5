"""The one place where a JetStream message is acked, nak'd, terminated or dead-lettered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from bus.errors import Abandon, Reject, Retry

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]
DeadLetter = Callable[[Msg, str, str], Awaitable[None]]

# An unexpected error (a bug, a lost connection mid-handler) is retried this many
# deliveries before the message is dead-lettered instead of looping forever.
MAX_UNEXPECTED_DELIVERIES = 5


def _delivery(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered or 1)
    except Exception:  # noqa: BLE001 - a core message has no metadata
        return 1


async def settle(msg: Msg, handler: Handler, dead_letter: DeadLetter) -> None:
    """Run `handler` on `msg` and settle the message from the outcome.

    - returns normally: ack
    - `Retry(delay)`: nak with that delay
    - `Reject(reason)`: dead-letter copy with the reason, then term
    - `Abandon`: nothing (another delivery owns the message)
    - anything else: logged and nak'd with backoff; dead-lettered after
      `MAX_UNEXPECTED_DELIVERIES` deliveries.
    Cancellation propagates without settling, so the server redelivers the message.
    """
    try:
        await handler(msg)
    except Retry as exc:
        await msg.nak(delay=exc.delay if exc.delay > 0 else None)
    except Reject as exc:
        await _reject(msg, exc.reason, exc.category, dead_letter)
    except Abandon:
        pass
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        delivery = _delivery(msg)
        log.exception("handler failed on %s (delivery %d)", msg.subject, delivery)
        if delivery >= MAX_UNEXPECTED_DELIVERIES:
            await _reject(msg, f"handler kept failing: {exc!r}", "handler_error", dead_letter)
        else:
            await msg.nak(delay=min(2.0**delivery, 30.0))
    else:
        await msg.ack()


async def _reject(msg: Msg, reason: str, category: str, dead_letter: DeadLetter) -> None:
    try:
        await dead_letter(msg, reason, category)
    except Exception:
        # Without the dead-letter copy, dropping the message would lose it.
        log.exception("dead-lettering %s failed; leaving it for redelivery", msg.subject)
        await msg.nak(delay=5.0)
        return
    await msg.term()

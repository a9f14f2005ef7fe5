"""The one place where a JetStream message is acked, nak'd, terminated or kept alive.

A test fails if any other module calls `ack`, `nak`, `term` or `in_progress`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bus.delivery import Delivery
from bus.errors import Abandon, Reject, Retry, is_transient
from bus.log_context import logging_context
from bus.retry import backoff
from bus.trace_context import delivery_span

log = logging.getLogger(__name__)

Handler = Callable[[Delivery], Awaitable[None]]
DeadLetter = Callable[[Delivery, str, str], Awaitable[None]]

# An unexpected error (a bug) is retried this many deliveries before the message is
# dead-lettered instead of looping forever. Passing NATS trouble never counts.
MAX_UNEXPECTED_DELIVERIES = 5


async def settle(delivery: Delivery, handler: Handler, dead_letter: DeadLetter) -> None:
    """Run `handler` on `delivery` and settle the message from the outcome.

    - returns normally: ack
    - `Retry(delay)`: nak with that delay
    - `Reject(reason)`: dead-letter copy with the reason, then term
    - `Abandon`: nothing (another delivery owns the message)
    - passing NATS trouble (`bus.errors.is_transient`): nak with backoff, as often as
      it takes
    - anything else: logged and nak'd with backoff; dead-lettered after
      `MAX_UNEXPECTED_DELIVERIES` deliveries.
    - cancelled (the consumer stopped and its grace ran out): handed back at once.
    """
    # What the handler binds (ticket, task) is this delivery's only: a group's deliveries
    # are settled one after another in one asyncio task.
    with logging_context(subject=delivery.subject, **delivery_span(delivery.headers)):
        try:
            await handler(delivery)
        except Retry as exc:
            await nak(delivery, exc.delay)
        except Reject as exc:
            await _reject(delivery, exc.reason, exc.category, dead_letter)
        except Abandon:
            pass
        except asyncio.CancelledError:
            await asyncio.shield(hand_back(delivery))
            raise
        except Exception as exc:
            if is_transient(exc):
                log.info("handler on %s hit passing trouble (%r); retrying", delivery.subject, exc)
                await nak(delivery, backoff(delivery.number, first=0.5, cap=10.0))
                return
            log.exception("handler failed on %s (delivery %d)", delivery.subject, delivery.number)
            if delivery.number >= MAX_UNEXPECTED_DELIVERIES:
                await _reject(
                    delivery, f"handler kept failing: {exc!r}", "handler_error", dead_letter
                )
            else:
                await nak(delivery, min(2.0**delivery.number, 30.0))
        else:
            await ack(delivery)


async def ack(delivery: Delivery) -> None:
    """Done with the message. On an ack-all consumer this settles every delivery before
    it too. A lost ack only means a redelivery, which handlers treat as a no-op."""
    await _quietly(delivery, "ack", delivery.msg.ack())


async def nak(delivery: Delivery, delay: float = 0.0) -> None:
    await _quietly(delivery, "nak", delivery.msg.nak(delay=delay if delay > 0 else None))


async def hand_back(delivery: Delivery) -> None:
    """Give a message we will not handle back to the server, for any consumer to take."""
    await nak(delivery)


async def keep_alive(delivery: Delivery) -> None:
    """Tell the server the message is still being worked on (resets its ack wait)."""
    await _quietly(delivery, "in_progress", delivery.msg.in_progress())


async def term(delivery: Delivery) -> None:
    await _quietly(delivery, "term", delivery.msg.term())


async def _reject(delivery: Delivery, reason: str, category: str, dead_letter: DeadLetter) -> None:
    try:
        await dead_letter(delivery, reason, category)
    except Exception:
        # Without the dead-letter copy, dropping the message would lose it.
        log.exception("dead-lettering %s failed; leaving it for redelivery", delivery.subject)
        await nak(delivery, 5.0)
        return
    await term(delivery)


async def _quietly(delivery: Delivery, what: str, call: Awaitable[None]) -> None:
    try:
        await call
    except Exception as exc:  # noqa: BLE001 - the server redelivers what it did not hear
        log.debug("%s of %s (seq %d) failed: %r", what, delivery.subject, delivery.seq, exc)

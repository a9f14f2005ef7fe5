"""`Bus.serve` on a real nats-server: one request at a time by default, several at once with
`concurrency` (a slow responder does not hold up the rest), and a responder that fails
answers nothing but keeps serving."""

from __future__ import annotations

import asyncio

import pytest

from bus import Bus, NoAnswer, Request

pytestmark = pytest.mark.integration


async def test_concurrent_requests_are_answered_together_and_a_failure_stays_alone(
    bus: Bus,
) -> None:
    inside = 0
    all_in = asyncio.Event()

    async def slow(request: Request) -> bytes:
        nonlocal inside
        if request.data == b"boom":
            raise RuntimeError("a provider fell over")
        inside += 1
        if inside == 4:
            all_in.set()
        # Each waits until all four are in: served one at a time, none would finish.
        await asyncio.wait_for(all_in.wait(), 5)
        return b"ok " + request.data

    sub = await bus.serve("test.serve.slow", slow, concurrency=4)
    try:
        answers = await asyncio.gather(
            *(bus.request("test.serve.slow", str(n).encode(), 10) for n in range(4))
        )
        assert sorted(answers) == [b"ok 0", b"ok 1", b"ok 2", b"ok 3"]
        with pytest.raises(NoAnswer):
            await bus.request("test.serve.slow", b"boom", 0.5)
        assert await bus.request("test.serve.slow", b"4", 5) == b"ok 4"
    finally:
        await sub.unsubscribe()

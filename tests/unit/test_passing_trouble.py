"""What counts as passing NATS trouble, and how the bus rides it out."""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
import pytest

from bus.errors import Unavailable, is_transient
from bus.retry import Outage, retrying


def _raised(code: int, err_code: int) -> nats.js.errors.APIError:
    try:
        nats.js.errors.APIError.from_error({"code": code, "err_code": err_code, "description": "x"})
    except nats.js.errors.APIError as exc:
        return exc
    raise AssertionError("from_error raises")


@pytest.mark.parametrize(
    "exc",
    [
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionReconnectingError(),
        nats.js.errors.NoStreamResponseError(),
        TimeoutError(),
        Unavailable("x"),
        _raised(503, 10008),  # cluster not available
        _raised(500, 10009),  # not the leader, mid-election
        _raised(400, 10005),  # no peers for placement: a node is down
    ],
    ids=repr,
)
def test_passing_trouble(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _raised(404, 10059),  # stream not found
        _raised(400, 10071),  # wrong last sequence: a real conflict
        _raised(500, 10012),  # ack policy can not be updated
        nats.js.errors.KeyNotFoundError(),
        nats.errors.ConnectionClosedError(),
        ValueError("bug"),
    ],
    ids=repr,
)
def test_not_passing_trouble(exc: BaseException) -> None:
    assert not is_transient(exc)


async def test_retrying_rides_out_trouble_and_logs_one_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise nats.errors.TimeoutError()
        return "ok"

    outage = Outage("test", logging.getLogger("test.outage"))
    with caplog.at_level("INFO", logger="test.outage"):
        assert await retrying(flaky, "flaky", patience_s=None, outage=outage) == "ok"
    assert calls == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "test.outage"]
    assert len(lines) == 2, lines
    assert "unavailable" in lines[0] and "available again" in lines[1]


async def test_retrying_gives_up_after_its_patience_and_passes_real_errors_at_once() -> None:
    async def down() -> None:
        raise nats.errors.NoRespondersError()

    with pytest.raises(Unavailable, match="still failing"):
        await retrying(down, "down", patience_s=0.2)

    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await retrying(broken, "broken", patience_s=None)
    assert calls == 1

"""Schemathesis against the served OpenAPI: whatever a client sends, never a 5xx.

The gateway runs on a real socket in this test's event loop, next to a real planner (so
valid submissions and commands get real answers); schemathesis drives it from a thread,
signed in as an admin, so every operation is reached past its guard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from agents.settings import Settings
from bus import Bus
from gateway.app import create_app
from gateway.context import GatewayOptions
from gateway.serve import serving
from schemas.token import Role
from tests.integration.test_gateway import duck_reader, make_token

pytestmark = pytest.mark.integration

# Per operation and generation mode mix; about 10 s in all (500 each also found nothing).
EXAMPLES = 30
# Event streams never end: schemathesis keeps the first event (ours is `ready`) and moves on.
CONFIG = {"max-stream-events": 1, "request-timeout": 10}


def fuzz_operation(operation: Any, base_url: str, headers: dict[str, str]) -> tuple[int, int]:
    """Run one operation's examples; returns how many calls were made, and how many of
    them got past authentication."""
    calls = signed_in = 0
    # Valid requests and invalid ones (wrong types, missing fields, broken constraints).
    cases = st.one_of(*(operation.as_strategy(mode) for mode in GenerationMode))

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=cases)
    def check(case: Any) -> None:
        nonlocal calls, signed_in
        calls += 1
        response = case.call(base_url=base_url, headers=headers)
        signed_in += response.status_code != 401
        case.validate_response(response, checks=[not_a_server_error])

    check()
    return calls, signed_in


def fuzz(base_url: str, token: str) -> dict[str, tuple[int, int]]:
    """Every operation, a bounded number of examples each; returns calls per operation."""
    config = schemathesis.Config.from_dict(CONFIG)
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", config=config)
    headers = {"Authorization": f"Bearer {token}"}
    return {
        operation.label: fuzz_operation(operation, base_url, headers)
        for operation in (result.ok() for result in schema.get_all_operations())
    }


async def test_no_input_makes_a_server_error(
    settings: Settings, bus: Bus, start_planner: Callable[[], Awaitable[Any]]
) -> None:
    await start_planner()
    # `/agents` waits for a pause after the last agent's answer: a short one here, where
    # every call would otherwise wait the default.
    options = GatewayOptions(request_timeout_s=2.0, keepalive_s=1.0, discovery_stall_s=0.05)
    app = create_app(settings=settings, bus=bus, reader=duck_reader(), options=options)
    token = await make_token(bus, Role.ADMIN)
    async with serving(app, grace_s=1.0) as url:
        calls = await asyncio.to_thread(fuzz, url, token)
    assert len(calls) >= 20, calls  # every documented operation was exercised
    assert all(n >= 1 for n, _ in calls.values())
    # The token reached every operation (an operation that always said 401 went untested).
    assert all(signed_in >= 1 for _, signed_in in calls.values()), calls

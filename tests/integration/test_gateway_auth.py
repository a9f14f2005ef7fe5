"""The gateway's trust boundary against a real nats-server and planner: tokens, roles,
sessions, CSRF, rate limits, and what each route kind answers for each role."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from agents.settings import Settings
from bus import Bus
from bus import constants as c
from gateway.app import create_app
from gateway.context import GatewayOptions
from gateway.serve import serving
from schemas.common import utcnow
from schemas.token import ApiToken, Role, mint
from tests.helpers import wait_until
from tests.integration.test_gateway import assert_problem, bearer, duck_reader, make_token

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
PROBES = ("/health", "/ready", "/api/v1/health", "/api/v1/ready")
# Signed by their sender instead of a token: a wrong signature is a 401 too.
WEBHOOKS = ("/api/v1/webhooks/github", "/api/v1/webhooks/jira")


@pytest.fixture
async def base_url(settings: Settings, bus: Bus, start_planner: Start) -> AsyncIterator[str]:
    await start_planner()
    options = GatewayOptions(request_timeout_s=2.0, keepalive_s=0.3)
    app = create_app(settings=settings, bus=bus, reader=duck_reader(), options=options)
    async with serving(app) as url:
        yield url


@pytest.fixture
async def anon(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield client


def assert_unauthorized(response: httpx.Response, invalid: bool = True) -> dict[str, Any]:
    body = assert_problem(response, 401)
    assert body["type"] == "urn:omoi:problem:unauthorized"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) is invalid
    return body


async def test_api_routes_need_a_valid_token_and_the_probes_do_not(
    anon: httpx.AsyncClient, bus: Bus
) -> None:
    for path in PROBES:
        assert (await anon.get(path)).status_code == 200, path
    # Every kind of route: reads, SSE, SQL, submissions, commands, tokens.
    routes = [
        ("GET", "/api/v1/tickets", None),
        ("GET", "/api/v1/agents", None),
        ("GET", "/api/v1/events/stream", None),
        ("POST", "/api/v1/sql", {"sql": "SELECT 1"}),
        ("POST", "/api/v1/tickets", {"title": "nope"}),
        ("POST", "/api/v1/tickets/x/cancel", None),
        ("GET", "/api/v1/tokens", None),
    ]
    for method, path, body in routes:
        missing = assert_unauthorized(await anon.request(method, path, json=body), invalid=False)
        assert "Authorization: Bearer" in missing["detail"]

    revoked = await make_token(bus, Role.ADMIN)
    expired, record = mint(Role.ADMIN, ttl_s=60, now=utcnow() - timedelta(hours=1))
    assert await (await bus.bucket(c.TOKENS_BUCKET, ApiToken)).create(record.id, record)
    good = await make_token(bus, Role.VIEWER)
    unknown = "omoi_abcdefabcdef_" + "A" * 43
    for header, why in [
        ("Basic dXNlcjpwYXNz", "must be `Bearer <token>`"),
        ("Bearer", "must be `Bearer <token>`"),
        ("Bearer not-a-token", "not an Omoi token"),
        (f"Bearer {good[:-1]}", "not an Omoi token"),
        (
            f"Bearer {good[:-2]}xx" if not good.endswith("xx") else f"Bearer {good[:-2]}yy",
            "unknown",
        ),
        (f"Bearer {unknown}", "unknown or revoked"),
        (f"Bearer {expired}", "expired"),
    ]:
        r = await anon.get("/api/v1/tickets", headers={"Authorization": header})
        assert why in assert_unauthorized(r)["detail"], header
    assert (await anon.get("/api/v1/tickets", headers=bearer(good))).status_code == 200
    # Lower-case scheme is the same scheme (RFC 9110).
    assert (
        await anon.get("/api/v1/agents", headers={"Authorization": f"bearer {good}"})
    ).is_success

    # A revoked token stops working within a second.
    assert (await anon.get("/api/v1/tickets", headers=bearer(revoked))).status_code == 200
    revoked_id = revoked.split("_")[1]
    await (await bus.bucket(c.TOKENS_BUCKET, ApiToken)).delete(revoked_id)

    async def refused() -> bool:
        return (await anon.get("/api/v1/tickets", headers=bearer(revoked))).status_code == 401

    await wait_until(refused, timeout=1.0, interval=0.02)
    r = await anon.get("/api/v1/tickets", headers=bearer(revoked))
    assert "unknown or revoked" in assert_unauthorized(r)["detail"]


async def test_each_role_gets_what_it_may_and_a_403_for_the_rest(
    anon: httpx.AsyncClient, bus: Bus
) -> None:
    tokens = {role: await make_token(bus, role, name=role.value) for role in Role}
    # Kind of route, the least role that may use it, the request.
    table: list[tuple[str, Role, str, str, Any]] = [
        ("read", Role.VIEWER, "GET", "/api/v1/tickets", None),
        ("read", Role.VIEWER, "GET", "/api/v1/agents", None),
        ("sql", Role.VIEWER, "POST", "/api/v1/sql", {"sql": "SELECT 1 AS one"}),
        ("page", Role.VIEWER, "GET", "/", None),
        ("fragment", Role.VIEWER, "GET", "/fragments/agents", None),
        ("submit", Role.SUBMITTER, "POST", "/api/v1/tickets", {"title": "by role"}),
        ("command", Role.OPERATOR, "POST", "/api/v1/tickets/none/cancel", None),
        ("command", Role.OPERATOR, "POST", "/api/v1/tickets/none/move", {"phase": "design"}),
        ("command", Role.OPERATOR, "POST", "/api/v1/tickets/none/priority", {"priority": "high"}),
        ("command", Role.OPERATOR, "POST", "/api/v1/tickets/none/tasks/t/cancel", None),
        ("tokens", Role.ADMIN, "GET", "/api/v1/tokens", None),
        ("tokens", Role.ADMIN, "POST", "/api/v1/tokens", {"role": "viewer"}),
        ("tokens", Role.ADMIN, "DELETE", "/api/v1/tokens/aaaaaaaaaaaa", None),
    ]
    for kind, least, method, path, body in table:
        for role, token in tokens.items():
            r = await anon.request(method, path, json=body, headers=bearer(token))
            label = f"{kind} {method} {path} as {role}"
            if role.at_least(least):
                # Past the guard: whatever the route itself says (a 404 for a missing ticket).
                assert r.status_code not in (401, 403), f"{label}: {r.text}"
            else:
                problem = assert_problem(r, 403)
                assert problem["type"] == "urn:omoi:problem:insufficient-role", label
                assert f"needs the {least} role" in problem["detail"], label
    # Server-sent events too: a viewer reads the stream (first a `ready`), nobody else gets in.
    async with anon.stream(
        "GET", "/api/v1/events/stream", headers=bearer(tokens[Role.VIEWER])
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            assert line == "event: ready"
            break


async def test_only_operators_and_admins_submit_with_the_right_to_run_commands(
    anon: httpx.AsyncClient, bus: Bus
) -> None:
    shell = [{"name": "a", "phase": "design", "command": "true"}]
    for role, status in [(Role.SUBMITTER, 403), (Role.OPERATOR, 201), (Role.ADMIN, 201)]:
        body = {"id": f"shell-{role}", "title": "runs a command", "tasks": shell}
        r = await anon.post(
            "/api/v1/tickets", json=body, headers=bearer(await make_token(bus, role))
        )
        assert r.status_code == status, (role, r.text)
        if status == 403:  # the planner's refusal: the plain intake subject grants no rights
            problem = assert_problem(r, 403)
            assert problem["category"] == "forbidden" and "shell commands" in problem["detail"]
    # A submitter's ticket without commands is a ticket.
    plain = {"id": "plain-1", "title": "words only"}
    r = await anon.post(
        "/api/v1/tickets", json=plain, headers=bearer(await make_token(bus, Role.SUBMITTER))
    )
    assert r.status_code == 201, r.text


async def test_an_event_stream_ends_when_its_token_is_revoked(
    anon: httpx.AsyncClient, bus: Bus
) -> None:
    token = await make_token(bus, Role.VIEWER)
    async with anon.stream("GET", "/api/v1/events/stream", headers=bearer(token)) as r:
        lines = r.aiter_lines()
        assert await anext(lines) == "event: ready"
        await (await bus.bucket(c.TOKENS_BUCKET, ApiToken)).delete(token.split("_")[1])
        async with asyncio.timeout(3):  # checked every second; ends, not just goes quiet
            rest = [line async for line in lines]
    assert not any(line.startswith("event: ") for line in rest), rest
    assert_unauthorized(await anon.get("/api/v1/events/stream", headers=bearer(token)))


async def test_an_oversized_authorization_header_is_a_clear_problem(
    anon: httpx.AsyncClient, bus: Bus
) -> None:
    token = await make_token(bus, Role.VIEWER)
    huge = {"Authorization": "Bearer " + "x" * 5000}
    problem = assert_problem(await anon.get("/api/v1/tickets", headers=huge), 431)
    assert "at most 4096" in problem["detail"]
    # Bigger than the HTTP server reads at all: refused there, and nothing breaks.
    giant = await anon.get("/api/v1/tickets", headers={"Authorization": "Bearer " + "x" * 70_000})
    assert 400 <= giant.status_code < 500
    assert (await anon.get("/api/v1/tickets", headers=bearer(token))).status_code == 200
    # A probe ignores credentials it does not need, however odd.
    assert (await anon.get("/health", headers=huge)).status_code == 200


async def test_over_the_limit_is_a_429_with_retry_after_per_token_and_per_address(
    settings: Settings, bus: Bus
) -> None:
    options = GatewayOptions(token_rate_limit=("minute", 3), address_rate_limit=("minute", 2))
    app = create_app(settings=settings, bus=bus, options=options)
    first, second = await make_token(bus, Role.VIEWER), await make_token(bus, Role.VIEWER)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(3):
            assert (await client.get("/api/v1/tickets", headers=bearer(first))).status_code == 200
        limited = await client.get("/api/v1/tickets", headers=bearer(first))
        problem = assert_problem(limited, 429)
        assert problem["type"] == "urn:omoi:problem:rate-limited"
        assert "per minute for this token" in problem["detail"]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["ratelimit-limit"] == "3"
        # Per token: another token from the same address is not held back.
        assert (await client.get("/api/v1/tickets", headers=bearer(second))).status_code == 200
        # Before authentication, per address: two failed attempts, then 429.
        for _ in range(2):
            assert_problem(await client.get("/api/v1/tickets"), 401)
        anonymous = await client.get("/api/v1/tickets")
        assert "for this address" in assert_problem(anonymous, 429)["detail"]
        assert int(anonymous.headers["retry-after"]) >= 1
        # Probes are never limited.
        for _ in range(5):
            assert (await client.get("/health")).status_code == 200


async def test_openapi_declares_the_bearer_scheme_on_every_protected_operation(
    anon: httpx.AsyncClient,
) -> None:
    schema = (await anon.get("/schema/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert schemes["session"] == {**schemes["session"], "type": "apiKey", "in": "cookie"}
    protected = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            requirement = operation.get("security") or []
            if path in PROBES:
                assert not requirement, f"{method} {path} is a probe: no token"
                continue
            if path in WEBHOOKS:
                assert not requirement and "401" in operation["responses"], path
                continue
            assert {"bearer": []} in requirement, f"{method} {path} declares no bearer security"
            assert "401" in operation["responses"], f"{method} {path}"
            protected += 1
    assert protected >= 20
    # The sign-in forms are not API.
    assert "/login" not in schema["paths"] and "/logout" not in schema["paths"]

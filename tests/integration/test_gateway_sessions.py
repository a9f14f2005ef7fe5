"""Signing in to the dashboard over plain HTTP: the cookie's attributes, CSRF, sign-in links,
signing out, and a revoked token ending its sessions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from agents.settings import Settings
from bus import Bus
from bus import constants as c
from gateway.app import create_app
from gateway.context import GatewayOptions
from gateway.serve import serving
from schemas.token import ApiToken, Role, mint
from tests.helpers import wait_until
from tests.integration.test_gateway import assert_problem, make_token

pytestmark = pytest.mark.integration

CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture
async def browser_like(settings: Settings, bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies and does not follow redirects, like a form post shows."""
    app = create_app(settings=settings, bus=bus, options=GatewayOptions(request_timeout_s=2))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


async def sign_in_form(client: httpx.AsyncClient, next_path: str = "/") -> str:
    page = await client.get("/login", params={"next": next_path})
    assert page.status_code == 200 and 'id="sign-in"' in page.text
    found = CSRF_INPUT.search(page.text)
    assert found, "the form carries a CSRF token"
    return found[1]


def session_set_cookie(response: httpx.Response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    found = [v for v in cookies if v.startswith("omoi_session=")]
    assert found, cookies
    return found[0]


async def test_sign_in_with_a_token_sets_a_strict_http_only_cookie_that_reads_only(
    browser_like: httpx.AsyncClient, bus: Bus
) -> None:
    client = browser_like
    # Not signed in: the dashboard sends the browser to sign in, and back afterwards.
    r = await client.get("/tickets/T-1")
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=/tickets/T-1")
    assert_problem(await client.get("/fragments/agents"), 401)  # its script goes to sign in
    token = await make_token(bus, Role.VIEWER, name="alice")
    csrf = await sign_in_form(client, "/")
    # A form without the CSRF token is refused before the token is even looked at.
    refused = await client.post("/login", data={"token": token, "next": "/"})
    assert assert_problem(refused, 403)["type"] == "urn:omoi:problem:csrf-failed"
    assert "omoi_session" not in client.cookies
    wrong = await client.post("/login", data={"token": "omoi_nope", "_csrf_token": csrf})
    assert wrong.status_code == 401 and "not an Omoi token" in wrong.text

    ok = await client.post("/login", data={"token": token, "next": "/", "_csrf_token": csrf})
    assert (ok.status_code, ok.headers["location"]) == (303, "/")
    cookie = session_set_cookie(ok).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http here; see the secure_cookies option
    page = await client.get("/")
    assert page.status_code == 200 and 'data-role="viewer"' in page.text and "alice" in page.text
    # The session reads the API (the dashboard's event stream does) but changes nothing.
    assert (await client.get("/api/v1/tickets")).status_code == 200
    change = await client.post("/api/v1/tickets", json={"title": "via cookie"})
    assert "only reads" in assert_problem(change, 401)["detail"]

    # Signing out needs the CSRF token too; then the cookie is gone.
    csrf = CSRF_INPUT.search(page.text)
    assert csrf
    assert_problem(await client.post("/logout"), 403)
    out = await client.post("/logout", data={"_csrf_token": csrf[1]})
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert (await client.get("/")).status_code == 303


async def test_a_sign_in_link_works_once_and_revoking_the_token_ends_its_sessions(
    browser_like: httpx.AsyncClient, bus: Bus
) -> None:
    client = browser_like
    admin = await make_token(bus, Role.ADMIN, name="local admin")
    tokens = await bus.bucket(c.TOKENS_BUCKET, ApiToken)
    link, record = mint(Role.ADMIN, ttl_s=600, signs_in_as=admin.split("_")[1])
    assert await tokens.create(record.id, record)
    # A link is no bearer token.
    r = await client.get("/api/v1/tickets", headers={"Authorization": f"Bearer {link}"})
    assert "sign-in link" in assert_problem(r, 401)["detail"]

    first = await client.get("/login/link", params={"token": link})
    assert (first.status_code, first.headers["location"]) == (303, "/")
    assert "samesite=strict" in session_set_cookie(first).lower()
    page = await client.get("/")
    assert page.status_code == 200 and 'data-role="admin"' in page.text
    client.cookies.clear()
    again = await client.get("/login/link", params={"token": link})
    assert again.status_code == 401 and "used already" in again.text
    assert await tokens.value(record.id) is None  # used links are removed

    # Sign in again with the token itself, then revoke it: the session ends with it.
    csrf = await sign_in_form(client)
    ok = await client.post("/login", data={"token": admin, "_csrf_token": csrf})
    assert ok.status_code == 303
    assert (await client.get("/")).status_code == 200
    await tokens.delete(admin.split("_")[1])

    async def signed_out() -> bool:
        return (await client.get("/")).status_code == 303

    await wait_until(signed_out, timeout=1.0, interval=0.02)


async def test_secure_cookies_when_configured(settings: Settings, bus: Bus) -> None:
    options = GatewayOptions(secure_cookies=True)
    app = create_app(settings=settings, bus=bus, options=options)
    token = await make_token(bus, Role.VIEWER)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        csrf = await sign_in_form(client)
        # The CSRF cookie is Secure as well, so a client over plain http cannot return it;
        # hand it back by hand, as a browser on https would.
        page = await client.get("/login")
        set_csrf = page.headers.get("set-cookie") or ""
        assert "secure" in set_csrf.lower() and "httponly" in set_csrf.lower()
        cookie = set_csrf.split(";", 1)[0]
        csrf_value = CSRF_INPUT.search(page.text)
        assert csrf_value and csrf
        ok = await client.post(
            "/login",
            data={"token": token, "_csrf_token": csrf_value[1]},
            headers={"Cookie": cookie},
        )
        assert ok.status_code == 303, ok.text
        assert "; secure" in session_set_cookie(ok).lower()

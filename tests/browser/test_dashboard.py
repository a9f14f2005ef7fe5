"""The dashboard in a real (headless) Chromium: signing in, a ticket that appears and finishes
without a reload, a CSRF-protected form, and a form post without its CSRF token refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from agents.settings import Settings
from bus import Bus
from gateway.app import create_app
from gateway.serve import serving
from schemas.token import Role
from tests.helpers import EventLog, gated, require_tool
from tests.integration.test_gateway import bearer, duck_reader, make_token

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
WAIT_MS = 20_000


def tasks() -> list[dict[str, Any]]:
    """Three phases; `build` waits until the test drops a `release` file in the workspace."""
    return [
        {"name": "spec", "phase": "requirements", "command": "echo spec > SPEC.md"},
        {"name": "build", "phase": "implementation", "command": gated("build")},
        {"name": "lint", "phase": "implementation", "command": "true"},
        {"name": "check", "phase": "testing", "command": "true", "depends_on": ["build", "lint"]},
    ]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_tool(CHROMIUM.exists(), f"Chromium at {CHROMIUM}")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        await chromium.close()


async def sign_in(browser: Browser, url: str, token: str) -> BrowserContext:
    """A browser session signed in through the sign-in page, as a person does it."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    await page.goto(f"{url}/tickets/nowhere")
    assert "/login?next=" in page.url  # not signed in: sent to sign in first
    await page.fill("#token", "omoi_not_a_token")
    await page.click('#sign-in button[type="submit"]')
    assert "not an Omoi token" in await page.inner_text("#sign-in-error")
    await page.fill("#token", token)
    await page.click('#sign-in button[type="submit"]')
    await page.wait_for_url(f"{url}/tickets/nowhere")  # back where it wanted to go
    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["omoi_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    await page.close()
    return context


async def open_page(context: BrowserContext, url: str, errors: list[str]) -> Page:
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(url)
    # The event stream is subscribed: whatever happens from now on reaches the page.
    await page.wait_for_selector('body[data-live="ready"]', timeout=WAIT_MS)
    # A reload would drop this; it must still be there at the end.
    await page.evaluate("window.omoiNoReload = true")
    return page


@pytest.mark.timeout(120)
async def test_dashboard_follows_a_ticket_live(
    browser: Browser,
    settings: Settings,
    bus: Bus,
    events: EventLog,
    start_planner: Start,
    start_worker: Start,
    tmp_path: Path,
) -> None:
    await start_planner()
    await start_worker()
    app = create_app(settings=settings, bus=bus, reader=duck_reader())
    errors: list[str] = []
    admin = await make_token(bus, Role.ADMIN, name="browser admin")
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(admin)) as api:
        context = await sign_in(browser, url, admin)
        page = await open_page(context, f"{url}/", errors)
        assert "browser admin" in await page.inner_text("#signed-in")
        r = await api.post(
            "/api/v1/tickets", json={"id": "ui-1", "title": "Live", "tasks": tasks()}
        )
        assert r.status_code == 201, r.text

        row = 'tr[data-ticket-id="ui-1"]'
        await page.wait_for_selector(f'{row}[data-phase="implementation"]', timeout=WAIT_MS)
        assert await page.get_attribute(row, "data-status") == "running"
        (settings.workspaces_dir / "ui-1" / "release").touch()
        await page.wait_for_selector(f'{row}[data-status="done"]', timeout=WAIT_MS)
        # The event sets the status at once; the phase bar comes with the row's fragment,
        # re-fetched right after it.
        await page.wait_for_selector(
            f'{row} .step:last-child[data-state="done"]', state="attached", timeout=WAIT_MS
        )
        steps = await page.eval_on_selector_all(
            f"{row} .step", "els => els.map(e => e.dataset.state)"
        )
        assert steps == ["done"] * 5
        assert await page.evaluate("window.omoiNoReload") is True
        assert await page.is_visible("#chart-throughput svg")
        await page.screenshot(path=tmp_path / "index.png", full_page=True)

        # Its task graph: every task succeeded, dependencies drawn as arrows.
        await page.click('a[data-ticket-link="ui-1"]')
        await page.wait_for_selector('#task-graph [data-task="check"][data-status="succeeded"]')
        statuses = await page.eval_on_selector_all(
            "#task-graph [data-task]", "els => els.map(e => [e.dataset.task, e.dataset.status])"
        )
        assert sorted(statuses) == [[n, "succeeded"] for n in ("build", "check", "lint", "spec")]
        await page.wait_for_selector("#graph-arrows path.arrow", state="attached")
        assert await page.locator("#graph-arrows path.arrow").count() == 2
        shot = tmp_path / "dashboard.png"
        await page.screenshot(path=shot, full_page=True)

        # The graph follows a running ticket too.
        await api.post("/api/v1/tickets", json={"id": "ui-2", "title": "Graph", "tasks": tasks()})
        await events.wait_type("ui-2", "task.started", task="build")
        graph_page = await open_page(context, f"{url}/tickets/ui-2", errors)
        build = '#task-graph [data-task="build"]'
        assert await graph_page.get_attribute(build, "data-status") == "running"
        (settings.workspaces_dir / "ui-2" / "release").touch()
        await graph_page.wait_for_selector(f'{build}[data-status="succeeded"]', timeout=WAIT_MS)
        await graph_page.wait_for_selector('.ticket-head[data-status="done"]', timeout=WAIT_MS)
        assert await graph_page.evaluate("window.omoiNoReload") is True
        await graph_page.close()

        # A post without its CSRF token (as another site's form would send it, with the
        # session cookie) is refused, and so is a sign-out. (A page of its own: the browser
        # logs the 403s, which are not errors here.)
        await api.post("/api/v1/tickets", json={"id": "ui-3", "title": "Stop", "tasks": tasks()})
        await events.wait_type("ui-3", "task.started", task="build")
        probe = await context.new_page()
        await probe.goto(f"{url}/tickets/ui-3")
        for path in ("/tickets/ui-3/cancel", "/logout"):
            refused = await probe.evaluate(
                "async (path) => (await fetch(path, {method: 'POST'})).status", path
            )
            assert refused == 403, path
        await probe.close()
        still = await bus.tickets.value("ui-3")
        assert still is not None and still.status == "running"
        # The ticket page's Cancel button is a form with its CSRF token: it works.
        stop_page = await open_page(context, f"{url}/tickets/ui-3", errors)
        await stop_page.click("#cancel-ticket button")
        await stop_page.wait_for_selector('.ticket-head[data-status="cancelled"]', timeout=WAIT_MS)
        await events.wait_type("ui-3", "ticket.cancelled")
        assert await stop_page.is_visible("#signed-in")
        await stop_page.click("#sign-out button")
        await stop_page.wait_for_url(f"{url}/login")
        await stop_page.close()
        await page.close()
        await context.close()

    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    assert not errors, errors

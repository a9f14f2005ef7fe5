"""The dashboard in a real (headless) Chromium: a ticket appears and finishes without a reload."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from agents.settings import Settings
from bus import Bus
from gateway.app import create_app
from gateway.serve import serving
from tests.helpers import EventLog, gated, require_tool
from tests.integration.test_gateway import duck_reader

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


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
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
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as api:
        page = await open_page(browser, f"{url}/", errors)
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
        graph_page = await open_page(browser, f"{url}/tickets/ui-2", errors)
        build = '#task-graph [data-task="build"]'
        assert await graph_page.get_attribute(build, "data-status") == "running"
        (settings.workspaces_dir / "ui-2" / "release").touch()
        await graph_page.wait_for_selector(f'{build}[data-status="succeeded"]', timeout=WAIT_MS)
        await graph_page.wait_for_selector('.ticket-head[data-status="done"]', timeout=WAIT_MS)
        assert await graph_page.evaluate("window.omoiNoReload") is True
        await graph_page.close()
        await page.close()

    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    assert not errors, errors

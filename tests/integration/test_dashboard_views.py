"""The dashboard's views onto the store: a ticket's log lines and trace, and the alerts
firing, over the in-memory DuckDB of test_gateway's `api` client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from bus.trace_context import ticket_span_id
from tests.helpers import wait_until
from tests.integration.test_gateway import api, graph

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[Any]]
__all__ = ["api"]  # the fixture, used by name


async def two_tickets(api: httpx.AsyncClient) -> None:
    """lg-1, which the store has log lines and spans of, and quiet-1, which it has none of."""
    for ticket in ("lg-1", "quiet-1"):
        r = await api.post(
            "/api/v1/tickets", json={"id": ticket, "title": "t", "tasks": graph("a")}
        )
        assert r.status_code == 201, r.text

    # A 201 is the planner's advisory answer; the ticket is made from the intake stream a
    # moment later.
    async def made() -> bool:
        return all([(await api.get(f"/api/v1/tickets/{t}")).status_code == 200
                    for t in ("lg-1", "quiet-1")])  # fmt: skip

    await wait_until(made)


async def test_the_ticket_page_shows_each_tasks_log_lines(
    api: httpx.AsyncClient, start_planner: Start
) -> None:
    await start_planner()
    await two_tickets(api)
    page = (await api.get("/tickets/lg-1")).text
    ticket_part, _, task_part = page.partition('data-task-logs="a"')
    assert 'data-task-logs=""' in ticket_part and "ticket lg-1 created with 1 tasks" in ticket_part
    # A task with a warning is open, and says who wrote each line.
    assert task_part.startswith(" open>")
    assert "lg-1.a attempt 1 failed, retry in 0.05s" in task_part and "worker/worker-1" in task_part
    assert "another ticket" not in page
    assert "No log lines about this ticket" in (await api.get("/tickets/quiet-1")).text


async def test_the_ticket_page_draws_its_trace_as_a_waterfall(
    api: httpx.AsyncClient, start_planner: Start
) -> None:
    await start_planner()
    await two_tickets(api)
    page = (await api.get("/tickets/lg-1")).text
    assert "2 spans from the store" in page
    svg = page[page.index('<svg class="waterfall"') :]
    root, attempt = svg.split("<g class=")[1:3]
    assert f'data-span="{ticket_span_id("lg-1")}" data-depth="0"' in root and "10.00 s" in root
    # The attempt is under the ticket, half its length from a fifth of the way, and failed.
    assert '"span span-failed role-worker" data-span="a1" data-depth="1"' in attempt
    assert "attempt a" in attempt and "exit code 3 &lt;boom&gt;" in attempt  # escaped
    rect = attempt[attempt.index("<rect") :]
    x, w = (float(rect.split(f' {k}="')[1].split('"')[0]) for k in ("x", "width"))
    assert (x, w) == (260 + 0.2 * 630, 0.5 * 630)
    assert "No spans of this ticket in the store yet" in (await api.get("/tickets/quiet-1")).text


async def test_the_dashboard_shows_the_alerts_firing_worst_first(api: httpx.AsyncClient) -> None:
    page = (await api.get("/")).text
    panel = page[page.index('id="alerts"') : page.index("</section>", page.index('id="alerts"'))]
    assert '<span class="count" id="alert-count">2</span>' in panel
    assert panel.index('data-rule="worker-failing"') < panel.index('data-rule="backlog"')
    assert 'data-severity="critical" data-key="worker-failing/w-1"' in panel
    assert "w-1 failed &lt;5&gt; of 5" in panel and 'data-rule="old"' not in panel

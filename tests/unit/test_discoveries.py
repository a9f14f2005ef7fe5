"""Discoveries judged from state alone, and tools' names and rights checked at intake."""

from __future__ import annotations

import pytest

from agents.errors import InvalidTicket
from agents.planner import discoveries as d
from agents.planner import rights
from agents.tools import ToolPlugin, installed
from schemas import Phase, TaskState, TaskStatus, TicketStatus, TicketSubmission
from schemas.discovery import Discovery, DiscoveryReport, DiscoveryState, DiscoveryStatus
from schemas.ticket import TicketState
from schemas.usage import Budget, Usage

LIMITS = d.Limits(max_depth=2, max_per_ticket=3, approval_usd=1.0)


def ticket(**fields: object) -> TicketState:
    return TicketState.model_validate({"id": "T1", "title": "t",
                                       "phase": Phase.IMPLEMENTATION, **fields})  # fmt: skip


def tasks() -> dict[str, TaskState]:
    made = [
        TaskState(id="T1.code", ticket_id="T1", name="code", phase=Phase.IMPLEMENTATION,
                  instructions="Write the CSV exporter for invoices", status=TaskStatus.RUNNING,
                  usage=Usage(cost_usd=0.4)),
        TaskState(id="T1.check", ticket_id="T1", name="check", phase=Phase.TESTING,
                  instructions="Run the suite"),
    ]  # fmt: skip
    return {t.name: t for t in made}


def report(title: str, kind: str = "bug", depth: int = 0, **more: object) -> DiscoveryReport:
    found = Discovery.model_validate({"kind": kind, "title": title, **more})
    return DiscoveryReport(id="T1.code.0-1-1", ticket_id="T1", from_task="code", depth=depth,
                           discovery=found)  # fmt: skip


def test_new_work_within_limits_is_accepted_as_a_task_in_its_phase() -> None:
    verdict, _ = d.judge(ticket(), tasks(), report("Dates are parsed in local time"), LIMITS)
    assert verdict == "accept"
    made = d.task_for(ticket(), tasks(), report("Dates are parsed in local time"))
    assert (made.name, made.phase, made.origin) == (
        "discovered-code-0-1-1",
        Phase.IMPLEMENTATION,
        "discovery:1:T1.code.0-1-1",
    )
    # A missing test goes to testing, which has work; a past phase's to the current one.
    late = d.task_for(ticket(phase=Phase.TESTING), tasks(), report("x y z", phase="design"))
    assert late.phase is Phase.TESTING


@pytest.mark.parametrize(
    ("t", "r", "why"),
    [
        (ticket(status=TicketStatus.DONE), report("Some new bug here"), "done"),
        (ticket(), report("Some new bug here", depth=2), "chain of 2"),
        (ticket(budget=Budget(max_cost_usd=0.3)), report("Some new bug here"), "budget"),
        (ticket(), report("Write the CSV exporter for invoices"), "repeats task code"),
        (ticket(discoveries=[DiscoveryState(id="x", from_task="code", kind="bug", title="a b c",
                                            status=DiscoveryStatus.ACCEPTED)] * 3),
         report("Something else entirely"), "limit"),
    ],
)  # fmt: skip
def test_what_the_ticket_cannot_take_is_rejected(
    t: TicketState, r: DiscoveryReport, why: str
) -> None:
    verdict, reason = d.judge(t, tasks(), r, LIMITS)
    assert verdict == "reject" and why in reason


def test_a_new_phase_or_an_expensive_estimate_waits_for_an_operator() -> None:
    new_phase = report("Ship a changelog", kind="follow_up", phase="deployment")
    assert d.judge(ticket(), tasks(), new_phase, LIMITS)[0] == "hold"
    costly = report("Rewrite the parser", estimate_usd=5.0)
    assert d.judge(ticket(), tasks(), costly, LIMITS) == (
        "hold",
        "its estimate $5.00 is over $1.00",
    )


def test_a_plugin_tools_name_and_rights_are_checked_at_intake() -> None:
    assert "discover" in installed()
    pushy = ToolPlugin(name="pushy", description="", build=lambda ctx: [],
                       rights=frozenset({"push"}))  # fmt: skip
    spec = {"name": "a", "phase": "design", "capability": "agent", "instructions": "x"}
    wants = TicketSubmission.model_validate({"title": "t", "tasks": [{**spec, "tools": ["pushy"]}]})
    assert rights.required(wants, {"pushy": pushy}) == {
        rights.Right.PUSH: ["tool 'pushy' of task 'a'"]}  # fmt: skip
    with pytest.raises(InvalidTicket, match="tool 'pushy', which is not installed"):
        rights.required(wants, {})

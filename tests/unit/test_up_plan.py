"""What `omoi up` runs (cli/up.py plan)."""

from __future__ import annotations

from cli.up import plan


def test_up_runs_the_planners_it_is_asked_for_beside_one_of_each_other_role() -> None:
    children, url = plan(2, None, planners=3)
    names = [child.name for child in children]
    assert [n for n in names if n.startswith("planner")] == ["planner", "planner-2", "planner-3"]
    assert names.count("recorder") == 1 and url is None
    assert [n for n in names if n.startswith("worker-")] == ["worker-1", "worker-2"]


def test_up_runs_one_planner_by_default() -> None:
    children, _ = plan(1, None)
    assert [c.name for c in children if c.name.startswith("planner")] == ["planner"]

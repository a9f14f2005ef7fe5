"""How partitions are shared out among a group's members (bus/ownership.py)."""

from __future__ import annotations

from collections import Counter

from bus import constants as c
from bus.ownership import share

PARTITIONS = range(c.PLANNER_PARTITIONS)


def test_every_partition_has_one_wanted_owner_and_none_has_more_than_its_share() -> None:
    for n in range(1, 11):
        members = [f"planner-{i}" for i in range(n)]
        wanted = share(PARTITIONS, members)
        assert sorted(wanted) == list(PARTITIONS)
        load = Counter(wanted.values())
        assert max(load.values()) == -(-c.PLANNER_PARTITIONS // n)
        if n <= c.PLANNER_PARTITIONS:
            assert set(load) == set(members)  # nobody is left out while there is work


def test_every_member_computes_the_same_share_whatever_order_it_lists_them() -> None:
    members = ["planner-b", "planner-c", "planner-a"]
    assert share(PARTITIONS, members) == share(PARTITIONS, sorted(members))


def test_a_member_joining_moves_only_partitions_to_it() -> None:
    before = share(PARTITIONS, ["planner-a", "planner-b"])
    after = share(PARTITIONS, ["planner-a", "planner-b", "planner-c"])
    moved = {p for p in PARTITIONS if before[p] != after[p]}
    assert moved and all(after[p] == "planner-c" for p in moved)
    assert len(moved) <= -(-c.PLANNER_PARTITIONS // 3)


def test_nobody_is_wanted_when_there_are_no_members() -> None:
    assert share(PARTITIONS, []) == {}


def test_the_partition_of_a_ticket_is_stable_and_spreads_tickets() -> None:
    # Values of the server's partition(8, 1) transform (FNV-1a); the integration test
    # checks them against a real server.
    assert c.planner_partition("tk-abc") == 1
    assert c.planner_partition("tk-def") == 6
    spread = Counter(c.planner_partition(f"T-{i:06d}") for i in range(8000))
    assert set(spread) == set(PARTITIONS)
    assert min(spread.values()) > 800


def test_the_planners_copy_of_an_outcome_is_transformed_into_its_partition() -> None:
    src, dest = c.planner_subject_transform("omoi.events.*.task.succeeded")
    assert src == "omoi.events.*.task.succeeded"
    assert dest == "omoi.planner.{{partition(8,1)}}.{{wildcard(1)}}.task.succeeded"

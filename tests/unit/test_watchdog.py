"""The watchdog's decisions: a wedged agent is restarted once per grace, a crash loop is
escalated once and not restarted, restarts are counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.monitor.watchdog import CrashLoop, Restart, Restarted, Watchdog
from schemas import Heartbeat
from schemas.supervisor import ChildStatus, SupervisorStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def beat(agent: str, age_s: float) -> Heartbeat:
    return Heartbeat(agent_id=agent, role="worker", at=T0 - timedelta(seconds=age_s), interval_s=1)


def status(*children: ChildStatus) -> list[SupervisorStatus]:
    return [SupervisorStatus(host="h1", children=list(children))]


def child(agent: str = "w-1", running: bool = True, restarts: int = 0,
          restarted: tuple[float, ...] = ()) -> ChildStatus:  # fmt: skip
    return ChildStatus(
        name="worker-1", agent_id=agent, pid=42, running=running, restarts=restarts,
        restarted_at=[T0 - timedelta(seconds=s) for s in restarted],
    )  # fmt: skip


def test_a_running_child_whose_beats_stopped_is_restarted_once_per_grace() -> None:
    dog = Watchdog()
    assert dog.decide(status(child()), {"w-1": beat("w-1", 2.0)}, T0) == []  # 2 beats late
    (restart,) = dog.decide(status(child()), {"w-1": beat("w-1", 5.0)}, T0)
    assert isinstance(restart, Restart)
    assert (restart.host, restart.child, restart.agent_id) == ("h1", "worker-1", "w-1")
    assert "no heartbeat for 5s while its process 42 runs" in restart.reason
    assert dog.decide(status(child()), {"w-1": beat("w-1", 9.0)}, T0 + timedelta(seconds=4)) == []
    again = dog.decide(status(child()), {"w-1": beat("w-1", 40.0)}, T0 + timedelta(seconds=31))
    assert [type(a) for a in again] == [Restart]


def test_a_child_that_is_down_or_has_no_beat_is_left_to_its_supervisor() -> None:
    dog = Watchdog()
    assert dog.decide(status(child(running=False)), {"w-1": beat("w-1", 60)}, T0) == []
    assert dog.decide(status(child()), {}, T0) == []


def test_restarts_are_counted_and_a_crash_loop_escalated_once_not_restarted() -> None:
    dog = Watchdog()
    assert dog.decide(status(child(restarts=1, restarted=(100,))), {}, T0) == []  # first look
    (counted,) = dog.decide(status(child(restarts=2, restarted=(100, 50))), {}, T0)
    assert counted == Restarted("h1", "worker-1", 1, 2) and dog.restarts_total == 1
    looping = child(restarts=3, restarted=(100, 50, 10))
    actions = dog.decide(status(looping), {"w-1": beat("w-1", 60)}, T0)
    assert [type(a) for a in actions] == [Restarted, CrashLoop]  # and no Restart
    loop = actions[1]
    assert isinstance(loop, CrashLoop) and (loop.restarts, loop.window_s) == (3, 300.0)
    assert dog.decide(status(looping), {}, T0) == []  # said once
    # Out of the window: no longer looping, and a later loop is said again.
    calm = T0 + timedelta(seconds=400)
    assert dog.decide(status(looping), {}, calm) == []
    assert [type(a) for a in dog.decide(status(looping), {}, T0)] == [CrashLoop]

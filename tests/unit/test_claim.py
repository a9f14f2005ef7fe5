"""The worker's claim decision: run, drop, abandon or give up on a delivered dispatch."""

from datetime import timedelta
from typing import Any

import pytest

from agents.worker.claim import Receipt, Verdict, claimed, exhausted, judge
from schemas import ErrorCategory, Phase, TaskDispatch, TaskState, TaskStatus, utcnow

S = TaskStatus


def task(**kw: Any) -> TaskState:
    kw.setdefault("status", S.QUEUED)
    return TaskState(id="T1.a", ticket_id="T1", name="a", phase=Phase.DESIGN, **kw)


def dispatch(generation: int = 0) -> TaskDispatch:
    return TaskDispatch(ticket_id="T1", task="a", generation=generation)


@pytest.mark.parametrize("status", [S.SUCCEEDED, S.FAILED, S.CANCELLED, S.SKIPPED, S.BLOCKED])
def test_finished_or_blocked_task_drops(status: TaskStatus) -> None:
    assert judge(task(status=status), dispatch(), Receipt(seq=1, number=1)) is Verdict.DROP
    # Even when the message is the very one holding the claim.
    claimed_by_it = task(status=status, msg_seq=1, delivery=1)
    assert judge(claimed_by_it, dispatch(), Receipt(seq=1, number=2)) is Verdict.DROP


@pytest.mark.parametrize(("task_gen", "msg_gen"), [(1, 0), (0, 1), (3, 2)])
def test_generation_mismatch_drops(task_gen: int, msg_gen: int) -> None:
    fresh = task(generation=task_gen)
    assert judge(fresh, dispatch(msg_gen), Receipt(seq=1, number=1)) is Verdict.DROP
    assert judge(fresh, dispatch(task_gen), Receipt(seq=1, number=1)) is Verdict.RUN


@pytest.mark.parametrize("status", [S.QUEUED, S.RUNNING])
def test_another_message_holding_the_claim_drops(status: TaskStatus) -> None:
    held = task(status=status, msg_seq=5, delivery=1, attempts=1)
    assert judge(held, dispatch(), Receipt(seq=6, number=1)) is Verdict.DROP
    assert judge(held, dispatch(), Receipt(seq=4, number=9)) is Verdict.DROP


@pytest.mark.parametrize("number", [1, 2])
def test_same_message_older_or_equal_delivery_abandons(number: int) -> None:
    held = task(status=S.RUNNING, msg_seq=5, delivery=2, attempts=1)
    assert judge(held, dispatch(), Receipt(seq=5, number=number)) is Verdict.ABANDON
    # Abandon wins over exhaustion: the stale copy must not fail a live attempt.
    spent = task(status=S.RUNNING, msg_seq=5, delivery=2, attempts=4, max_retries=3)
    assert judge(spent, dispatch(), Receipt(seq=5, number=number)) is Verdict.ABANDON


def test_redelivery_after_a_lost_worker_runs_again_and_records_the_loss() -> None:
    held = task(status=S.RUNNING, msg_seq=5, delivery=1, attempts=1, worker="w-old")
    delivery = Receipt(seq=5, number=2)
    assert judge(held, dispatch(), delivery) is Verdict.RUN

    after = claimed(held, "w-new", delivery)
    assert after.status is S.RUNNING
    assert after.attempts == 2
    assert after.worker == "w-new"
    assert (after.msg_seq, after.delivery) == (5, 2)
    assert len(after.errors) == 1
    lost = after.errors[0]
    assert lost.category == ErrorCategory.WORKER_LOST
    assert lost.attempt == 1
    assert "w-old" in lost.message
    assert after.error == lost
    info = after.error_info()
    assert info is not None
    assert (info.category, info.message) == ("worker_lost", lost.message)


def test_lost_worker_on_the_last_attempt_is_exhausted() -> None:
    held = task(status=S.RUNNING, msg_seq=5, delivery=1, attempts=2, max_retries=1, worker="w1")
    assert held.max_attempts == 2
    assert judge(held, dispatch(), Receipt(seq=5, number=2)) is Verdict.EXHAUSTED

    after = exhausted(held)
    assert after.status is S.FAILED
    assert after.status.terminal
    assert after.finished_at is not None
    assert after.updated_at == after.finished_at
    assert after.attempts == 2
    assert [e.category for e in after.errors] == [ErrorCategory.WORKER_LOST]
    assert after.error is not None
    assert after.error.attempt == 2
    assert "no attempts left" in after.error.message
    assert "w1" in after.error.message


def test_one_attempt_left_still_runs() -> None:
    held = task(status=S.RUNNING, msg_seq=5, delivery=1, attempts=1, max_retries=1)
    assert judge(held, dispatch(), Receipt(seq=5, number=2)) is Verdict.RUN


def test_fresh_queued_task_runs_and_is_claimed() -> None:
    fresh = task()
    assert (fresh.msg_seq, fresh.delivery, fresh.attempts) == (None, 0, 0)
    delivery = Receipt(seq=11, number=1)
    assert judge(fresh, dispatch(), delivery) is Verdict.RUN

    before = utcnow()
    after = claimed(fresh, "worker-1", delivery)
    assert after.status is S.RUNNING
    assert after.attempts == 1
    assert after.worker == "worker-1"
    assert after.msg_seq == 11
    assert after.delivery == 1
    assert after.errors == []
    assert after.error is None
    assert after.started_at is not None
    assert after.started_at >= before
    assert after.updated_at == after.started_at


def test_retry_redelivery_of_a_queued_task_records_no_loss() -> None:
    retrying = task(
        status=S.QUEUED,
        msg_seq=5,
        delivery=1,
        attempts=1,
        worker="w1",
        next_attempt_at=utcnow() + timedelta(seconds=2),
    )
    delivery = Receipt(seq=5, number=2)
    assert judge(retrying, dispatch(), delivery) is Verdict.RUN
    after = claimed(retrying, "w2", delivery)
    assert after.errors == []
    assert after.next_attempt_at is None
    assert (after.attempts, after.worker, after.delivery) == (2, "w2", 2)


def test_fresh_task_without_attempts_left_is_exhausted() -> None:
    spent = task(attempts=1, max_retries=0)
    assert judge(spent, dispatch(), Receipt(seq=1, number=1)) is Verdict.EXHAUSTED

"""The memory store (real DuckDB files) and the lessons and prompts made from it."""

from __future__ import annotations

from pathlib import Path

from agents import memory
from agents.llm.scripted_embeddings import embed, embeddings_response
from benchmarks.scenarios.recall import labelled, recall_at_5
from schemas import Phase, TaskResult, TaskState, TaskStatus
from schemas.memory import MemoryAnswer, MemoryHit, MemoryRecord
from schemas.task import AttemptError
from schemas.ticket import TicketState
from store.memory import MemoryStore, terms


def record(i: str, ticket: str = "T1", **fields: object) -> MemoryRecord:
    return MemoryRecord.model_validate(
        {"id": i, "ticket_id": ticket, "task": f"t-{i}", "phase": "implementation", **fields}
    )


def test_words_are_lowered_stemmed_and_stop_words_dropped() -> None:
    assert terms("The Limits of the API, limiting RATE-limited calls") == {
        "limit": 3, "api": 1, "rate": 1, "call": 1,
    }  # fmt: skip


def test_search_ranks_by_bm25_keeps_each_memory_once_and_can_forget(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "m.duckdb").open()
    try:
        assert store.add([
            record("a", title="Rate limiting", summary="token bucket limiter for the API"),
            record("b", title="Slugify", summary="unicode slugs for titles"),
            record("c", ticket="T2", title="Login lockout", summary="limit failed logins"),
        ]) == 3  # fmt: skip
        assert store.add([record("a", title="again")]) == 0  # by id: once
        hits = store.search("throttle the API with a token bucket rate limit", 5)
        assert [h.memory.id for h in hits][:2] == ["a", "c"]
        assert hits[0].score > hits[1].score > 0
        # A ticket's own tasks are not past work for it.
        assert [h.memory.id for h in store.search("rate limit", 5, "T1")] == ["c"]
        assert store.search("the of and", 5) == []
        assert store.forget("a") and not store.forget("a")
        assert [h.memory.id for h in store.search("token bucket", 5)] == []
        assert store.count() == 2
    finally:
        store.close()
    reopened = MemoryStore(tmp_path / "m.duckdb").open()
    assert reopened.count() == 2  # on disk
    reopened.close()


def test_a_succeeded_coding_task_leaves_its_lesson() -> None:
    task = TaskState(
        id="T1.fix-testing-1", ticket_id="T1", name="fix-testing-1", phase=Phase.IMPLEMENTATION,
        capability="agent", status=TaskStatus.SUCCEEDED, generation=2,
        instructions="Fix it.\n\n## Gate feedback\n\ntest_accents failed\n\n## What else",
        errors=[AttemptError(attempt=1, category="timeout", message="ran 600 s")],
        result=TaskResult(summary="Normalised accents", files=["slug.py"]),
    )  # fmt: skip
    lesson = memory.learned(task, TicketState(id="T1", title="Slugify"))
    assert lesson is not None
    assert (lesson.id, lesson.title, lesson.feedback) == ("T1.fix-testing-1.g2", "Slugify",
                                                         "test_accents failed")  # fmt: skip
    assert lesson.errors == ["timeout: ran 600 s"] and lesson.files == ["slug.py"]
    shell = task.model_copy(update={"capability": "shell"})
    assert memory.learned(shell, None) is None


def test_a_recurring_fixed_error_becomes_a_playbook_hint() -> None:
    hits = [
        MemoryHit(memory=record("a", summary="used UTC everywhere",
                                errors=["test_failure: naive datetime"]), score=3),
        MemoryHit(memory=record("b", errors=["test_failure: aware vs naive"]), score=2),
        MemoryHit(memory=record("c", errors=["timeout: slow"]), score=1),
    ]  # fmt: skip
    (hint,) = memory.playbook(hits)
    assert hint.startswith("test_failure came up in 2 similar tasks")
    assert "used UTC everywhere" in hint


def test_the_prompt_section_stays_within_its_budget() -> None:
    hits = [
        MemoryHit(memory=record(str(i), title=f"ticket {i}", summary="x" * 400), score=1)
        for i in range(10)
    ]
    answer = MemoryAnswer(hits=hits, playbook=["timeout came up in 2 similar tasks"])
    text = memory.prompt_section(answer, 1500)
    assert text.startswith("## Similar past work") and len(text) <= 1500
    assert "Playbook: timeout" in text and "ticket 0" in text and "ticket 9" not in text
    assert memory.prompt_section(None, 1500) == ""
    assert memory.prompt_section(MemoryAnswer(), 1500) == ""


def test_recall_at_5_on_the_labelled_set(tmp_path: Path) -> None:
    # The benchmark reports it (`make bench`, scenario recall); this keeps it from sliding.
    memories, queries = labelled()
    store = MemoryStore(tmp_path / "recall.duckdb").open()
    try:
        store.add(memories)
        assert recall_at_5(store, queries) >= 0.8
    finally:
        store.close()


def test_a_vector_finds_a_lesson_that_shares_no_word_and_fuses_with_bm25(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "v.duckdb").open()
    lessons = [
        record("a", title="Throttle the API", summary="a quota per client, ten calls a second"),
        record("b", title="Pagination", summary="the last page of results was skipped"),
        record("c", title="Rate limit logins", summary="lock out after five failed logins"),
    ]
    try:
        store.add(lessons)
        assert store.unembedded(["a", "b", "c", "zz"]) == ["a", "b", "c"]
        assert store.add_vectors({r.id: embed(r.text()) for r in lessons[:2]}) == 2
        assert store.add_vectors({"a": embed("again"), "zz": embed("not kept")}) == 0
        assert store.unembedded(["a", "b", "c"]) == ["c"]
        query = "rate limiting requests"
        # By words, "rate limit" is only in c; by meaning, a (throttle, quota, calls) is
        # as near, and it has a vector while c has none.
        assert [h.memory.id for h in store.search(query, 2)] == ["c"]
        fused = store.search(query, 2, vector=embed(query))
        assert {h.memory.id for h in fused} == {"a", "c"}
        # A vector of another model's length is not compared; excluded tickets stay out.
        assert [h.memory.id for h in store.search("zzz", 3, vector=[1.0, 0.0])] == []
        assert store.search(query, 3, exclude_ticket="T1", vector=embed(query)) == []
        assert store.forget("a") and store.unembedded(["a"]) == []
        assert "a" not in {h.memory.id for h in store.search(query, 3, vector=embed(query))}
    finally:
        store.close()


def test_scripted_embeddings_put_words_of_one_meaning_close() -> None:
    def cosine(x: str, y: str) -> float:
        return sum(a * b for a, b in zip(embed(x), embed(y), strict=True))

    assert abs(sum(v * v for v in embed("any text")) - 1) < 1e-4
    assert cosine("throttle calls", "rate limit requests") > 0.7
    assert cosine("throttle calls", "fix pagination") < 0.3
    status, answer = embeddings_response({"input": ["a", "b"], "model": "x"})
    assert status == 200 and [d["index"] for d in answer["data"]] == [0, 1]
    assert embeddings_response({"input": 3})[0] == 400

"""Memory across tickets: a coding task's lesson is kept by the recorder, and the next
similar ticket's coding agent is shown it in its prompt; `omoi memory forget` takes it back
(audited). Real planner, worker (the OpenHands agent on the scripted model), recorder."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from agents.recorder.agent import Recorder
from agents.scripts.build_demo import create, finish, task
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from schemas import Event, EventType
from schemas.memory import ForgetMemory, MemoryAnswer, MemoryQuery, MemoryRecord
from schemas.ticket import TicketStatus
from tests.helpers import EventLog, Running, audit_entries, submit, ticket_finished, wait_until
from tests.integration.agent_support import ModelFactory, Start, agent_ticket, with_model
from tests.integration.test_cli import omoi

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FIRST = "Added a token bucket limiter in limiter.py: 10 requests a second per client."


async def search(bus: Bus, text: str) -> MemoryAnswer:
    raw = await bus.request(c.MEMORY_SEARCH, MemoryQuery(text=text).to_json(), timeout=5)
    return MemoryAnswer.model_validate_json(raw)


async def test_the_second_similar_ticket_is_shown_what_the_first_taught(
    bus: Bus,
    events: EventLog,
    settings: Settings,
    short_dir: Path,
    model_server: ModelFactory,
    running: Running,
    start_agents: Start,
) -> None:
    server = model_server(
        {
            "conversations": [
                task("limit-api", create("limiter.py", "RATE = 10\n"), finish(FIRST)),
                task("limit-admin", create("admin_limit.py", "RATE = 5\n"), finish("Done.")),
            ]
        }
    )
    s = with_model(settings, server, short_dir)
    await start_agents(s)
    await running.start(Recorder(bus, s))

    first = agent_ticket("M1", "limit-api", "Rate limit the public API per client.")
    first["title"] = "Add rate limiting to the API"
    assert (await submit(bus, first))["ok"]
    done = await wait_until(lambda: ticket_finished(bus, "M1"), timeout=120)
    assert done.status is TicketStatus.DONE, done.reason
    recorded = await events.wait_type("M1", "memory.recorded")
    assert recorded.data["summary"] == FIRST and recorded.data["files"] == ["limiter.py"]

    async def remembered() -> MemoryAnswer | None:
        found = await search(bus, "rate limiting")
        return found if found.hits else None

    found = await wait_until(remembered, timeout=30)
    assert found.hits[0].memory.id == "M1.limit-api.g0"

    second = agent_ticket("M2", "limit-admin", "Rate limit the admin API as well.")
    second["title"] = "Add rate limiting to the admin API"
    assert (await submit(bus, second))["ok"]
    done = await wait_until(lambda: ticket_finished(bus, "M2"), timeout=120)
    assert done.status is TicketStatus.DONE, done.reason
    prompt = next(
        json.dumps(r["messages"])
        for r in server.requests
        if r["conversation"] == "limit-admin" and r["turn"] == 0
    )
    assert "Similar past work" in prompt
    assert (
        "token bucket limiter in limiter.py" in prompt and "Add rate limiting to the API" in prompt
    )
    first_prompt = next(
        json.dumps(r["messages"]) for r in server.requests if r["conversation"] == "limit-api"
    )
    assert "Similar past work" not in first_prompt  # nothing to recall yet

    # Forgotten: never shown again, and on the record.
    raw = await bus.request(c.MEMORY_FORGET, ForgetMemory(id="M1.limit-api.g0").to_json(), 5)
    assert MemoryAnswer.model_validate_json(raw).ok
    assert all(h.memory.ticket_id != "M1" for h in (await search(bus, "rate limiting")).hits)
    again = MemoryAnswer.model_validate_json(
        await bus.request(c.MEMORY_FORGET, ForgetMemory(id="M1.limit-api.g0").to_json(), 5)
    )
    assert not again.ok and "no memory" in (again.error or "")
    await events.wait_type("_agents", "memory.forgotten")

    async def both_audited() -> list[str] | None:
        found = [e.outcome.value for e in await audit_entries(bus, "memory.forget")]
        return found if len(found) >= 2 else None

    assert await wait_until(both_audited) == ["ok", "rejected"]


async def test_a_bad_search_is_answered_with_its_reason(
    bus: Bus, settings: Settings, running: Running
) -> None:
    await running.start(Recorder(bus, settings))
    raw = await bus.request(c.MEMORY_SEARCH, b'{"text": ""}', timeout=5)
    answer = MemoryAnswer.model_validate_json(raw)
    assert not answer.ok and answer.error and "text" in answer.error
    nothing = await search(bus, "anything at all")
    assert nothing.ok and nothing.hits == []


async def test_omoi_memory_search_and_forget_as_the_operator(
    bus: Bus, events: EventLog, settings: Settings, running: Running
) -> None:
    await running.start(Recorder(bus, settings))
    lesson = MemoryRecord(
        id="P1.migrate.g0", ticket_id="P1", task="migrate", phase="implementation",
        title="Add a migration", summary="Added the orders index without locking the table",
        errors=["timeout: the migration locked orders for 40 s"],
    )  # fmt: skip
    await bus.publish_event(
        Event(id="P1.memory", type=EventType.MEMORY_RECORDED, ticket_id="P1", task="migrate",
              data=lesson.model_dump(mode="json"))
    )  # fmt: skip
    await wait_until(lambda: _found(bus, "migration index"))

    code, out, err = await omoi(settings, "memory", "search", "index migration locking")
    assert code == 0, err
    assert "P1.migrate.g0" in out and "Added the orders index" in out
    code, out, err = await omoi(settings, "memory", "search", "index migration", "--json")
    assert code == 0 and json.loads(out)["hits"][0]["memory"]["task"] == "migrate", err
    code, out, err = await omoi(settings, "memory", "forget", "P1.migrate.g0")
    assert code == 0 and "forgot P1.migrate.g0" in out, err
    code, _, err = await omoi(settings, "memory", "forget", "P1.migrate.g0")
    assert code == 1 and "no memory" in err
    code, out, _ = await omoi(settings, "memory", "search", "index migration")
    assert code == 0 and "nothing remembered" in out


async def _found(bus: Bus, text: str) -> bool:
    return bool((await search(bus, text)).hits)


def lesson(i: str, title: str, summary: str) -> Event:
    record = MemoryRecord(id=f"E{i}.code.g0", ticket_id=f"E{i}", task="code",
                          phase="implementation", title=title, summary=summary)  # fmt: skip
    return Event(id=f"E{i}.memory", type=EventType.MEMORY_RECORDED, ticket_id=f"E{i}",
                 task="code", data=record.model_dump(mode="json"))  # fmt: skip


async def test_with_an_embedding_model_a_lesson_is_found_by_meaning(
    bus: Bus, settings: Settings, short_dir: Path, model_server: ModelFactory, running: Running
) -> None:
    server = model_server({"conversations": []})
    s = with_model(settings, server, short_dir).model_copy(
        update={"embedding_model": "openai/scripted-embedding"}
    )
    await running.start(Recorder(bus, s))
    await bus.publish_event(lesson("1", "Throttle the API", "A quota of ten calls a second."))
    await bus.publish_event(lesson("2", "Pagination", "The last page was skipped."))

    # No word of the query is in lesson 1 (throttle, quota, calls): it is found by meaning
    # once the recorder has embedded it, in the background.
    async def by_meaning() -> MemoryAnswer | None:
        answer = await search(bus, "rate limiting requests")
        return answer if answer.hits else None

    answer = await wait_until(by_meaning, timeout=30)
    assert answer.ranked_by == "hybrid"
    assert answer.hits[0].memory.id == "E1.code.g0"
    embedded = [r for r in server.requests if r["conversation"] == "embeddings"]
    assert any("Throttle the API" in str(r["input"]) for r in embedded)
    # The key went to the provider, and nowhere else.
    assert all(r["credential"] for r in embedded)


async def test_without_its_provider_memory_searches_by_words(
    bus: Bus, settings: Settings, running: Running
) -> None:
    with socket.socket() as closed:  # a port nothing listens on once it is closed
        closed.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    key = SecretStr("sk-embed-0123456789")
    s = settings.model_copy(
        update={"embedding_model": "openai/x", "embedding_base_url": gone, "embedding_api_key": key}
    )
    await running.start(Recorder(bus, s))
    await bus.publish_event(lesson("3", "Throttle the API", "A quota of ten calls a second."))

    async def by_words() -> MemoryAnswer | None:
        answer = await search(bus, "throttle quota")
        return answer if answer.hits else None

    answer = await wait_until(by_words, timeout=30)
    assert answer.ranked_by == "bm25" and answer.hits[0].memory.id == "E3.code.g0"
    assert not (await search(bus, "rate limiting requests")).hits

"""Memory retrieval: how fast a worker gets similar past tasks, and how good they are.

The labelled set (`benchmarks/data/memory_recall.json`: 69 past tasks, 71 new tasks each
with the past ones an engineer would want to see, labelled by hand) is stored among
synthetic memories up to 10,000, made from the same vocabulary so they compete for the
same words. Then:
- `search_p95_ms`, `search_p50_ms`: a search as a worker asks it, `omoi.memory.search` on
  a real nats-server to the recorder's memory service, round trip included;
- `hybrid_search_p95_ms`, `..._p50_ms`: the same with an embedding model (the scripted
  model's `/v1/embeddings` through litellm, 256 dimensions): each search embeds its text
  and fuses the BM25 ranking with the nearest vectors;
- `recall_at_5`: the share of each new task's relevant past tasks among its first five
  hits, averaged, over the labelled set alone (the figure the target is on), and
  `recall_at_5_among` with the 10,000 other memories about other work around it.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agents.embeddings import Embedder, EmbeddingConfig
from agents.llm.script import Script
from agents.llm.scripted import ScriptedModelServer
from agents.llm.scripted_embeddings import embed
from agents.recorder.memory import MemoryService
from benchmarks.common import BenchConfig, Metric
from bus import Bus
from bus import constants as c
from bus.server import EmbeddedNatsServer
from bus.topology import TopologyConfig
from schemas.memory import MemoryAnswer, MemoryQuery, MemoryRecord
from store.memory import MemoryStore

SCENARIO = "recall"
DATA = Path(__file__).resolve().parents[1] / "data" / "memory_recall.json"
ROUNDS = 3


def labelled() -> tuple[list[MemoryRecord], list[dict[str, Any]]]:
    data = json.loads(DATA.read_text())
    memories = [
        MemoryRecord(
            id=m["id"], ticket_id=f"past-{m['id']}", task=m["task"], phase=m["phase"],
            title=m["ticket"], instructions=m["instructions"], summary=m["summary"],
            files=m["files"], errors=m["errors"], feedback=m["feedback"],
        )
        for m in data["memories"]
    ]  # fmt: skip
    return memories, data["queries"]


# Other work a team does: the bulk of a memory, about none of the labelled topics.
OTHER = (
    "android ios mobile build gradle xcode kotlin swift widget layout screen animation "
    "kubernetes helm chart pod node cluster ingress terraform module bucket vpc subnet "
    "dashboard chart colour theme dark mode accessibility contrast keyboard focus modal "
    "report pdf printer barcode scanner warehouse inventory stock shipment label pallet "
    "onboarding tutorial tooltip banner newsletter survey feedback rating review star "
    "video upload transcode thumbnail stream player subtitle playlist audio volume "
    "calendar meeting invite reminder recurring event attendee room booking slot "
    "chat message thread reaction emoji mention notification badge unread typing "
    "map location geocode distance route marker tile zoom region country address "
    "machine learning model training dataset feature embedding inference gpu batch "
    "refactor rename extract function class module package dependency cleanup dead code "
    "profile memory leak allocation garbage collector heap snapshot flame graph latency"
).split()


def synthetic(real: list[MemoryRecord], n: int, seed: int = 3) -> list[MemoryRecord]:
    """`n` memories of other work (with the labelled set's everyday words mixed in, so
    common words are common): plausible, relevant to no labelled query."""
    rng = random.Random(seed)
    everyday = [w for m in real for w in m.text().split() if len(w) <= 4]
    words = [*OTHER, *OTHER, *everyday]
    titles = OTHER

    def some(pool: list[str], k: int) -> str:
        return " ".join(rng.choice(pool) for _ in range(k))

    return [
        MemoryRecord(
            id=f"s{i:05d}", ticket_id=f"synthetic-{i // 5}", task=f"task-{i}",
            phase=rng.choice(real).phase, title=some(titles, 5), instructions=some(words, 35),
            summary=some(words, 18), files=[f"src/{rng.choice(words).strip('.,')}.py"],
        )
        for i in range(n)
    ]  # fmt: skip


def recall_at_5(store: MemoryStore, queries: list[dict[str, Any]]) -> float:
    scores = []
    for q in queries:
        found = {h.memory.id for h in store.search(q["text"], 5)}
        relevant = set(q["relevant"])
        scores.append(len(found & relevant) / len(relevant))
    return statistics.fmean(scores)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(cfg: BenchConfig) -> list[Metric]:
    real, queries = labelled()
    total = cfg.count(10_000, 500)
    alone = MemoryStore(cfg.workdir / "recall-alone.duckdb").open()
    try:
        alone.add(real)
        recall_alone = recall_at_5(alone, queries)
    finally:
        alone.close()

    server = EmbeddedNatsServer(cfg.workdir / "recall-nats", port=0)
    url = await server.start()
    bus = await Bus.connect(url, name="bench-recall", topology=TopologyConfig())
    model = ScriptedModelServer(Script(conversations=[]))
    model.start()
    store = MemoryStore(cfg.workdir / "recall.duckdb")
    log = logging.getLogger(SCENARIO)
    try:
        words = MemoryService(bus, store, "bench-recorder", log)
        await words.start()
        memories = real + synthetic(real, total - len(real))
        for start in range(0, len(memories), 1000):
            store.add(memories[start : start + 1000])
        recall = recall_at_5(store, queries)
        timings = await _searches(bus, queries)
        stored = store.count()
        await words.stop()
        # The same searches by words and meaning: each embeds its query through litellm
        # (the scripted model's /v1/embeddings), the lessons embedded beforehand.
        store.open()
        store.add_vectors({m.id: embed(m.text()) for m in memories})
        store.close()
        config = EmbeddingConfig("openai/scripted-embedding", SecretStr("sk-bench"), model.url)
        both = MemoryService(bus, store, "bench-recorder", log, Embedder(config))
        await both.start()
        hybrid = await _searches(bus, queries, ranked_by="hybrid")
        await both.stop()
    finally:
        model.stop()
        await bus.close()
        await server.stop()
    params = {"memories": stored}
    return [
        Metric(SCENARIO, "search_p50_ms", percentile(timings, 0.5), "ms", params),
        Metric(SCENARIO, "search_p95_ms", percentile(timings, 0.95), "ms", params),
        Metric(SCENARIO, "hybrid_search_p50_ms", percentile(hybrid, 0.5), "ms", params),
        Metric(SCENARIO, "hybrid_search_p95_ms", percentile(hybrid, 0.95), "ms", params),
        Metric(SCENARIO, "recall_at_5", recall_alone, "share", {"memories": len(real)}),
        Metric(SCENARIO, "recall_at_5_among", recall, "share", params),
    ]


async def _searches(
    bus: Bus, queries: list[dict[str, Any]], ranked_by: str = "bm25"
) -> list[float]:
    timings = []
    for _ in range(ROUNDS):
        for q in queries:
            body = MemoryQuery(text=q["text"], limit=5, exclude_ticket="new").to_json()
            started = time.perf_counter()
            answer = MemoryAnswer.model_validate_json(
                await bus.request(c.MEMORY_SEARCH, body, timeout=5.0)
            )
            timings.append((time.perf_counter() - started) * 1000)
            assert answer.ok, answer.error
            assert answer.ranked_by == ranked_by, answer.ranked_by
    return timings

"""The recorder's memory: it keeps each `memory.recorded` event's lesson in the memory
store, and answers searches (`omoi.memory.search`) and forgets (`omoi.memory.forget`).

Searches come from workers about to start a coding task and from people (`omoi memory
search`); each recorder answers in the queue group `omoi-memory`, so one answers each.
A forget is audited, and announced as `memory.forgotten`, whoever asked.

With an embedder (agents/embeddings.py) each kept lesson is embedded in the background,
after it is stored, so the event batch never waits on the provider; a search embeds its
text within `QUERY_EMBED_S` and falls back to words alone when that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pydantic import ValidationError

from agents.embeddings import Embedder, EmbeddingError
from agents.memory import playbook
from bus import Bus, Delivery, Request
from bus import constants as c
from schemas import AGENTS_TOKEN, Event, EventType
from schemas.audit import AuditAction, AuditEntry, AuditOutcome
from schemas.memory import ForgetMemory, MemoryAnswer, MemoryQuery, MemoryRecord
from store.errors import StoreError
from store.memory import MemoryStore

MEMORY_EVENT = f".{EventType.MEMORY_RECORDED.value}"
# A search's worker waits about a second (OMOI_MEMORY_TIMEOUT_S): its query's embedding
# must come well within that, or the search goes on by words.
QUERY_EMBED_S = 0.5


class MemoryService:
    def __init__(
        self,
        bus: Bus,
        store: MemoryStore,
        agent_id: str,
        log: Any,
        embedder: Embedder | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.agent_id = agent_id
        self.log = log
        self.embedder = embedder
        self._subs: list[Any] = []
        self._embedding: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await asyncio.to_thread(self.store.open)
        for subject, handler in ((c.MEMORY_SEARCH, self._search), (c.MEMORY_FORGET, self._forget)):
            self._subs.append(await self.bus.serve(subject, handler, queue=c.MEMORY_QUEUE))

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        for task in list(self._embedding):
            task.cancel()
        await asyncio.gather(*self._embedding, return_exceptions=True)
        await asyncio.to_thread(self.store.close)

    async def take(self, batch: list[Delivery]) -> int:
        """Keep the lessons among a batch of events; what is no lesson is left to the
        events table (which has it anyway) with a warning."""
        records = []
        for delivery in batch:
            if not delivery.subject.endswith(MEMORY_EVENT):
                continue
            try:
                event = Event.model_validate_json(delivery.data)
                records.append(MemoryRecord.model_validate(event.data))
            except ValidationError as exc:
                self.log.warning("memory.recorded at seq %s is no memory: %s", delivery.seq, exc)
        if not records:
            return 0
        kept = await asyncio.to_thread(self.store.add, records)
        if self.embedder is not None:
            task = asyncio.create_task(self._embed(records))
            self._embedding.add(task)
            task.add_done_callback(self._embedding.discard)
        return kept

    async def _embed(self, records: list[MemoryRecord]) -> None:
        """Vectors for the lessons that have none (a redelivered one has its own)."""
        assert self.embedder is not None
        try:
            ids = set(await asyncio.to_thread(self.store.unembedded, [r.id for r in records]))
            todo = [r for r in records if r.id in ids]
            if not todo:
                return
            vectors = await self.embedder.embed([r.text() for r in todo])
            await asyncio.to_thread(
                self.store.add_vectors, {r.id: v for r, v in zip(todo, vectors, strict=True)}
            )
        except (EmbeddingError, StoreError) as exc:
            self.log.warning("%d lessons kept without embeddings: %s", len(records), exc)

    async def _search(self, request: Request) -> bytes:
        started = time.perf_counter()
        try:
            query = MemoryQuery.model_validate_json(request.data)
            vector = await self._query_vector(query.text)
            hits = await asyncio.to_thread(
                self.store.search, query.text, query.limit, query.exclude_ticket, vector
            )
        except (ValidationError, StoreError) as exc:
            return MemoryAnswer(ok=False, error=str(exc)[:2000]).to_json()
        took = (time.perf_counter() - started) * 1000
        return MemoryAnswer(
            hits=hits,
            playbook=playbook(hits),
            took_ms=round(took, 2),
            ranked_by="hybrid" if vector else "bm25",
        ).to_json()

    async def _query_vector(self, text: str) -> list[float] | None:
        if self.embedder is None:
            return None
        try:
            (vector,) = await self.embedder.embed([text], timeout_s=QUERY_EMBED_S)
        except EmbeddingError as exc:
            self.log.info("search by words alone: %s", exc)
            return None
        return vector

    async def _forget(self, request: Request) -> bytes:
        try:
            cmd = ForgetMemory.model_validate_json(request.data)
            forgotten = await asyncio.to_thread(self.store.forget, cmd.id)
        except (ValidationError, StoreError) as exc:
            return MemoryAnswer(ok=False, error=str(exc)[:2000]).to_json()
        outcome = AuditOutcome.OK if forgotten else AuditOutcome.REJECTED
        detail = "forgotten" if forgotten else "no such memory"
        entry = AuditEntry(
            action=AuditAction.MEMORY_FORGET, outcome=outcome, actor="nats:operator|gateway",
            via="nats", target=cmd.id, detail=detail,
        )  # fmt: skip
        try:
            await self.bus.publish_audit(entry)
            if forgotten:
                await self.bus.publish_event(
                    Event(
                        id=f"memory.{cmd.id}.forgotten",
                        type=EventType.MEMORY_FORGOTTEN,
                        ticket_id=AGENTS_TOKEN,
                        agent=self.agent_id,
                        data={"memory": cmd.id},
                    )
                )
        except Exception as exc:  # noqa: BLE001 - forgotten either way; its record is not
            self.log.warning("record of forgetting %s not stored: %r", cmd.id, exc)
        if not forgotten:
            return MemoryAnswer(ok=False, error=f"no memory {cmd.id!r}").to_json()
        return MemoryAnswer().to_json()

"""The recorder's memory: it keeps each `memory.recorded` event's lesson in the memory
store, and answers searches (`omoi.memory.search`) and forgets (`omoi.memory.forget`).

Searches come from workers about to start a coding task and from people (`omoi memory
search`); each recorder answers in the queue group `omoi-memory`, so one answers each.
A forget is audited, and announced as `memory.forgotten`, whoever asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from pydantic import ValidationError

from agents.memory import playbook
from bus import Bus, Delivery, Request
from bus import constants as c
from schemas import AGENTS_TOKEN, Event, EventType
from schemas.audit import AuditAction, AuditEntry, AuditOutcome
from schemas.memory import ForgetMemory, MemoryAnswer, MemoryQuery, MemoryRecord
from store.errors import StoreError
from store.memory import MemoryStore

MEMORY_EVENT = f".{EventType.MEMORY_RECORDED.value}"


class MemoryService:
    def __init__(self, bus: Bus, store: MemoryStore, agent_id: str, log: Any) -> None:
        self.bus = bus
        self.store = store
        self.agent_id = agent_id
        self.log = log
        self._subs: list[Any] = []

    async def start(self) -> None:
        await asyncio.to_thread(self.store.open)
        for subject, handler in ((c.MEMORY_SEARCH, self._search), (c.MEMORY_FORGET, self._forget)):
            self._subs.append(await self.bus.serve(subject, handler, queue=c.MEMORY_QUEUE))

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
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
        return await asyncio.to_thread(self.store.add, records) if records else 0

    async def _search(self, request: Request) -> bytes:
        started = time.perf_counter()
        try:
            query = MemoryQuery.model_validate_json(request.data)
            hits = await asyncio.to_thread(
                self.store.search, query.text, query.limit, query.exclude_ticket
            )
        except (ValidationError, StoreError) as exc:
            return MemoryAnswer(ok=False, error=str(exc)[:2000]).to_json()
        took = (time.perf_counter() - started) * 1000
        return MemoryAnswer(hits=hits, playbook=playbook(hits), took_ms=round(took, 2)).to_json()

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

"""The recorder: every event, dead letter, audit entry, log line and span, into DuckDB, in
batches, once; and the memory of past tasks (agents/recorder/memory.py), which it keeps
from `memory.recorded` events and answers searches of.

It acks a batch only after the store committed it, so a crash loses nothing; the store
ignores event ids it already has, so the redelivery that follows duplicates nothing.
Readers never touch the database file: the recorder publishes Parquet segments for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from agents.base import Agent
from agents.embeddings import Embedder, EmbeddingConfig
from agents.recorder.memory import MemoryService
from agents.settings import Settings
from bus import BatchConsumer, Bus, Delivery, Source
from bus import constants as c
from bus.topology import find_consumer
from schemas import utcnow
from store.errors import StoreError
from store.memory import MemoryStore
from store.writer import AuditRecord, DeadLetter, EventStore, LogLine, RecordedEvent, SpanRow

# Compaction and retention are cheap but not free: do them now and then.
MAINTENANCE_EVERY = 30


class Recorder(Agent):
    role = "recorder"

    def __init__(self, bus: Bus, settings: Settings, agent_id: str | None = None) -> None:
        super().__init__(bus, settings, agent_id)
        self.store = EventStore(settings.store_path, settings.published_dir)
        config = EmbeddingConfig.from_settings(settings)
        embedder = Embedder(config) if config is not None else None
        self.memory = MemoryService(
            bus, MemoryStore(settings.memory_path), self.id, self.log, embedder
        )
        self.recorded = 0

    async def main(self) -> None:
        self.settings.store_path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.store.open)
        await self.memory.start()
        topology = self.settings.topology()
        consumers = [
            BatchConsumer(
                self.bus,
                Source(stream, durable),
                handle,
                config=find_consumer(topology, stream, durable),
                name=durable,
                batch=self.settings.record_batch,
                poll_s=self.settings.fetch_poll_s,
                grace_s=self.settings.shutdown_grace_s,
                logger=self.log,
            )
            for stream, durable, handle in (
                (c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER, self._events),
                (c.DLQ_STREAM, c.RECORDER_DLQ_CONSUMER, self._letters),
                (c.AUDIT_STREAM, c.RECORDER_AUDIT_CONSUMER, self._audit),
                (c.LOGS_STREAM, c.RECORDER_LOGS_CONSUMER, self._logs),
                (c.SPANS_STREAM, c.RECORDER_SPANS_CONSUMER, self._spans),
            )
        ]
        try:
            await self.consume(*consumers, also=[self._publish_loop()])
            await self._publish(maintain=False)
        finally:
            await self.memory.stop()
            await asyncio.to_thread(self.store.close)

    async def _events(self, batch: list[Delivery]) -> None:
        """Store a batch of events (the runtime acks it once this returns)."""
        records = await self._parsed(
            batch, lambda d, data: RecordedEvent.from_event_json(data, d.seq), "events", "event"
        )
        inserted = await asyncio.to_thread(self.store.ingest, records)
        await self.memory.take(batch)
        self.recorded += inserted
        self.log.debug("recorded %d of %d events", inserted, len(batch))

    async def _letters(self, batch: list[Delivery]) -> None:
        letters = [
            DeadLetter.from_message(
                d.subject, d.data, d.headers, d.seq, d.timestamp or datetime.now(UTC)
            )
            for d in batch
        ]
        await asyncio.to_thread(self.store.ingest_dead_letters, letters)

    async def _audit(self, batch: list[Delivery]) -> None:
        records = await self._parsed(
            batch, lambda d, data: AuditRecord.from_json(data, d.seq), "audit", "audit entry"
        )
        await asyncio.to_thread(self.store.ingest_audit, records)

    async def _logs(self, batch: list[Delivery]) -> None:
        records = await self._parsed(
            batch,
            lambda d, data: LogLine.from_message(d.subject, data, d.seq),
            "logs",
            "log line",
        )
        await asyncio.to_thread(self.store.ingest_logs, records)

    async def _spans(self, batch: list[Delivery]) -> None:
        # A message holds several spans, one a line (bus/span_shipper.py).
        records = await self._parsed(
            batch,
            lambda d, line: SpanRow.from_message(d.subject, line, d.seq),
            "spans",
            "span",
            lines=True,
        )
        await asyncio.to_thread(self.store.ingest_spans, records)

    async def _parsed[R](
        self,
        batch: list[Delivery],
        parse: Callable[[Delivery, bytes], R],
        origin: str,
        what: str,
        *,
        lines: bool = False,
    ) -> list[R]:
        """The batch's records (with `lines`, one per line of a message); what cannot be
        one is not ours to fix: a dead-letter copy with the reason, and on."""
        records: list[R] = []
        for delivery in batch:
            items = (
                [x for x in delivery.data.split(b"\n") if x.strip()] if lines else [delivery.data]
            )
            for part, item in enumerate(items):
                try:
                    records.append(parse(delivery, item))
                except StoreError as exc:
                    await self.bus.dead_letter(
                        origin,
                        item,
                        f"unrecordable {what}: {exc}",
                        f"invalid_{origin.removesuffix('s')}",
                        subject=delivery.subject,
                        seq=delivery.seq,
                        part=part,
                    )
        return records

    async def _publish_loop(self) -> None:
        """Publish readers' segments now and then, with maintenance once in a while."""
        publishes = 0
        while not await self.wait_stopping(self.settings.store_publish_interval_s):
            publishes += 1
            await self._publish(maintain=publishes % MAINTENANCE_EVERY == 0)

    async def _publish(self, *, maintain: bool) -> None:
        try:
            await asyncio.to_thread(self.store.publish)
            if maintain:
                cutoff = utcnow() - timedelta(seconds=self.settings.store_retention_s)
                removed = await asyncio.to_thread(self.store.prune, cutoff)
                if removed:
                    self.log.info("retention removed %d events older than %s", removed, cutoff)
                await asyncio.to_thread(self.store.compact)
        except (StoreError, OSError):
            # Readers see slightly older data; the next round tries again.
            self.log.warning("publishing the store failed", exc_info=True)

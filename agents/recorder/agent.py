"""The recorder: every event and dead letter, into DuckDB, in batches, exactly once.

It acks a batch only after the store committed it, so a crash loses nothing; the store
ignores event ids it already has, so the redelivery that follows duplicates nothing.
Readers never touch the database file: the recorder publishes Parquet segments for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from nats.aio.msg import Msg

from agents.base import Agent
from agents.settings import Settings
from bus import Bus
from bus import constants as c
from bus.batch import BatchPuller, stream_seq
from bus.topology import find_consumer, reset_to_ack_floor
from schemas import utcnow
from store.errors import StoreError
from store.writer import DeadLetter, EventStore, RecordedEvent

# Compaction and retention are cheap but not free: do them now and then.
MAINTENANCE_EVERY = 30


class Recorder(Agent):
    role = "recorder"

    def __init__(self, bus: Bus, settings: Settings, agent_id: str | None = None) -> None:
        super().__init__(bus, settings, agent_id)
        self.store = EventStore(settings.store_path, settings.published_dir)
        self.recorded = 0
        self._commit: asyncio.Task[None] | None = None

    async def main(self) -> None:
        self.settings.store_path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.store.open)
        for stream, durable in (
            (c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER),
            (c.DLQ_STREAM, c.RECORDER_DLQ_CONSUMER),
        ):
            config = find_consumer(self.settings.topology(), stream, durable)
            if await reset_to_ack_floor(self.bus.js, stream, config):
                self.log.info("%s: reading again what a previous recorder left unacked", durable)
        events = await BatchPuller(self.bus.nc, c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER).start()
        letters = await BatchPuller(self.bus.nc, c.DLQ_STREAM, c.RECORDER_DLQ_CONSUMER).start()
        dead_letter = self.bus.dead_letterer("events")
        self.ready.set()
        loop = asyncio.get_running_loop()
        published_at = loop.time()
        publishes = 0
        try:
            while not self.stopping.is_set():
                got = await self._events(events, dead_letter)
                # Dead letters are rare: look for them only when the event stream has
                # no full batch waiting, so a backlog is not slowed by an empty poll.
                if got < self.settings.record_batch:
                    got += await self._letters(letters)
                if loop.time() - published_at >= self.settings.store_publish_interval_s:
                    await self._committed()
                    published_at = loop.time()
                    publishes += 1
                    await self._publish(maintain=publishes % MAINTENANCE_EVERY == 0)
                if not got:
                    await self._committed()
                    await self.wait_stopping(0.05)
            await self._committed()
            await self._publish(maintain=False)
        finally:
            if self._commit is not None:
                with contextlib.suppress(Exception):
                    await self._commit  # unacked if it failed: redelivered, not lost
            await events.stop()
            await letters.stop()
            await asyncio.to_thread(self.store.close)

    async def _events(self, puller: BatchPuller, dead_letter: Any) -> int:
        msgs = await puller.drain(self.settings.record_batch, self.settings.fetch_poll_s)
        if not msgs:
            return 0
        batch: list[RecordedEvent] = []
        for msg in msgs:
            try:
                batch.append(RecordedEvent.from_event_json(msg.data, stream_seq(msg)))
            except StoreError as exc:
                # Not ours to fix: keep a copy with the reason and move on.
                await dead_letter(msg, f"unrecordable event: {exc}", "invalid_event")
        # The commit runs in a thread while the next batch is fetched and parsed; its
        # messages are acked when it is done, before the next commit starts.
        await self._committed()
        self._commit = asyncio.create_task(self._commit_batch(batch, msgs))
        return len(msgs)

    async def _commit_batch(self, batch: list[RecordedEvent], msgs: list[Msg]) -> None:
        inserted = await asyncio.to_thread(self.store.ingest, batch)
        await msgs[-1].ack()  # the consumer acks all: this settles the whole batch
        self.recorded += inserted
        self.log.debug("recorded %d of %d events", inserted, len(msgs))

    async def _committed(self) -> None:
        """Wait for the batch being committed, if any (raising what its commit raised)."""
        if self._commit is not None:
            commit, self._commit = self._commit, None
            await commit

    async def _letters(self, puller: BatchPuller) -> int:
        msgs = await puller.drain(self.settings.record_batch, self.settings.fetch_poll_s)
        if not msgs:
            return 0
        batch = [
            DeadLetter.from_message(
                msg.subject,
                msg.data,
                msg.headers,
                msg.metadata.sequence.stream,
                msg.metadata.timestamp,
            )
            for msg in msgs
        ]
        await asyncio.to_thread(self.store.ingest_dead_letters, batch)
        await msgs[-1].ack()
        return len(msgs)

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

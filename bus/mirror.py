"""A bucket read from memory, kept current by a watch on the bucket's stream.

The planner reads a ticket and every one of its tasks on each reconcile; from the server
that is a round trip per key, and it was most of the planner's time. A mirror turns
those reads into dictionary lookups. Writes still go to the server with compare-and-set,
so a stale copy can delay a decision but never produce a wrong write: a conflict re-reads
from the server (see `Bucket.update_versioned`).

Freshness: an event names the revision of the state it announces, and
`caught_up(key, revision)` waits until the mirror holds it, reading the key directly if
the watch is slow. The planner forgets a ticket's keys once the ticket has finished, so
the mirror holds the work in flight, not the whole history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue
from pydantic import BaseModel

from bus.delivery import ack_fields
from bus.retry import Patience
from bus.state import Bucket, Versioned

log = logging.getLogger(__name__)

# Parsed values kept for reuse; the raw JSON of every key is kept regardless.
PARSED_CACHE = 8192
# How many deleted or forgotten keys are remembered (late echoes arrive within moments).
GONE_REMEMBERED = 16384


class MirroredBucket[M: BaseModel](Bucket[M]):
    """Values handed out are shared between readers: treat them as read-only."""

    def __init__(
        self, kv: KeyValue, model: type[M], patience: Patience | None = None, *, stream: str
    ) -> None:
        super().__init__(kv, model, patience)
        self._stream = stream
        self._prefix = f"$KV.{stream.removeprefix('KV_')}."
        self._raw: dict[str, tuple[bytes, int]] = {}
        self._groups: dict[str, set[str]] = {}
        self._parsed: OrderedDict[str, Versioned[M]] = OrderedDict()
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        # Keys recently deleted or forgotten, with the revision they had: a late echo of
        # an older write (the watch, or a direct read in flight) must not bring them back.
        self._gone: OrderedDict[str, int] = OrderedDict()
        self._sub: Subscription | None = None
        self._synced = asyncio.Event()

    async def start(self, js: JetStreamContext, timeout: float = 60.0) -> None:
        """Load every key, then follow changes. Returns once the initial load is done."""
        info = await js.stream_info(self._stream)
        if info.state.messages == 0:
            self._synced.set()
        self._sub = await js.subscribe(
            f"{self._prefix}>",
            stream=self._stream,
            cb=self._on_msg,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=300.0,
            # A lost consumer (its server died) is noticed after two missed heartbeats and
            # recreated from the last sequence seen; the default 5 s is slow to recover.
            idle_heartbeat=1.0,
        )
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        # Waiters go on with what the mirror holds; their writes are compare-and-set anyway.
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._waiters.clear()

    async def _on_msg(self, msg: Msg) -> None:
        key = msg.subject[len(self._prefix) :]
        op = msg.header.get(KV_OP) if msg.header else None
        if op is None and msg.header and msg.header.get("Nats-Marker-Reason"):
            op = KV_DEL
        # Every write to the bucket comes through here: read the revision straight from the
        # reply subject, and the full metadata only while the initial load is running.
        revision = ack_fields(msg.reply)[0]
        if op in (KV_DEL, KV_PURGE):
            self._bury(key, revision)
            have = self._raw.get(key)
            if have is not None and have[1] <= revision:
                self._drop(key)
        else:
            self._store(key, msg.data, revision)
        self._wake(key)
        if not self._synced.is_set() and msg.metadata.num_pending == 0:
            self._synced.set()

    # Reading

    async def get(self, key: str) -> Versioned[M] | None:
        found = self._cached(key)
        return found if found is not None else await self.read(key)

    async def get_cached(self, key: str) -> M | None:
        found = self._cached(key)
        return found.value if found is not None else None

    async def read(self, key: str) -> Versioned[M] | None:
        found = await super().read(key)
        if found is not None:
            self._store(key, found.value.model_dump_json().encode(), found.revision)
        return found

    async def _current(self, key: str) -> tuple[Versioned[M] | None, bool]:
        found = self._cached(key)
        if found is not None:
            return found, False
        return await self.read(key), True

    async def values(self) -> list[M]:
        """What the mirror holds: every key not forgotten."""
        out = []
        for key in list(self._raw):
            found = self._cached(key)
            if found is not None:
                out.append(found.value)
        return out

    def _cached(self, key: str) -> Versioned[M] | None:
        have = self._raw.get(key)
        if have is None:
            return None
        data, revision = have
        found = self._parsed.get(key)
        if found is not None and found.revision == revision:
            self._parsed.move_to_end(key)
            return found
        found = Versioned(self.model.model_validate_json(data), revision, data)
        self._remember(key, found)
        return found

    async def caught_up(self, key: str, revision: int, timeout: float = 1.0) -> None:
        """Return once the mirror holds `key` at `revision` or later."""
        have = self._raw.get(key)
        if have is None:
            # Unknown or forgotten: the watch will not bring it again, read it.
            await self.read(key)
            return
        if have[1] >= revision:
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (revision, fut)
        self._waiters.setdefault(key, []).append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            log.debug("mirror of %s slow to reach revision %d; reading it", key, revision)
            await self.read(key)
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None and entry in waiters:
                waiters.remove(entry)
                if not waiters:
                    del self._waiters[key]

    # Keeping it current

    def wrote(self, key: str, written: Versioned[M], data: bytes | None = None) -> None:
        if data is None:
            data = written.value.model_dump_json().encode()
        # Only the bytes: the caller keeps `written.value` and may change it.
        self._store(key, data, written.revision)

    def forget(self, group: str) -> None:
        """Drop every key of `group` (the key's first token: a ticket id)."""
        for key in self._groups.pop(group, set()):
            have = self._raw.pop(key, None)
            self._parsed.pop(key, None)
            if have is not None:
                self._bury(key, have[1])

    def _store(self, key: str, data: bytes, revision: int) -> None:
        have = self._raw.get(key)
        if (have is not None and have[1] >= revision) or self._gone.get(key, 0) >= revision:
            return
        self._raw[key] = (data, revision)
        self._groups.setdefault(key.split(".", 1)[0], set()).add(key)
        self._parsed.pop(key, None)
        self._wake(key)

    def _bury(self, key: str, revision: int) -> None:
        self._gone[key] = max(revision, self._gone.get(key, 0))
        self._gone.move_to_end(key)
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)

    def _drop(self, key: str) -> None:
        self._raw.pop(key, None)
        self._parsed.pop(key, None)
        group = self._groups.get(key.split(".", 1)[0])
        if group is not None:
            group.discard(key)

    def _remember(self, key: str, found: Versioned[M]) -> None:
        self._parsed[key] = found
        self._parsed.move_to_end(key)
        while len(self._parsed) > PARSED_CACHE:
            self._parsed.popitem(last=False)

    def _wake(self, key: str) -> None:
        waiters = self._waiters.get(key)
        have = self._raw.get(key)
        if not waiters or have is None:
            return
        for revision, fut in waiters:
            if revision <= have[1] and not fut.done():
                fut.set_result(None)

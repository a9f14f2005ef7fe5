"""Typed KV buckets with compare-and-set updates.

Every write to ticket and task state goes through `Bucket.update`, which re-reads and
re-applies the change when another agent wrote first: two agents never overwrite each
other, and a change function sees the latest state each time it runs.

Passing NATS trouble (a leader election, a reconnect) is retried. A write whose answer
was lost may still have been stored, so after such a failure a conflict is checked
against the bytes this process tried to write: finding them means the write landed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from bus.errors import ConflictError
from bus.retry import Patience

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 50


@dataclass(frozen=True)
class Versioned[M: BaseModel]:
    value: M
    revision: int
    # The stored JSON, when at hand: parsing it is the cheapest private copy of `value`.
    data: bytes | None = None

    def copy(self) -> M:
        """A private copy of `value`, to change (a fraction of a deep copy's cost)."""
        data = self.data if self.data is not None else self.value.model_dump_json().encode()
        return type(self.value).model_validate_json(data)


class Bucket[M: BaseModel]:
    """One KV bucket whose values are JSON documents of model `M`."""

    def __init__(self, kv: KeyValue, model: type[M], patience: Patience | None = None) -> None:
        self.kv = kv
        self.model = model
        self.patience = patience or Patience(None)

    async def get(self, key: str) -> Versioned[M] | None:
        return await self.read(key)

    async def read(self, key: str) -> Versioned[M] | None:
        """The value as the server has it now (never from a cache)."""
        try:
            entry = await self.patience.run(lambda: self.kv.get(key), f"reading {key}")
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if entry.value is None:
            return None
        return Versioned(
            self.model.model_validate_json(entry.value), entry.revision or 0, entry.value
        )

    async def get_cached(self, key: str) -> M | None:
        """The value if this process holds it without asking the server. A plain bucket
        holds nothing, so it reads; a mirror answers from memory (None if not held)."""
        return await self.value(key)

    async def value(self, key: str) -> M | None:
        found = await self.get(key)
        return found.value if found else None

    async def create(self, key: str, value: M) -> bool:
        """Store `value` unless the key exists; False means somebody created it first."""
        data = value.model_dump_json().encode()
        ambiguous = False

        async def lost_answer(_: BaseException) -> None:
            nonlocal ambiguous
            ambiguous = True

        try:
            revision = await self.patience.run(
                lambda: self.kv.create(key, data), f"creating {key}", on_retry=lost_answer
            )
        except KeyWrongLastSequenceError:
            if not ambiguous:
                return False
            found = await self.read(key)
            if found is None or found.data != data:
                return False
            revision = found.revision  # our own create, whose answer was lost
        self.wrote(key, Versioned(value, int(revision)), data)
        return True

    async def put(self, key: str, value: M) -> int:
        data = value.model_dump_json().encode()
        return int(await self.patience.run(lambda: self.kv.put(key, data), f"writing {key}"))

    async def update(
        self, key: str, change: Callable[[M], M | None], *, known: Versioned[M] | None = None
    ) -> M | None:
        """Apply `change` to the current value with compare-and-set, retrying on conflict.

        `change` gets a private copy and returns the new value, or None to leave the
        key untouched. Returns what was written, or None if nothing was (missing key or
        no change). See `update_versioned` for `known`.
        """
        written = await self.update_versioned(key, change, known=known)
        return written.value if written is not None else None

    async def update_versioned(
        self, key: str, change: Callable[[M], M | None], *, known: Versioned[M] | None = None
    ) -> Versioned[M] | None:
        """`update`, returning the written value with its new revision.

        `known` is a value the caller already holds (the snapshot a dispatch carried,
        the result of its own last write). The first attempt writes against it without
        reading: the compare-and-set proves it current, and a conflict falls back to a
        fresh read. A change that declines (returns None) on a value that may be stale
        is asked again on a fresh one, so declining always reflects the latest state.
        """
        current, fresh = (known, False) if known is not None else await self._current(key)
        for _ in range(MAX_CAS_ATTEMPTS):
            if current is None:
                return None
            new = change(current.copy())
            if new is None:
                if fresh:
                    return None
                current, fresh = await self.read(key), True
                continue
            data = new.model_dump_json().encode()
            try:
                revision = await self._write(key, data, current.revision)
            except KeyWrongLastSequenceError:
                log.debug("CAS conflict on %s, retrying", key)
                current, fresh = await self.read(key), True
                continue
            written = Versioned(new, revision, data)
            self.wrote(key, written, data)
            return written
        raise ConflictError(f"gave up updating {key!r} after {MAX_CAS_ATTEMPTS} conflicts")

    async def _write(self, key: str, data: bytes, last: int) -> int:
        """One compare-and-set, retried through passing trouble; the new revision.

        When a try's answer was lost and the retry then conflicts, the key may hold our
        own write: the bytes tell (they carry the writer's timestamps, so another
        writer's never match)."""
        ambiguous = False

        async def lost_answer(_: BaseException) -> None:
            nonlocal ambiguous
            ambiguous = True

        try:
            return int(
                await self.patience.run(
                    lambda: self.kv.update(key, data, last=last),
                    f"updating {key}",
                    on_retry=lost_answer,
                )
            )
        except KeyWrongLastSequenceError:
            if ambiguous:
                found = await self.read(key)
                if found is not None and found.data == data:
                    return found.revision
            raise

    async def _current(self, key: str) -> tuple[Versioned[M] | None, bool]:
        """The value to start an update from, and whether it is known to be the latest."""
        return await self.read(key), True

    # Hooks for a cached bucket (`bus.mirror.MirroredBucket`); reads here are always fresh.

    def wrote(self, key: str, written: Versioned[M], data: bytes | None = None) -> None:
        """This process just wrote `written` (serialised as `data`)."""

    async def caught_up(self, key: str, revision: int, timeout: float = 1.0) -> None:
        """Return once reads of `key` see `revision` or later."""

    def forget(self, group: str) -> None:
        """Drop cached keys of `group` (a ticket id)."""

    async def keys(self) -> list[str]:
        """Every key with an entry, from the stream's own subject index.

        A key deleted or purged keeps a marker, so it may be listed: its `value` is None.

        Not nats-py's `kv.keys()`: its watcher calls the listing complete when a
        consumer-info reply counts nothing pending and no delivery has arrived yet, and
        that reply can overtake the deliveries it counts. The list then comes back empty
        (the gateway's ticket list did, about one read in ten under load). Stream info is
        one request answered from the stream's state, and makes no consumer.
        """
        # nats-py exposes neither the bucket's stream nor its prefix, hence its internals.
        stream, prefix = self.kv._stream, self.kv._pre
        subjects = await self.patience.run(
            lambda: stream_subjects(self.kv._js, stream, f"{prefix}>"), "listing keys"
        )
        return [subject[len(prefix) :] for subject in subjects]

    async def values(self) -> list[M]:
        out = []
        for key in await self.keys():
            found = await self.value(key)
            if found is not None:
                out.append(found)
        return out

    async def delete(self, key: str) -> None:
        await self.patience.run(lambda: self.kv.delete(key), f"deleting {key}")


async def stream_subjects(js: JetStreamContext, stream: str, subjects: str) -> dict[str, int]:
    """How many messages `stream` holds on each subject matching `subjects`, now: one
    stream-info request per 100,000 subjects (the server pages them, sorted)."""
    found: dict[str, int] = {}
    while True:
        request = {"subjects_filter": subjects, "offset": len(found)}
        # nats-py's `stream_info` drops the paging fields of the reply.
        reply = await js._api_request(
            f"{js._prefix}.STREAM.INFO.{stream}", json.dumps(request).encode(), js._timeout
        )
        page = (reply.get("state") or {}).get("subjects") or {}
        found.update(page)
        if not page or len(found) >= int(reply.get("total") or 0):
            return found

"""Typed KV buckets with compare-and-set updates.

Every write to ticket and task state goes through `Bucket.update`, which re-reads and
re-applies the change when another agent wrote first: two agents never overwrite each
other, and a change function sees the latest state each time it runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from bus.errors import ConflictError

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

    def __init__(self, kv: KeyValue, model: type[M]) -> None:
        self.kv = kv
        self.model = model

    async def get(self, key: str) -> Versioned[M] | None:
        return await self.read(key)

    async def read(self, key: str) -> Versioned[M] | None:
        """The value as the server has it now (never from a cache)."""
        try:
            entry = await self.kv.get(key)
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
        try:
            data = value.model_dump_json().encode()
            revision = await self.kv.create(key, data)
        except KeyWrongLastSequenceError:
            return False
        self.wrote(key, Versioned(value, int(revision)), data)
        return True

    async def put(self, key: str, value: M) -> int:
        return int(await self.kv.put(key, value.model_dump_json().encode()))

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
                revision = await self.kv.update(key, data, last=current.revision)
            except KeyWrongLastSequenceError:
                log.debug("CAS conflict on %s, retrying", key)
                current, fresh = await self.read(key), True
                continue
            written = Versioned(new, int(revision), data)
            self.wrote(key, written, data)
            return written
        raise ConflictError(f"gave up updating {key!r} after {MAX_CAS_ATTEMPTS} conflicts")

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
        # nats-py exposes neither the bucket's stream and prefix nor the paging fields of
        # a stream-info reply, hence its internals here.
        js, stream, prefix = self.kv._js, self.kv._stream, self.kv._pre
        keys: list[str] = []
        while True:
            request = {"subjects_filter": f"{prefix}>", "offset": len(keys)}
            reply = await js._api_request(
                f"{js._prefix}.STREAM.INFO.{stream}", json.dumps(request).encode(), js._timeout
            )
            # The server pages subjects (100,000 per reply), sorted, from `offset`.
            subjects = (reply.get("state") or {}).get("subjects") or {}
            keys.extend(subject[len(prefix) :] for subject in subjects)
            if not subjects or len(keys) >= int(reply.get("total") or 0):
                return keys

    async def values(self) -> list[M]:
        out = []
        for key in await self.keys():
            found = await self.value(key)
            if found is not None:
                out.append(found)
        return out

    async def delete(self, key: str) -> None:
        await self.kv.delete(key)

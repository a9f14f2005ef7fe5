"""Typed KV buckets with compare-and-set updates.

Every write to ticket and task state goes through `Bucket.update`, which re-reads and
re-applies the change when another agent wrote first: two agents never overwrite each
other, and a change function sees the latest state each time it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from bus.errors import ConflictError

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 50


@dataclass(frozen=True)
class Versioned[M: BaseModel]:
    value: M
    revision: int


class Bucket[M: BaseModel]:
    """One KV bucket whose values are JSON documents of model `M`."""

    def __init__(self, kv: KeyValue, model: type[M]) -> None:
        self.kv = kv
        self.model = model

    async def get(self, key: str) -> Versioned[M] | None:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if entry.value is None:
            return None
        return Versioned(self.model.model_validate_json(entry.value), entry.revision or 0)

    async def value(self, key: str) -> M | None:
        found = await self.get(key)
        return found.value if found else None

    async def create(self, key: str, value: M) -> bool:
        """Store `value` unless the key exists; False means somebody created it first."""
        try:
            await self.kv.create(key, value.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        return True

    async def put(self, key: str, value: M) -> int:
        return int(await self.kv.put(key, value.model_dump_json().encode()))

    async def update(self, key: str, change: Callable[[M], M | None]) -> M | None:
        """Apply `change` to the current value with compare-and-set, retrying on conflict.

        `change` gets a private copy and returns the new value, or None to leave the
        key untouched. Returns what was written, or None if nothing was (missing key or
        no change).
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            current = await self.get(key)
            if current is None:
                return None
            new = change(current.value.model_copy(deep=True))
            if new is None:
                return None
            try:
                await self.kv.update(key, new.model_dump_json().encode(), last=current.revision)
            except KeyWrongLastSequenceError:
                log.debug("CAS conflict on %s, retrying", key)
                continue
            return new
        raise ConflictError(f"gave up updating {key!r} after {MAX_CAS_ATTEMPTS} conflicts")

    async def keys(self) -> list[str]:
        try:
            return list(await self.kv.keys())
        except NoKeysError:
            return []

    async def values(self) -> list[M]:
        out = []
        for key in await self.keys():
            found = await self.value(key)
            if found is not None:
                out.append(found)
        return out

    async def delete(self, key: str) -> None:
        await self.kv.delete(key)

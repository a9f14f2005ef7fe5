"""Files in a JetStream object store: compare-and-set puts, and gets that verify what they read.

The layout is JetStream's own, so `nats object get` and nats-py's `ObjectStore` read what
this writes: an object's bytes are chunks on `$O.<bucket>.C.<nuid>`, and its description
(name, size, chunk count, SHA-256 digest, headers) is the one message on
`$O.<bucket>.M.<base64 name>`, each new one rolling up the last. That message's stream
sequence is the object's revision.

Not nats-py's `ObjectStore.put` and `get`, because
- its put cannot be conditional, so of two writers the last silently wins; here
  `put(..., replacing=current)` stores only if the object is still `current` (with
  `Nats-Expected-Last-Subject-Sequence`), and otherwise raises `ConflictError`;
- its get reads chunks through an ordered consumer until one says nothing is pending, so
  it waits forever when chunks are gone (an object replaced mid-read) and builds the
  whole object in memory; here chunks are read one message get at a time into a file,
  and their count, size and digest are checked (`ObjectCorrupt` if they do not add up);
- its calls fail on the first timeout; here each rides out passing trouble through the
  bus's `Patience`, and a retried chunk publish is stored once (it carries a msg id).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from bus import constants as c
from bus.errors import BusError, ConflictError
from bus.retry import Patience

log = logging.getLogger(__name__)

CHUNK_BYTES = 128 * 1024  # what nats-py and the nats CLI use
DIGEST_PREFIX = "SHA-256="
# JetStream error codes: a conditional publish lost; the stream does not exist.
WRONG_LAST_SEQUENCE = 10071
STREAM_NOT_FOUND = 10059
# An object replaced while it was read is read again, this many times at most.
READ_ROUNDS = 3
CLEANUP_TIMEOUT_S = 5.0


class ObjectError(BusError):
    """An object could not be read as stored."""


class ObjectMissing(ObjectError):
    """No such object (never stored, or deleted)."""


class ObjectCorrupt(ObjectError):
    """The object's description or chunks do not add up: missing chunks, wrong size, a
    digest mismatch, an unreadable description."""


@dataclass(frozen=True)
class StoredObject:
    name: str
    revision: int  # the stream sequence of its description; what `put` compares against
    size: int
    chunks: int
    digest: str
    nuid: str
    headers: dict[str, str]


class ObjectBucket:
    """One object store bucket, read and written with the bus's patience."""

    def __init__(
        self, js: JetStreamContext, bucket: str, patience: Patience, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self.js = js
        self.bucket = bucket
        self.stream = c.obj_stream(bucket)
        self.patience = patience
        self.chunk_bytes = chunk_bytes

    def meta_subject(self, name: str) -> str:
        return f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"

    def chunk_subject(self, nuid: str) -> str:
        return f"$O.{self.bucket}.C.{nuid}"

    async def info(self, name: str) -> StoredObject | None:
        """The object's description as the stream's leader has it now; None if absent."""
        return (await self._described(name))[0]

    async def _described(self, name: str) -> tuple[StoredObject | None, int]:
        """The live object, if any, and the revision of the last description (0: none).
        A deleted object leaves a description marked deleted, with its own revision."""
        subject = self.meta_subject(name)
        try:
            msg = await self.patience.run(
                partial(self.js.get_last_msg, self.stream, subject), f"reading object {name}"
            )
        except NotFoundError as exc:
            if getattr(exc, "err_code", None) == STREAM_NOT_FOUND:
                raise BusError(f"object store {self.bucket} does not exist") from exc
            return None, 0
        revision = int(msg.seq or 0)
        try:
            meta = json.loads(msg.data or b"")
            if meta.get("deleted"):
                return None, revision
            stored = StoredObject(
                name=name,
                revision=revision,
                size=int(meta.get("size") or 0),
                chunks=int(meta.get("chunks") or 0),
                digest=str(meta.get("digest") or ""),
                nuid=str(meta["nuid"]),
                headers=_flat_headers(meta.get("headers")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ObjectCorrupt(f"object {name}: unreadable description ({exc})") from exc
        return stored, revision

    async def get(self, name: str, dest: Path) -> StoredObject:
        """Write the object's bytes to `dest`, verified; returns the description read."""
        for _ in range(READ_ROUNDS):
            stored = await self.info(name)
            if stored is None:
                raise ObjectMissing(f"no object {name} in {self.bucket}")
            try:
                await self._read(stored, dest)
                return stored
            except _ChunkGone as gone:
                latest = await self.info(name)
                if latest is None or latest.revision == stored.revision:
                    raise ObjectCorrupt(f"object {name}: {gone}") from None
                # Replaced while we read it (its chunks purged): read the new one.
        raise ObjectCorrupt(f"object {name} was replaced {READ_ROUNDS} times while being read")

    async def _read(self, stored: StoredObject, dest: Path) -> None:
        subject = self.chunk_subject(stored.nuid)
        digest = hashlib.sha256()
        size, seq = 0, 1
        with dest.open("wb") as out:
            for number in range(stored.chunks):
                try:
                    msg = await self.patience.run(
                        partial(self.js.get_msg, self.stream, seq=seq, subject=subject, next=True),
                        f"reading object {stored.name}",
                    )
                except NotFoundError:
                    raise _ChunkGone(f"chunk {number + 1} of {stored.chunks} is missing") from None
                data = msg.data or b""
                out.write(data)
                digest.update(data)
                size += len(data)
                seq = int(msg.seq or seq) + 1
        if size != stored.size:
            raise ObjectCorrupt(f"object {stored.name}: {size} bytes read, {stored.size} stored")
        expected = _digest_bytes(stored.digest)
        if expected is None:
            raise ObjectCorrupt(f"object {stored.name}: unreadable digest {stored.digest!r}")
        if digest.digest() != expected:
            raise ObjectCorrupt(
                f"object {stored.name}: digest mismatch (stored {stored.digest}, "
                f"read {_digest_text(digest.digest())})"
            )

    async def put(
        self,
        name: str,
        source: Path,
        *,
        headers: Mapping[str, str],
        replacing: StoredObject | None,
    ) -> StoredObject:
        """Store `source` as `name` if the object is still `replacing` (None: if there is
        none); otherwise `ConflictError`, and nothing changes."""
        if replacing is not None:
            expected = replacing.revision
        else:
            live, expected = await self._described(name)  # a deleted one's marker counts
            if live is not None:
                raise ConflictError(f"object {name} exists (revision {live.revision})")
        nuid = uuid.uuid4().hex
        subject = self.chunk_subject(nuid)
        digest = hashlib.sha256()
        size = chunks = 0
        try:
            with source.open("rb") as src:
                while data := src.read(self.chunk_bytes):
                    publish = partial(
                        self.js.publish, subject, data, headers={c.HDR_MSG_ID: f"{nuid}.{chunks}"}
                    )
                    await self.patience.run(publish, f"writing object {name}")
                    digest.update(data)
                    size += len(data)
                    chunks += 1
        except BaseException:
            await self._purge_quietly(subject)
            raise
        meta = {
            "name": name,
            "headers": {key: [value] for key, value in headers.items()},
            "options": {"max_chunk_size": self.chunk_bytes},
            "bucket": self.bucket,
            "nuid": nuid,
            "size": size,
            "mtime": datetime.now(UTC).isoformat(),
            "chunks": chunks,
            "digest": _digest_text(digest.digest()),
        }
        try:
            revision = await self._describe(name, meta, expected)
        except ConflictError:
            # Only a lost compare-and-set surely leaves the chunks unused; after another
            # failure the description may have been stored, so they stay.
            await self._purge_quietly(subject)
            raise
        if replacing is not None:
            await self._purge_quietly(self.chunk_subject(replacing.nuid))
        return StoredObject(
            name, revision, size, chunks, _digest_text(digest.digest()), nuid, dict(headers)
        )

    async def _describe(self, name: str, meta: dict[str, Any], expected: int) -> int:
        """Publish the description if the last one is still revision `expected`; its
        stream sequence."""
        headers = {
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            c.HDR_MSG_ID: f"{meta['nuid']}.meta",
        }
        publish = partial(
            self.js.publish, self.meta_subject(name), json.dumps(meta).encode(), headers=headers
        )
        ambiguous = False

        async def lost_answer(_: BaseException) -> None:
            nonlocal ambiguous
            ambiguous = True

        try:
            ack = await self.patience.run(publish, f"writing object {name}", on_retry=lost_answer)
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            if ambiguous:  # the first try may have landed, its answer lost
                current = await self.info(name)
                if current is not None and current.nuid == meta["nuid"]:
                    return current.revision
            raise ConflictError(f"object {name} changed since revision {expected}") from exc
        return int(ack.seq)

    async def _purge_quietly(self, subject: str) -> None:
        """Drop chunks nobody refers to. Best effort: left over, they only take space."""
        try:
            await asyncio.wait_for(
                self.js.purge_stream(self.stream, subject=subject), CLEANUP_TIMEOUT_S
            )
        except Exception:
            log.warning("could not remove chunks %s", subject, exc_info=True)


class _ChunkGone(Exception):
    pass


def _flat_headers(raw: object) -> dict[str, str]:
    """Object headers as one value per name (the wire form allows lists, like NATS's)."""
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise TypeError("headers are not a mapping")
    flat = {}
    for key, value in raw.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        flat[str(key)] = str(value)
    return flat


def _digest_text(digest: bytes) -> str:
    return DIGEST_PREFIX + base64.urlsafe_b64encode(digest).decode()


def _digest_bytes(text: str) -> bytes | None:
    if not text.upper().startswith(DIGEST_PREFIX.upper()):
        return None
    encoded = text[len(DIGEST_PREFIX) :]
    with contextlib.suppress(ValueError):
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    return None

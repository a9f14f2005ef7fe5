"""JetStream stream snapshots and restores, the protocol `nats stream backup/restore` speak.

nats-py has no client for it, so it is spoken here over the raw connection:

- Snapshot: a request on `$JS.API.STREAM.SNAPSHOT.<stream>` names a deliver subject. The
  server answers with the stream's config and state, then sends the snapshot (an
  S2-compressed tar of the stream's message blocks and, asked for, every consumer's
  config and state) to that subject in chunks. Each chunk but the last carries a reply
  subject, and the server keeps only a window of unacknowledged chunks in flight: a reply
  per chunk is the flow control. An empty message ends it; its `Status` header is 204 on
  success, or the error (408 when our replies stopped for 5 s, 500 on a store failure).
- Restore: a request on `$JS.API.STREAM.RESTORE.<stream>` with the config and state
  returns a deliver subject. Each chunk is sent there as a request (an empty reply means
  stored, a JSON one is an error), and an empty request ends it; its reply is a stream
  create response once the server has rebuilt the stream and its consumers.

The reference is jsm.go's `snapshots.go` (used by the nats CLI) and nats-server's
`jetstream_api.go` (`jsStreamSnapshotRequest`, `streamSnapshot`, `processStreamRestore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from bus import constants as c
from bus.auth import Credentials
from bus.bus import connect_client
from bus.errors import BusError

log = logging.getLogger(__name__)

SNAPSHOT_CHUNK_BYTES = 128 * 1024
RESTORE_CHUNK_BYTES = 128 * 1024
API_TIMEOUT_S = 10.0
# The server sends a chunk at least every few seconds while a snapshot streams (it gives
# up itself after 5 s without our flow-control replies); silence longer than this means
# it is gone.
SNAPSHOT_IDLE_S = 30.0
# Rebuilding a large stream from its blocks takes the server a while after the last chunk.
RESTORE_FINISH_TIMEOUT_S = 600.0

# The order snapshots are taken in; see `backup_order`.
_MESSAGE_STREAMS = (c.INTAKE_STREAM, c.TASKS_STREAM, c.GATES_STREAM, c.EVENTS_STREAM, c.DLQ_STREAM)
_STATE_BUCKETS = (c.kv_stream(c.TICKETS_BUCKET), c.kv_stream(c.TASKS_BUCKET))


# JetStream's error codes for a missing stream and a missing consumer.
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014


class SnapshotError(BusError):
    """A snapshot, restore or JetStream API call failed; the message says why."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SnapshotResult:
    """One stream's snapshot as written: what the server said it holds, and the file."""

    name: str
    config: dict[str, Any]
    state: dict[str, Any]
    size: int
    sha256: str


def is_omoi_stream(name: str) -> bool:
    return name.startswith(c.OMOI_STREAM_PREFIXES)


def backup_order(names: Iterable[str]) -> list[str]:
    """Omoi's streams in the order to snapshot them: messages first, then state.

    Each stream's snapshot is consistent in itself, but they are taken one after another.
    What makes the set consistent for Omoi is the order. Agents write KV state before the
    messages that announce it and ack a message only after its effects are stored, so
    state taken last is never behind the messages taken before it: a restored message
    that already took effect is redelivered and found done (a no-op), and state that is
    ahead of the messages is what the planner's start-up sweep re-dispatches from. Tickets
    go before tasks because a ticket's tasks are created before the ticket. Object stores
    go last: whatever state refers to was stored before the reference.
    """

    def rank(name: str) -> tuple[int, int, str]:
        for group, known in ((0, _MESSAGE_STREAMS), (2, _STATE_BUCKETS)):
            if name in known:
                return group, known.index(name), name
        if name.startswith(c.KV_STREAM_PREFIX):
            return 3, 0, name
        if name.startswith(c.OBJ_STREAM_PREFIX):
            return 4, 0, name
        return 1, 0, name

    return sorted((n for n in names if is_omoi_stream(n)), key=rank)


class Snapshots:
    """A connection for backing up and restoring whole streams.

    Unlike `Bus.connect` it binds no bucket, so it works against an empty server.
    """

    def __init__(self, nc: Client) -> None:
        self.nc = nc

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        connect_timeout: float = 3.0,
        credentials: Credentials | None = None,
    ) -> Snapshots:
        nc = await connect_client(
            url, credentials, name=name, connect_timeout=connect_timeout, max_reconnect_attempts=2
        )
        return cls(nc)

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except Exception:
            # Best effort once the server is gone: the work is done or already failed.
            log.debug("drain failed, closing", exc_info=True)
            with contextlib.suppress(Exception):
                await self.nc.close()

    @property
    def server_version(self) -> str:
        v = self.nc.connected_server_version
        return f"{v.major}.{v.minor}.{v.patch}" + (f"-{v.dev}" if v.dev else "")

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    # Plain API calls, answered as the server's JSON (nothing lost in translation).

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            msg = await self.nc.request(f"$JS.API.{subject}", payload, timeout=API_TIMEOUT_S)
        except NoRespondersError:
            raise SnapshotError("JetStream is not enabled on this server") from None
        except NatsTimeoutError:
            raise SnapshotError(f"JetStream did not answer {subject} in time") from None
        reply: dict[str, Any] = json.loads(msg.data)
        if error := reply.get("error"):
            raise SnapshotError(_describe(error), error.get("err_code"))
        return reply

    async def account_info(self) -> dict[str, Any]:
        return await self.api("INFO")

    async def streams(self) -> list[dict[str, Any]]:
        """Every stream's info (`config`, `state`), paging through the list."""
        found: list[dict[str, Any]] = []
        while True:
            page = await self.api("STREAM.LIST", {"offset": len(found)})
            streams = page.get("streams") or []
            found.extend(streams)
            if not streams or len(found) >= page.get("total", 0):
                return found

    async def delete_stream(self, name: str) -> None:
        await self.api(f"STREAM.DELETE.{name}")

    async def replay_from_start(self, stream: str, durable: str) -> bool:
        """Recreate a durable consumer so it delivers the stream from its first message.

        False if there is no such consumer. Its other settings are kept.
        """
        try:
            info = await self.api(f"CONSUMER.INFO.{stream}.{durable}")
        except SnapshotError as exc:
            if exc.code in (STREAM_NOT_FOUND, CONSUMER_NOT_FOUND):
                return False
            raise
        config = dict(info["config"])
        for start in ("opt_start_seq", "opt_start_time"):
            config.pop(start, None)
        config["deliver_policy"] = "all"
        await self.api(f"CONSUMER.DELETE.{stream}.{durable}")
        await self.api(
            f"CONSUMER.CREATE.{stream}.{durable}", {"stream_name": stream, "config": config}
        )
        return True

    # Snapshot

    async def snapshot(self, name: str, sink: IO[bytes]) -> SnapshotResult:
        """Write `name`'s snapshot, consumers included, to `sink`."""
        receiver = _SnapshotReceiver(self.nc, sink)
        inbox = self.nc.new_inbox()
        # Unbounded: the server's window bounds what is in flight.
        sub = await self.nc.subscribe(
            inbox, cb=receiver.on_chunk, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        try:
            chunk = min(SNAPSHOT_CHUNK_BYTES, self.max_payload)
            started = await self.api(
                f"STREAM.SNAPSHOT.{name}",
                {"deliver_subject": inbox, "no_consumers": False, "chunk_size": chunk},
            )
            await receiver.wait()
        except SnapshotError as exc:
            raise SnapshotError(f"snapshot of {name} failed: {exc}", exc.code) from None
        finally:
            await sub.unsubscribe()
        log.info("snapshot of %s: %d bytes", name, receiver.size)
        return SnapshotResult(
            name=name,
            config=started["config"],
            state=started["state"],
            size=receiver.size,
            sha256=receiver.digest.hexdigest(),
        )

    # Restore

    async def restore(
        self,
        config: dict[str, Any],
        state: dict[str, Any],
        source: IO[bytes],
        sha256: str | None = None,
    ) -> dict[str, Any]:
        """Recreate a stream, with its consumers, from a snapshot read from `source`.

        Returns the restored stream's info. The stream must not exist. With `sha256`, what
        was read must have that digest, or the restore is abandoned before the server
        commits it (it drops an unfinished restore after 5 s without chunks).
        """
        name = config["name"]
        started = await self.api(f"STREAM.RESTORE.{name}", {"config": config, "state": state})
        deliver = started["deliver_subject"]
        chunk_size = min(RESTORE_CHUNK_BYTES, self.max_payload)
        digest = hashlib.sha256()
        while chunk := source.read(chunk_size):
            digest.update(chunk)
            ack = await self._send_chunk(deliver, chunk, API_TIMEOUT_S, name)
            if ack:
                raise SnapshotError(f"restore of {name} failed: {_reply_error(ack)}")
        if sha256 is not None and digest.hexdigest() != sha256:
            raise SnapshotError(f"restore of {name} abandoned: the snapshot changed while read")
        done = await self._send_chunk(deliver, b"", RESTORE_FINISH_TIMEOUT_S, name)
        reply: dict[str, Any] = json.loads(done) if done else {}
        if error := reply.get("error"):
            raise SnapshotError(f"restore of {name} failed: {_describe(error)}")
        if "state" not in reply:
            raise SnapshotError(f"restore of {name} ended without the stream's state")
        log.info("restored %s: %s messages", name, reply["state"].get("messages"))
        return reply

    async def _send_chunk(self, subject: str, data: bytes, timeout: float, name: str) -> bytes:
        try:
            msg = await self.nc.request(subject, data, timeout=timeout)
        except (NatsTimeoutError, NoRespondersError):
            raise SnapshotError(f"restore of {name} failed: the server stopped answering") from None
        return bytes(msg.data)


class _SnapshotReceiver:
    """Takes a snapshot's chunks: replies to each, writes it, notices the end or silence."""

    def __init__(self, nc: Client, sink: IO[bytes]) -> None:
        self.nc = nc
        self.sink = sink
        self.digest = hashlib.sha256()
        self.size = 0
        self._loop = asyncio.get_running_loop()
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._last_chunk_at = self._loop.time()

    async def on_chunk(self, msg: Msg) -> None:
        if self._finished.done():
            return
        self._last_chunk_at = self._loop.time()
        if not msg.data:
            headers = msg.headers or {}
            status = headers.get("Status", "204")
            if status == "204":
                self._finished.set_result(None)
            else:
                reason = f"{status} {headers.get('Description', '')}".strip()
                self._finished.set_exception(SnapshotError(f"the server ended it: {reason}"))
            return
        # Reply before writing: the chunk is in memory, and a slow disk must not look like
        # a stalled receiver to the server.
        if msg.reply:
            await self.nc.publish(msg.reply, b"")
        try:
            self.sink.write(msg.data)
        except OSError as exc:
            self._finished.set_exception(SnapshotError(f"cannot write it: {exc}"))
            return
        self.digest.update(msg.data)
        self.size += len(msg.data)

    async def wait(self) -> None:
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self._finished), SNAPSHOT_IDLE_S / 4)
                return
            except TimeoutError:
                if self._loop.time() - self._last_chunk_at > SNAPSHOT_IDLE_S:
                    raise SnapshotError(f"stalled: nothing for {SNAPSHOT_IDLE_S:.0f} s") from None


def _describe(error: dict[str, Any]) -> str:
    return f"{error.get('description', 'error')} (code {error.get('err_code', error.get('code'))})"


def _reply_error(data: bytes) -> str:
    try:
        reply = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")
    error = reply.get("error") if isinstance(reply, dict) else None
    return _describe(error) if isinstance(error, dict) else str(reply)

"""A connection to the servers' system account, to hear what they say about themselves.

Only what the `system` identity may subscribe to is heard: the connections any server of
the cluster refused. Each becomes an audit entry (`bus.server_audit.from_auth_advisory`)
handed to the caller, who stores it under its own identity.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import constants as c
from bus.auth import Credentials
from bus.bus import connect_client
from bus.server_audit import BadAdvisory, from_auth_advisory
from schemas.audit import AuditEntry

log = logging.getLogger(__name__)


class ServerEvents:
    """Create with `await ServerEvents.connect(url, credentials)`; `close()` is safe twice."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    @classmethod
    async def connect(
        cls, url: str, credentials: Credentials, *, name: str = "omoi-system"
    ) -> ServerEvents:
        return cls(await connect_client(url, credentials, name=name, max_reconnect_attempts=-1))

    async def on_refused(self, handle: Callable[[AuditEntry], None]) -> None:
        """Call `handle` with an entry for every connection a server refuses, from now."""

        async def deliver(msg: Msg) -> None:
            try:
                entry = from_auth_advisory(msg.data)
            except BadAdvisory as exc:
                # The servers wrote it: nothing to dead-letter, only to say.
                log.warning("ignored a system event on %s: %s", msg.subject, exc)
                return
            handle(entry)

        await self._nc.subscribe(c.SERVER_AUTH_ERRORS, cb=deliver)
        # Subscribed at the servers before this returns: nothing refused after is missed.
        await self._nc.flush()

    async def close(self) -> None:
        if self._nc.is_closed:
            return
        with contextlib.suppress(Exception):
            await self._nc.close()

"""Every agent is a NATS micro service, and a search finds them by what they take.

An agent registers the service `omoi-<role>` with nats-py's `nats.micro`, so it answers the
service API every NATS client speaks (`nats micro ls|info|stats`, nats.js's `Svcm`):
`$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`, bare, by name and by name and id. Its card
(`schemas.registry.AgentCard`) is the service's metadata, which nats.micro fixes at
creation; what it does now, which changes (a worker's running tasks out of its slots), is
the STATS data of its one endpoint, `status`, and the answer to a request on that
endpoint's subject.

`discover` asks `$SRV.STATS` once and gathers the replies: STATS carries the same name, id
and metadata as INFO, and the live status too, so one round trip lists everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import Request as MicroRequest
from nats.micro.service import (
    SEMVER_REGEX,
    EndpointConfig,
    EndpointStats,
    Service,
    ServiceConfig,
)
from pydantic import ValidationError

from bus import constants as c
from bus.bus import Bus
from bus.errors import as_bus_errors
from bus.permissions import AGENT_ROLES
from schemas.registry import AgentCard, AgentListing, AgentStatus

log = logging.getLogger(__name__)

STATUS_ENDPOINT = "status"
# How long a search waits for replies at most, and, once replies come, how long a pause
# ends it early: the defaults of nats.js's service client (`maxWait`, and the stall nats
# CLI and nats.js also use).
DISCOVERY_TIMEOUT_S = 2.0
DISCOVERY_STALL_S = 0.3
# The service API wants a semantic version; an unreleased checkout has none.
_NO_VERSION = "0.0.0"
_NO_RESPONDERS = "503"

StatusSource = Callable[[], AgentStatus]


class AgentService:
    """One agent's micro service: `start` registers it, `stop` (safe to repeat) withdraws
    it. `status` is called for every STATS request and status request, on the event loop:
    it must be quick."""

    def __init__(self, bus: Bus, card: AgentCard, status: StatusSource) -> None:
        self.bus = bus
        self.card = card
        self.name = c.service_name(card.role)
        self.subject = c.agent_status_subject(card.role, card.agent_id)
        self._status = status
        self._service: Service | None = None

    async def start(self) -> None:
        if self._service is not None:
            return
        version = self.card.omoi_version
        config = ServiceConfig(
            name=self.name,
            version=version if SEMVER_REGEX.match(version) else _NO_VERSION,
            description=f"Omoi {self.card.role} {self.card.agent_id}",
            metadata=self.card.metadata(),
            stats_handler=self._stats,
        )
        with as_bus_errors(f"registering {self.name}"):
            service = Service(self.bus.nc, config)
            try:
                # The endpoint first: once the service answers PING, its status does too.
                await service.add_endpoint(
                    EndpointConfig(
                        name=STATUS_ENDPOINT,
                        subject=self.subject,
                        handler=self._answer,
                        metadata={"content_type": "application/json"},
                    )
                )
                await service.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await service.stop()
                raise
        self._service = service
        log.debug("registered %s %s as %s", self.name, service.id, self.card.agent_id)

    async def stop(self) -> None:
        service, self._service = self._service, None
        if service is None:
            return
        with as_bus_errors(f"withdrawing {self.name}"):
            await service.stop()

    def _status_data(self) -> dict[str, Any]:
        # A status that fails must not silence the service: without an answer to STATS
        # the agent would drop out of every search.
        try:
            return self._status().model_dump(mode="json")
        except Exception as exc:
            log.warning("status of %s failed", self.card.agent_id, exc_info=True)
            return {"error": repr(exc)}

    def _stats(self, _endpoint: EndpointStats) -> dict[str, Any]:
        return self._status_data()

    async def _answer(self, request: MicroRequest) -> None:
        # A publish without a reply subject asks nothing.
        with contextlib.suppress(ValueError):
            await request.respond(json.dumps(self._status_data()).encode())


async def discover(
    bus: Bus,
    *,
    role: str | None = None,
    capability: str | None = None,
    label: str | None = None,
    timeout_s: float = DISCOVERY_TIMEOUT_S,
    stall_s: float = DISCOVERY_STALL_S,
) -> list[AgentListing]:
    """The live agents that answer the service API (of `role`, taking `capability`,
    labelled `label`), by role and id. ValueError for a role that is not an agent's."""
    if role is not None and role not in AGENT_ROLES:
        raise ValueError(f"unknown agent role {role!r}; one of {', '.join(AGENT_ROLES)}")
    name = c.service_name(role) if role is not None else None
    replies = await _gather(bus.nc, c.service_subject("STATS", name), timeout_s, stall_s)
    found: dict[str, AgentListing] = {}
    for data in replies:
        listing = _listing(data)
        if listing is not None:
            found[listing.service_id] = listing
    return sorted(
        (
            a
            for a in found.values()
            if (capability is None or capability in a.capabilities)
            and (label is None or label in a.labels)
        ),
        key=lambda a: (a.role, a.agent_id),
    )


async def _gather(nc: Client, subject: str, timeout_s: float, stall_s: float) -> list[bytes]:
    """Every reply to one request on `subject` within `timeout_s`, ending early once replies
    pause for `stall_s`, or at once when the server says nobody listens."""
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_reply(msg: Msg) -> None:
        replies.put_nowait(msg)

    out: list[bytes] = []
    with as_bus_errors(f"asking {subject}"):
        sub = await nc.subscribe(nc.new_inbox(), cb=on_reply)
        try:
            await nc.publish(subject, b"", reply=sub.subject)
            deadline = loop.time() + timeout_s
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await asyncio.wait_for(replies.get(), min(left, stall_s) if out else left)
                except TimeoutError:
                    break
                if (msg.headers or {}).get("Status") == _NO_RESPONDERS:
                    break
                out.append(bytes(msg.data))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    return out


def _listing(data: bytes) -> AgentListing | None:
    """An Omoi agent's STATS reply as a listing; None for anything else on `$SRV`."""
    try:
        stats: dict[str, Any] = json.loads(data)
        name = str(stats["name"])
        meta = stats.get("metadata") or {}
        if not name.startswith(c.SERVICE_NAME_PREFIX) or "agent_id" not in meta:
            return None
        card = AgentCard.from_metadata(meta)
        endpoint: dict[str, Any] = next(
            (e for e in stats.get("endpoints") or [] if e.get("name") == STATUS_ENDPOINT), {}
        )
        status_data = endpoint.get("data")
        return AgentListing(
            **card.model_dump(),
            service=name,
            service_id=str(stats["id"]),
            started=stats.get("started"),
            status_subject=endpoint.get("subject"),
            status=(
                AgentStatus.model_validate(status_data) if isinstance(status_data, dict) else None
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError):
        log.debug("not an Omoi agent's stats: %r", data[:200])
        return None

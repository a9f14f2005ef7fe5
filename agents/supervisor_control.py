"""A supervisor's control subjects: how the monitor's watchdog, on any host, sees this
host's children and has one restarted (`omoi.supervisors.<host>.status|restart`), and
how the guardian holds a crash-looping one and releases it (`.hold|release`), how
`omoi profile` samples one from another machine (`.profile`), and how the autoscaler runs
more or fewer of a pool's workers (`.scale`).

The host token is the machine's host name as the agents' heartbeats carry it, made a
subject token (`bus.constants.host_token`), so a watchdog that sees a wedged agent's beat
knows whom to ask.
"""

from __future__ import annotations

import base64
import gzip
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agents.profiling import ProfileError, profile_pid
from agents.supervisor import Supervisor
from bus import Bus
from bus import constants as c
from bus.bus import Request
from schemas.supervisor import (
    HoldReply,
    HoldRequest,
    ProfileReply,
    ProfileRequest,
    RestartReply,
    RestartRequest,
    ScaleReply,
    ScaleRequest,
    SupervisorStatus,
)

log = logging.getLogger(__name__)
# A reply must fit in one NATS message (1 MiB by default), headers and JSON around it.
MAX_PROFILE_BYTES = 900_000


def this_host() -> str:
    return c.host_token(socket.gethostname())


class SupervisorControl:
    """Serves the control subjects while started; `stop` is safe to call twice."""

    def __init__(self, bus: Bus, supervisor: Supervisor, host: str | None = None) -> None:
        self.bus = bus
        self.supervisor = supervisor
        self.host = host or this_host()
        self._subs: list[Any] = []  # what `Bus.serve` returned

    async def start(self) -> SupervisorControl:
        self._subs = [
            await self.bus.serve(c.supervisor_subject(self.host, "status"), self._status),
            await self.bus.serve(c.supervisor_subject(self.host, "restart"), self._restart),
            await self.bus.serve(c.supervisor_subject(self.host, "hold"), self._hold),
            await self.bus.serve(c.supervisor_subject(self.host, "release"), self._release),
            await self.bus.serve(c.supervisor_subject(self.host, "profile"), self._profile),
            await self.bus.serve(c.supervisor_subject(self.host, c.SCALE_VERB), self._scale),
        ]
        return self

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be gone already
                log.debug("could not unsubscribe", exc_info=True)

    async def _scale(self, request: Request) -> bytes:
        try:
            asked = ScaleRequest.model_validate_json(request.data)
            if asked.replicas is None:
                if asked.pool not in self.supervisor.pools:
                    raise ValueError(f"no pool {asked.pool!r} here")
                running = len(self.supervisor.replicas(asked.pool))
            else:
                log.info("scaling %s to %d: %s", asked.pool, asked.replicas, asked.reason)
                running = await self.supervisor.scale(asked.pool, asked.replicas)
        except (ValidationError, ValueError) as exc:
            return ScaleReply(ok=False, error=str(exc)[:1000]).to_json()
        return ScaleReply(ok=True, pool=asked.pool, replicas=running).to_json()

    async def _status(self, _: Request) -> bytes:
        children = [child.status() for child in self.supervisor.children]
        return SupervisorStatus(host=self.host, children=children).to_json()

    async def _restart(self, request: Request) -> bytes:
        try:
            asked = RestartRequest.model_validate_json(request.data)
        except ValidationError as exc:
            return RestartReply(
                ok=False, error=f"not a restart request: {exc.errors()[0]['msg']}"
            ).to_json()
        child = self.supervisor.restart(asked.agent_id, asked.reason)
        if child is None:
            return RestartReply(ok=False, error=f"no child runs as {asked.agent_id} here").to_json()
        return RestartReply(ok=True, child=child.name, restarts=child.restarts + 1).to_json()

    async def _hold(self, request: Request) -> bytes:
        return self._held(request, hold=True)

    async def _release(self, request: Request) -> bytes:
        return self._held(request, hold=False)

    def _held(self, request: Request, *, hold: bool) -> bytes:
        try:
            asked = HoldRequest.model_validate_json(request.data)
        except ValidationError as exc:
            return HoldReply(
                ok=False, error=f"not a hold request: {exc.errors()[0]['msg']}"
            ).to_json()
        if hold:
            child = self.supervisor.hold(asked.child, asked.reason or "held")
        else:
            child = self.supervisor.release(asked.child)
        if child is None:
            return HoldReply(ok=False, error=f"no child {asked.child!r} here").to_json()
        return HoldReply(ok=True, child=child.name, held=child.held is not None).to_json()

    async def _profile(self, request: Request) -> bytes:
        """Only its own children: the subject names no pid, so no other process is reached."""
        try:
            asked = ProfileRequest.model_validate_json(request.data)
        except ValidationError as exc:
            return ProfileReply(ok=False, error=f"not a profile request: {exc}").to_json()
        pid = next(
            (ch.proc.pid for ch in self.supervisor.children
             if ch.agent_id == asked.agent_id and ch.running and ch.proc is not None),
            None,
        )  # fmt: skip
        if pid is None:
            return ProfileReply(ok=False, error=f"no child runs as {asked.agent_id} here").to_json()
        with tempfile.TemporaryDirectory(prefix="omoi-profile-") as tmp:
            out = Path(tmp) / f"profile.{asked.format}"
            try:
                await profile_pid(pid, asked.seconds, asked.format, out, idle=asked.idle)
            except ProfileError as exc:
                return ProfileReply(ok=False, error=str(exc)).to_json()
            packed = base64.b64encode(gzip.compress(out.read_bytes())).decode()
        if len(packed) > MAX_PROFILE_BYTES:
            return ProfileReply(
                ok=False, error=f"the profile is {len(packed)} bytes packed; try --format raw"
            ).to_json()
        return ProfileReply(ok=True, data=packed).to_json()

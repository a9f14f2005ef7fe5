"""A supervisor's control subjects: how the monitor's watchdog, on any host, sees this
host's children and has one restarted (`omoi.supervisors.<host>.status|restart`).

The host token is the machine's host name as the agents' heartbeats carry it, made a
subject token (`bus.constants.host_token`), so a watchdog that sees a wedged agent's beat
knows whom to ask.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pydantic import ValidationError

from agents.supervisor import Supervisor
from bus import Bus
from bus import constants as c
from bus.bus import Request
from schemas.supervisor import RestartReply, RestartRequest, SupervisorStatus

log = logging.getLogger(__name__)


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
        ]
        return self

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be gone already
                log.debug("could not unsubscribe", exc_info=True)

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

"""What every route needs, handed in once by the app factory: the bus, the reader, options.

The gateway keeps no state of its own; this object only holds the connections, so several
gateways can run side by side behind a load balancer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from litestar.di import NamedDependency

from agents.settings import Settings
from bus import Bus
from gateway.problems import ApiProblem
from gateway.sql import SqlReader


@dataclass(frozen=True)
class GatewayOptions:
    # How long the start waits for NATS before serving without it (and connecting on).
    connect_wait_s: float = 5.0
    # How long a request rides out NATS trouble before it gets a 503: a person is waiting.
    bus_patience_s: float = 3.0
    # How long to wait for a planner to answer a submission or a command.
    request_timeout_s: float = 5.0
    # A comment line this often keeps proxies from closing an idle event stream.
    keepalive_s: float = 15.0
    # The browser waits this long before reconnecting a dropped event stream.
    sse_retry_ms: int = 2000
    # An agent is stale after missing this many heartbeats.
    stale_beats: int = 3
    # The dashboard's lists: how many rows, and how far back in the event stream to look.
    dashboard_tickets: int = 50
    recent_failures: int = 15
    recent_dead_letters: int = 15
    failure_window: int = 5_000


@dataclass
class GatewayContext:
    settings: Settings
    reader: SqlReader | None = None
    options: GatewayOptions = field(default_factory=GatewayOptions)
    # Set by the lifespan (or given by a caller that owns the connection).
    connected: Bus | None = None

    @property
    def bus(self) -> Bus:
        if self.connected is None:
            raise ApiProblem(503, "nats-unavailable", "the gateway is not connected to NATS (yet)")
        return self.connected

    def release(self) -> Bus | None:
        """Forget the connection (routes answer 503 from now on) and hand it back to close."""
        bus, self.connected = self.connected, None
        return bus


# How routes ask for it: Litestar injects the app's one context under the name `ctx`.
Ctx = NamedDependency[GatewayContext]

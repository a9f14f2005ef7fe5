"""What every route needs, handed in once by the app factory: the bus, the reader, options.

The gateway keeps no state of its own; this object only holds the connections, so several
gateways can run side by side behind a load balancer.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from litestar.di import NamedDependency
from litestar.middleware.rate_limit import DurationUnit

from agents.settings import Settings
from bus import Bus
from bus import constants as c
from bus.audit import AuditTrail
from bus.mirror import MirroredBucket
from bus.registry import DISCOVERY_STALL_S, DISCOVERY_TIMEOUT_S
from bus.span_shipper import SpanShipper
from bus.ticket_index import TicketIndex
from gateway.auth import SessionCodec
from gateway.github_hooks import RecentDeliveries
from gateway.problems import ApiProblem
from gateway.sql import SqlReader
from schemas.audit import AuditEntry
from schemas.token import ApiToken

log = logging.getLogger(__name__)

RateLimit = tuple[DurationUnit, int]


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
    # How long `/agents` gathers the service API's replies at most, and the pause after
    # the last reply that ends it sooner (bus/registry.py).
    discovery_timeout_s: float = DISCOVERY_TIMEOUT_S
    discovery_stall_s: float = DISCOVERY_STALL_S
    # The dashboard's lists: how many rows, and how far back in the event stream to look.
    dashboard_tickets: int = 50
    recent_failures: int = 15
    recent_dead_letters: int = 15
    failure_window: int = 5_000
    # The newest log lines a ticket's page shows (from the store's `logs` view).
    ticket_log_lines: int = 300
    ticket_trace_spans: int = 500
    # Requests per window for each token, and for each client address of requests without
    # a valid token (the sign-in page, failed attempts); None: no limit. Each gateway
    # counts on its own. High enough that the dashboard never meets them.
    token_rate_limit: RateLimit | None = ("minute", 6000)
    address_rate_limit: RateLimit | None = ("minute", 600)
    # A longer Authorization header is refused (431) without being looked at.
    max_auth_header_bytes: int = 4096
    session_ttl_s: float = 12 * 3600
    # Cookies marked Secure: True always, False never, None when the request came over
    # https (behind a TLS-terminating proxy, say True).
    secure_cookies: bool | None = None
    # Signs session cookies and CSRF tokens; gateways that share it share sessions.
    # None: a random key per process (sessions end when it restarts).
    session_key: bytes | None = None
    # Identical audit entries (a flood of 401s or 429s) within this long are sent once.
    audit_fold_s: float = 1.0


@dataclass
class GatewayContext:
    settings: Settings
    reader: SqlReader | None = None
    options: GatewayOptions = field(default_factory=GatewayOptions)
    # Set by the lifespan (or given by a caller that owns the connection).
    connected: Bus | None = None
    # The watched copy of `omoi_tokens` and the audit trail, while connected.
    tokens: MirroredBucket[ApiToken] | None = None
    # Every ticket's order and status, watched: pages of tickets are read from it.
    ticket_index: TicketIndex | None = None
    audit: AuditTrail | None = None
    # Where the gateway's spans go once connected (None: tracing is off).
    span_shipper: SpanShipper | None = None
    sessions: SessionCodec = field(init=False)
    webhooks: RecentDeliveries = field(default_factory=RecentDeliveries)

    def __post_init__(self) -> None:
        key = self.options.session_key or secrets.token_bytes(32)
        self.sessions = SessionCodec(key, self.options.session_ttl_s)

    async def attach(self, bus: Bus) -> None:
        """Start checking tokens and auditing over `bus`; routes work from now on."""
        self.tokens = await bus.watch_bucket(c.TOKENS_BUCKET, ApiToken)
        self.ticket_index = await bus.index_tickets()
        self.audit = AuditTrail(bus, fold_s=self.options.audit_fold_s)
        if self.span_shipper is not None:
            self.span_shipper.buffer.attach(bus)
            self.span_shipper.start()
        self.connected = bus

    def record(self, entry: AuditEntry, *, fold: bool = False) -> None:
        if self.audit is None:
            log.warning(
                "audit entry not recorded (no NATS connection): %s %s by %s from %s: %s",
                entry.action, entry.target, entry.actor, entry.source, entry.outcome,
            )  # fmt: skip
            return
        self.audit.record(entry, fold=fold)

    @property
    def bus(self) -> Bus:
        if self.connected is None:
            raise ApiProblem(503, "nats-unavailable", "the gateway is not connected to NATS (yet)")
        return self.connected

    @property
    def index(self) -> TicketIndex:
        if self.ticket_index is None:
            raise ApiProblem(503, "nats-unavailable", "the gateway is not connected to NATS (yet)")
        return self.ticket_index

    async def release(self) -> Bus | None:
        """Forget the connection (routes answer 503 from now on), after sending the audit
        entries still in flight; hands the connection back to close."""
        audit, tokens, self.audit, self.tokens = self.audit, self.tokens, None, None
        index, self.ticket_index = self.ticket_index, None
        if audit is not None:
            await audit.flush()
        if tokens is not None:
            await tokens.stop()
        if index is not None:
            await index.stop()
        if self.span_shipper is not None:
            await self.span_shipper.stop()
        bus, self.connected = self.connected, None
        return bus


# How routes ask for it: Litestar injects the app's one context under the name `ctx`.
Ctx = NamedDependency[GatewayContext]

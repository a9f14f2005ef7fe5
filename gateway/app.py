"""The Litestar application factory: routes, problem details, OpenAPI, templates, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar, Router
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, Reference, SecurityScheme
from litestar.plugins import PluginProtocol
from litestar.plugins.pydantic import PydanticPlugin
from litestar.static_files import create_static_files_router

from agents.settings import Settings
from bus import Bus, BusError
from bus import constants as c
from bus.auth import Credentials
from bus.span_shipper import SpanShipper
from bus.topology import TopologyConfig
from gateway.api_system import ProbeController, SystemController
from gateway.api_tickets import TicketController
from gateway.api_tokens import TokenController
from gateway.api_webhooks import WebhookController
from gateway.audit import STATE_KEY
from gateway.auth import SESSION_COOKIE
from gateway.context import GatewayContext, GatewayOptions
from gateway.dashboard import STATIC, DashboardController, template_config
from gateway.metrics import MetricsController
from gateway.problems import exception_handlers
from gateway.ratelimit import rate_limits
from gateway.security import AuthMiddleware, SignInRequired, api_guard, page_guard, to_sign_in
from gateway.sessions import LoginController
from gateway.sql import SqlReader
from gateway.sse import EventStreamController

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CONNECT_RETRY_S = 1.0
CONNECT_RETRY_MAX_S = 30.0
DESCRIPTION = (
    "HTTP access to Omoi: submit and steer tickets (request/reply to the planner), read ticket, "
    "task and agent state (KV buckets), follow events live (server-sent events from the "
    "event stream) and query the analytics store. Every error is application/problem+json. "
    "Every route but the probes needs an API token (`Authorization: Bearer omoi_<id>_<secret>`, "
    "made by `omoi token create --role R`): viewer reads, submitter also submits, operator "
    "also cancels and moves, admin also manages tokens. The dashboard's session cookie "
    "authenticates reads too."
)
# Routes that never look at a session or a form: CSRF checks are for the dashboard's forms.
NO_CSRF = ["^/api/", "^/schema", "^/health$", "^/ready$", "^/static/"]
SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearer": SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="omoi_<id>_<secret>",
        description="An API token: `omoi token create --role viewer|submitter|operator|admin`.",
    ),
    "session": SecurityScheme(
        type="apiKey",
        name=SESSION_COOKIE,
        security_scheme_in="cookie",
        description="The dashboard's session, set by signing in at /login (reads only).",
    ),
}


async def _connect(
    ctx: GatewayContext,
    url: str,
    topology: TopologyConfig | None,
    credentials: Credentials | None,
) -> None:
    # The client itself retries an unreachable server forever; what lands here is a server
    # without the topology (or JetStream), which an `omoi up` elsewhere may still fix, or
    # NATS failing for longer than the gateway's patience.
    delay = CONNECT_RETRY_S
    while True:
        try:
            bus = await Bus.connect(
                url,
                name="omoi-gateway",
                topology=topology,
                patience_s=ctx.options.bus_patience_s,
                credentials=credentials,
            )
            try:
                await ctx.attach(bus)
            except BaseException:
                await bus.close()
                raise
        except BusError as exc:
            log.warning("cannot use NATS at %s yet (%r); retrying in %.0f s", url, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX_S)
            continue
        log.info("gateway connected to %s", url)
        return


def create_app(
    bus_url: str | None = None,
    *,
    settings: Settings,
    bus: Bus | None = None,
    reader: SqlReader | None = None,
    topology: TopologyConfig | None = None,
    options: GatewayOptions | None = None,
    tracer_provider: TracerProvider | None = None,
    gateway_id: str = "gateway",
) -> Litestar:
    """Build the gateway.

    Either give `bus`, a connection the caller owns (tests share theirs), or let the app
    connect to `bus_url` (else `settings.nats_url`) for its lifetime, retrying until NATS
    is there. With `topology`, the app provisions it on connect, as agents do; without, it
    expects it to exist. With `tracer_provider`, every request is a span (Litestar's
    OpenTelemetry plugin), and the provider's spans are shipped as `gateway_id`'s.
    """
    url = bus_url or settings.nats_url
    if bus is None and not url:
        raise ValueError("create_app needs a connected bus or a NATS URL")
    ctx = GatewayContext(settings=settings, reader=reader, options=options or GatewayOptions())
    plugins: list[PluginProtocol] = [PydanticPlugin(prefer_alias=True)]
    if tracer_provider is not None:
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

        ctx.span_shipper = SpanShipper(None, c.span_subject("gateway", gateway_id))
        tracer_provider.add_span_processor(ctx.span_shipper)
        plugins.append(OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=tracer_provider)))

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if bus is not None:
            await ctx.attach(bus)
            try:
                yield
            finally:
                await ctx.release()  # the caller closes its own connection
            return
        assert url is not None
        # Wait a little for NATS, so a gateway that answers is normally a connected one;
        # then serve anyway and keep connecting in the background (/ready says 503 until
        # then), so neither a missing server nor a stop signal can hold the start forever.
        connecting = asyncio.create_task(
            _connect(ctx, url, topology, settings.credentials("gateway"))
        )
        await asyncio.wait({connecting}, timeout=ctx.options.connect_wait_s)
        if connecting.done():
            connecting.result()  # anything but "NATS is not there yet" fails the start
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            owned = await ctx.release()
            if owned is not None:
                await owned.close()

    async def provide_context() -> GatewayContext:
        return ctx

    api = Router(
        path=API_PREFIX,
        route_handlers=[
            TicketController,
            ProbeController,
            SystemController,
            EventStreamController,
            TokenController,
            WebhookController,
        ],
        guards=[api_guard(ctx)],
    )
    pages = Router(path="/", route_handlers=[DashboardController], guards=[page_guard(ctx)])
    # At the root, where Prometheus looks; guarded like the API (a bearer token).
    scraped = Router(path="/", route_handlers=[MetricsController], guards=[api_guard(ctx)])
    opts = ctx.options
    return Litestar(
        route_handlers=[
            api,
            ProbeController,
            pages,
            scraped,
            LoginController,
            create_static_files_router(path="/static", directories=[STATIC]),
        ],
        dependencies={"ctx": Provide(provide_context, use_cache=True)},
        state=State({STATE_KEY: ctx}),
        # Who is asking first, so the limits can count per token (or per address).
        middleware=[DefineMiddleware(AuthMiddleware, ctx=ctx), *rate_limits(ctx)],
        csrf_config=CSRFConfig(
            secret=ctx.sessions.key.hex(),
            cookie_name="omoi_csrf",
            cookie_httponly=True,
            cookie_samesite="strict",
            cookie_secure=bool(opts.secure_cookies),
            header_name="x-csrf-token",
            exclude=NO_CSRF,
        ),
        exception_handlers={**exception_handlers(), SignInRequired: to_sign_in},
        # Bus models serialise by alias (`from` in a phase transition), as on the wire.
        plugins=plugins,
        lifespan=[lifespan],
        template_config=template_config(),
        openapi_config=OpenAPIConfig(
            title="Omoi gateway",
            version="1.0.0",
            description=DESCRIPTION,
            path="/schema",
            use_handler_docstrings=False,
            components=Components(security_schemes=SECURITY_SCHEMES),
        ),
        # A submission may not be bigger than the planner accepts; nothing else needs more.
        request_max_body_size=settings.max_ticket_bytes,
        # The process's logging is configured at the edge (`__main__`), not by the framework.
        logging_config=None,
        debug=False,
    )

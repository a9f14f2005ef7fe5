"""Where a process's spans go: the store (through the bus, always) and an OTLP collector
(when `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Set up once, at the process's edge.

An OTLP endpoint that is down costs a warning and the spans it missed, nothing more: the
exporter runs on the batch processor's thread, and a failing one is told apart from a
working one only to say so once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator

from agents import spans
from agents.settings import Settings
from agents.version import omoi_version
from bus import Bus
from bus import constants as c
from bus.span_shipper import SpanShipper

log = logging.getLogger(__name__)

# How long one OTLP export may take, retries included, before the batch is given up.
OTLP_TIMEOUT_S = 5.0
# The exporter's own logger warns on every retry of every batch; one warning an outage is
# enough (OtlpExporter says it).
_OTLP_LOGGERS = ("opentelemetry.exporter.otlp.proto.http", "opentelemetry.sdk.trace.export")


class OmoiIds(IdGenerator):
    """Random ids, from a generator of its own (not the random module's shared state),
    except where `agents.spans` fixes them: the ticket's own spans."""

    def __init__(self) -> None:
        self._random = random.Random()

    def generate_span_id(self) -> int:
        fixed = spans.next_ids()
        return fixed[1] if fixed else self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        fixed = spans.next_ids()
        return fixed[0] if fixed else self._random.getrandbits(128) or 1


class OtlpExporter(SpanExporter):
    """The OTLP/HTTP exporter, saying once when the endpoint stops taking spans and once
    when it takes them again."""

    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        self.endpoint = traces_url(endpoint)
        self._inner = OTLPSpanExporter(endpoint=self.endpoint, timeout=OTLP_TIMEOUT_S)
        self._failing = False

    def export(self, batch: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(batch)
        except Exception:  # noqa: BLE001 (one that raises must not end the processor's thread)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE and not self._failing:
            log.warning("the OTLP endpoint %s takes no spans; they are dropped", self.endpoint)
        elif result is SpanExportResult.SUCCESS and self._failing:
            log.info("the OTLP endpoint %s takes spans again", self.endpoint)
        self._failing = result is SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def traces_url(endpoint: str) -> str:
    """The traces URL of an `OTEL_EXPORTER_OTLP_ENDPOINT` base, as the OTLP spec builds it."""
    return endpoint.rstrip("/") + "/v1/traces"


def provider_for(role: str, agent_id: str, settings: Settings) -> TracerProvider:
    resource = Resource.create(
        {
            "service.name": f"omoi-{role}",
            "service.instance.id": agent_id,
            "service.version": omoi_version(),
        }
    )
    provider = TracerProvider(resource=resource, id_generator=OmoiIds())
    if settings.otlp_endpoint:
        for name in _OTLP_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        provider.add_span_processor(BatchSpanProcessor(OtlpExporter(settings.otlp_endpoint)))
    return provider


@asynccontextmanager
async def traced(
    bus: Bus, settings: Settings, role: str, agent_id: str
) -> AsyncIterator[TracerProvider | None]:
    """Record this process's spans inside the block (unless `settings.tracing` is off);
    leaving it sends what is left."""
    if not settings.tracing:
        yield None
        return
    provider = provider_for(role, agent_id, settings)
    shipper = SpanShipper(bus, c.span_subject(role, agent_id))
    provider.add_span_processor(shipper)
    shipper.start()
    spans.use_provider(provider)
    try:
        yield provider
    finally:
        spans.use_provider(None)
        # The batch processor joins its thread, exporting what is queued: not on the loop.
        await asyncio.to_thread(provider.shutdown)
        await shipper.stop()

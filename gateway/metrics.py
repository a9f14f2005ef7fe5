"""`GET /metrics`: the fleet in Prometheus' text format, gathered when scraped.

Live from NATS: the backlog of every durable consumer (queue depth), dead letters by
origin, and each agent's heartbeat age. From the store's views, as of its last publish
(`OMOI_STORE_PUBLISH_INTERVAL_S`, 2 s): tasks by status, attempts and run time per phase and
capability, tokens and cost, alerts firing. A source that fails leaves its metrics out and
says so in `omoi_metrics_source_up`; the scrape itself still answers.

Names follow Prometheus' conventions: an `omoi_` prefix, base units (`_seconds`), `_total`
for counters. A scrape needs a token of any role (`viewer` is enough).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from litestar import Controller, Response, get
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bus import Bus, BusError, streams
from bus import constants as c
from gateway import reads
from gateway.api_tickets import BEARER, problems
from gateway.context import Ctx, GatewayContext
from gateway.sql import SqlError, SqlReader
from schemas.alert import Severity

log = logging.getLogger(__name__)

RUN_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
ATTEMPT_BUCKETS = (1, 2, 3, 5, 10)
_DLQ_PREFIX = c.DLQ_SUBJECTS.removesuffix(">")
# The classic text format every Prometheus reads (Litestar adds the charset).
EXPOSITION_TYPE = "text/plain; version=0.0.4"


def _run_time_sql() -> str:
    buckets = ", ".join(f"count(*) FILTER (WHERE run_ms <= {b * 1000:g})" for b in RUN_BUCKETS_S)
    return (
        f"SELECT phase, capability, count(*), coalesce(sum(run_ms), 0) / 1000.0, {buckets} "
        "FROM task_attempts WHERE run_ms IS NOT NULL GROUP BY ALL ORDER BY ALL"
    )


def _attempts_sql() -> str:
    buckets = ", ".join(f"count(*) FILTER (WHERE attempts <= {b})" for b in ATTEMPT_BUCKETS)
    return (
        f"SELECT phase, capability, count(*), coalesce(sum(attempts), 0), {buckets} FROM tasks "
        "WHERE status IN ('succeeded', 'failed') GROUP BY ALL ORDER BY ALL"
    )


TASKS_SQL = "SELECT status, count(*) FROM tasks GROUP BY ALL ORDER BY ALL"
OUTCOMES_SQL = (
    "SELECT phase, capability, coalesce(outcome, 'running'), count(*) FROM task_attempts "
    "GROUP BY ALL ORDER BY ALL"
)
ALERTS_SQL = "SELECT severity, count(*) FROM alerts WHERE status = 'firing' GROUP BY ALL"
COST_SQL = (
    "SELECT phase, sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) "
    "FROM cost_by_ticket_phase GROUP BY ALL ORDER BY ALL"
)


def _histogram(
    name: str, doc: str, bounds: Sequence[float], rows: Iterable[Sequence[Any]]
) -> HistogramMetricFamily:
    """Rows of (phase, capability, count, sum, cumulative count per bound...)."""
    family = HistogramMetricFamily(name, doc, labels=["phase", "capability"])
    for phase, capability, count, total, *cumulative in rows:
        buckets = [(f"{b:g}", float(n)) for b, n in zip(bounds, cumulative, strict=True)]
        buckets.append(("+Inf", float(count)))
        family.add_metric([str(phase), str(capability)], buckets, float(total))
    return family


async def _store_metrics(reader: SqlReader) -> list[Metric]:
    async def rows(sql: str) -> list[Sequence[Any]]:
        result = await asyncio.to_thread(reader.query, sql, max_rows=10_000)
        return list(result.rows)

    tasks, outcomes, runs, attempts, cost, alerts = await asyncio.gather(
        rows(TASKS_SQL), rows(OUTCOMES_SQL), rows(_run_time_sql()), rows(_attempts_sql()),
        rows(COST_SQL), rows(ALERTS_SQL),
    )  # fmt: skip
    by_status = GaugeMetricFamily("omoi_tasks", "Tasks by latest status.", labels=["status"])
    for status, n in tasks:
        by_status.add_metric([str(status)], float(n))
    tried = CounterMetricFamily(
        "omoi_task_attempts",
        "Attempts started, by phase, capability and outcome ('running' until it ends).",
        labels=["phase", "capability", "outcome"],
    )
    for phase, capability, outcome, n in outcomes:
        tried.add_metric([str(phase), str(capability), str(outcome)], float(n))
    tokens = CounterMetricFamily(
        "omoi_model_tokens", "Model tokens used, by phase and kind.", labels=["phase", "kind"]
    )
    dollars = CounterMetricFamily(
        "omoi_model_cost_usd", "Model cost in US dollars, by phase.", labels=["phase"]
    )
    for phase, prompt, completion, usd in cost:
        tokens.add_metric([str(phase), "prompt"], float(prompt or 0))
        tokens.add_metric([str(phase), "completion"], float(completion or 0))
        dollars.add_metric([str(phase)], float(usd or 0))
    firing = GaugeMetricFamily(
        "omoi_alerts_firing", "Alerts firing now, by severity.", labels=["severity"]
    )
    counts = {str(severity): float(n) for severity, n in alerts}
    for severity in Severity:
        firing.add_metric([severity.value], counts.get(severity.value, 0.0))
    return [
        by_status,
        tried,
        firing,
        _histogram("omoi_task_run_seconds", "How long attempts ran.", RUN_BUCKETS_S, runs),
        _histogram(
            "omoi_task_attempts_per_task",
            "Attempts a finished task took.",
            ATTEMPT_BUCKETS,
            attempts,
        ),
        tokens,
        dollars,
    ]


async def _nats_metrics(bus: Bus, stale_beats: int) -> list[Metric]:
    backlogs, letters, agents = await asyncio.gather(
        streams.consumer_backlogs(bus, c.MESSAGE_STREAMS),
        bus.live_subjects(c.DLQ_STREAM, c.DLQ_SUBJECTS),
        reads.agents(bus, stale_beats),
    )
    consumer = ["stream", "consumer"]
    pending = GaugeMetricFamily(
        "omoi_consumer_pending_messages",
        "Messages stored and not yet delivered to the consumer (queue depth).",
        labels=consumer,
    )
    unacked = GaugeMetricFamily(
        "omoi_consumer_ack_pending_messages",
        "Messages delivered to the consumer and not yet acknowledged.",
        labels=consumer,
    )
    redelivered = GaugeMetricFamily(
        "omoi_consumer_redelivered_messages",
        "Messages the consumer holds that were delivered more than once.",
        labels=consumer,
    )
    for b in backlogs:
        pending.add_metric([b.stream, b.consumer], float(b.pending))
        unacked.add_metric([b.stream, b.consumer], float(b.ack_pending))
        redelivered.add_metric([b.stream, b.consumer], float(b.redelivered))
    dead = GaugeMetricFamily(
        "omoi_dead_letters", "Dead letters OMOI_DLQ holds, by origin.", labels=["origin"]
    )
    for subject, n in sorted(letters.items()):
        dead.add_metric([subject.removeprefix(_DLQ_PREFIX)], float(n))
    age = GaugeMetricFamily(
        "omoi_agent_heartbeat_age_seconds",
        "Seconds since each agent's last heartbeat.",
        labels=["role", "agent"],
    )
    health = GaugeMetricFamily(
        "omoi_agents", "Agents with a heartbeat, by role and health.", labels=["role", "health"]
    )
    counted: dict[tuple[str, str], int] = {}
    for a in agents:
        age.add_metric([a.role, a.agent_id], a.age_s)
        counted[(a.role, a.health)] = counted.get((a.role, a.health), 0) + 1
    for (role, state), n in sorted(counted.items()):
        health.add_metric([role, state], float(n))
    return [pending, unacked, redelivered, dead, age, health]


async def gather(ctx: GatewayContext) -> list[Metric]:
    """Every metric the sources answer for; a failing source costs only its own."""
    up = GaugeMetricFamily(
        "omoi_metrics_source_up",
        "Whether a source answered this scrape (nats, store).",
        labels=["source"],
    )
    families: list[Metric] = []
    try:
        if ctx.connected is None:
            raise BusError("not connected to NATS (yet)")
        families += await _nats_metrics(ctx.connected, ctx.options.stale_beats)
        up.add_metric(["nats"], 1.0)
    except BusError as exc:
        log.warning("metrics: NATS did not answer: %s", exc)
        up.add_metric(["nats"], 0.0)
    if ctx.reader is not None:
        try:
            families += await _store_metrics(ctx.reader)
            up.add_metric(["store"], 1.0)
        except SqlError as exc:
            log.info("metrics: no store: %s", exc)
            up.add_metric(["store"], 0.0)
    return [*families, up]


class _Gathered:
    """A collector of metrics already gathered, for prometheus_client to render."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Gathered(families))
    return generate_latest(registry)


class MetricsController(Controller):
    path = "/"
    tags = ("system",)
    security = BEARER

    @get(
        "/metrics",
        summary="Prometheus metrics: queue depth, tasks, attempts, run time, cost, agents",
        responses=problems(),
    )
    async def metrics(self, ctx: Ctx) -> Response[bytes]:
        return Response(render(await gather(ctx)), media_type=EXPOSITION_TYPE)

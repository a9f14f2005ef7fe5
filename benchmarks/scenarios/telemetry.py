"""What watching costs: lifecycle throughput (2 workers) with tracing, JSON logs and log
shipping on, as production runs, against all three off, in the same run.

"On" is what an agent does by default, at its default level (INFO): every process records
spans of each delivery and attempt and ships them to OMOI_SPANS, and writes its lines as
JSON, shipped to OMOI_LOGS. "Off" is OMOI_TRACING=false, text logs at WARNING, no shipping.
The two alternate (off, on, off, on), so a machine that slows down during the run weighs
on both; the ratio is of their medians.
"""

from __future__ import annotations

import statistics

from benchmarks.common import BenchConfig, Metric
from benchmarks.scenarios.lifecycle import TASKS_PER_TICKET, drive
from benchmarks.scenarios.omoi_stack import omoi_stack

SCENARIO = "telemetry"
WORKERS = 2
PAIRS = 2
MODES = {
    "off": {"OMOI_TRACING": "false", "OMOI_LOG_FORMAT": "text", "OMOI_LOG_SHIP": "false",
            "OMOI_LOG_LEVEL": "WARNING"},
    "on": {"OMOI_TRACING": "true", "OMOI_LOG_FORMAT": "json", "OMOI_LOG_SHIP": "true",
           "OMOI_LOG_LEVEL": "INFO"},
}  # fmt: skip


async def run(cfg: BenchConfig) -> list[Metric]:
    tickets = max(1, cfg.count(4_000) // TASKS_PER_TICKET)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    # A smoke run checks that it works, once each.
    for pair in range(PAIRS if cfg.scale >= 0.1 else 1):
        for mode, env in MODES.items():
            workdir = cfg.workdir / f"telemetry-{mode}-{pair}"
            async with omoi_stack(
                workdir, workers=WORKERS, phases=("implementation",), env=env,
                log_level=env["OMOI_LOG_LEVEL"],
            ) as stack:  # fmt: skip
                elapsed, _ = await drive(stack, tickets, prefix=f"tel-{mode}-{pair}")
            rates[mode].append(tickets * TASKS_PER_TICKET / elapsed)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    params = {"workers": WORKERS}
    return [
        Metric(SCENARIO, "tasks_per_s", off, "tasks/s", {**params, "telemetry": "off"}),
        Metric(SCENARIO, "tasks_per_s", on, "tasks/s", {**params, "telemetry": "on"}),
        Metric(SCENARIO, "on_vs_off_pct", 100 * on / off, "%", params),
    ]

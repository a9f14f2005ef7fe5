"""Run the scenarios, repeat them, and reduce their metrics to medians, ratios and verdicts.

Scenarios are modules of `benchmarks.scenarios`, found by name from SCENARIOS; each
repetition runs in a fresh event loop and a fresh work directory, removed afterwards.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb

from agents.runner import loop_factory
from benchmarks.common import BenchConfig, Metric
from bus.server import find_nats_server

SCENARIOS = (
    "lifecycle",
    "telemetry",
    "default_worker",
    "latency",
    "raw_jetstream",
    "celery_redis",
    "recorder",
    "logs",
    "anomalies",
    "analytics",
    "gateway",
    "ticket_reads",
    "memory",
    "recall",
    "recovery",
    "merge",
)
# Omoi's own measurements, and what they are compared with: a baseline's metric is matched
# with Omoi's of the same name and params; None compares every metric they share.
OMOI_SCENARIOS = ("lifecycle", "latency")
BASELINES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "raw_jetstream": ("%", ("tasks_per_s", "cpu_us_per_task")),
    "celery_redis": ("x", None),
}
REPO_ROOT = Path(__file__).resolve().parents[1]
Params = Mapping[str, Any]


@dataclass(frozen=True)
class Ratio:
    omoi: str
    baseline: str
    metric: str
    params: dict[str, Any]
    value: float
    unit: str  # "%": Omoi as a percentage of the baseline; "x": Omoi / baseline


@dataclass(frozen=True)
class Target:
    label: str
    scenario: str
    metric: str
    params: dict[str, Any]
    bound: float
    at_least: bool  # measured >= bound; else measured <= bound (< when strict)
    unit: str
    strict: bool = False
    # Compare scenario/baseline (in the baseline's ratio unit) instead of the metric itself.
    baseline: str | None = None
    # (metric, least value) of the same scenario and params that makes the measurement count:
    # the load generator must have reached the rate the target is stated at.
    needs: tuple[str, float] | None = None


@dataclass(frozen=True)
class Verdict:
    target: str
    measured: float | None
    unit: str
    verdict: str  # PASS, MISS or n.a.
    note: str = ""


W2 = {"workers": 2}
AT_200 = {"rate": 200, "workers": 2}
TARGETS = (
    Target("lifecycle ≥ 50 % of raw JetStream (2 workers)", "lifecycle", "tasks_per_s", W2,
           50, True, "%", baseline="raw_jetstream"),
    Target("Omoi CPU per task ≤ 5x the raw JetStream round trip's (2 workers)", "lifecycle",
           "cpu_us_per_task", {"workers": 2, "role": "total"}, 500, False, "%",
           baseline="raw_jetstream"),
    Target("lifecycle ≥ 5x Celery + Redis (2 workers)", "lifecycle", "tasks_per_s", W2,
           5, True, "x", baseline="celery_redis"),
    Target("schedule-to-start p50 ≤ 2 ms at 200 tasks/s", "latency", "start_p50_ms", AT_200,
           2, False, "ms"),
    Target("schedule-to-start p99 ≤ 10 ms at 200 tasks/s", "latency", "start_p99_ms", AT_200,
           10, False, "ms"),
    Target("recorder ingest ≥ 50k events/s", "recorder", "ingest_events_per_s", {},
           50_000, True, "events/s"),
    Target("recorder lag p99 < 1 s at 10k events/s", "recorder", "lag_p99_ms", {"rate": 10_000},
           1000, False, "ms", strict=True, needs=("publish_events_per_s", 9500)),
    Target("lifecycle with tracing and JSON logs ≥ 90 % of both off (2 workers, same run)",
           "telemetry", "on_vs_off_pct", W2, 90, True, "%"),
    Target("log pipeline ≥ 20k lines/s into the store", "logs", "lines_per_s", {"lines": 200_000},
           20_000, True, "lines/s"),
    Target("anomaly detection: no false positives over 6,000 steady tasks", "anomalies",
           "false_positives", {"tasks": 6000}, 0, False, "findings"),
    Target("anomaly detection: the failing and the slow worker both flagged", "anomalies",
           "faulty_workers_detected", {"tasks": 6000}, 2, True, "of 2"),
    Target("analytics p95 < 100 ms over 1M events", "analytics", "p95_ms", {"query": "all"},
           100, False, "ms", strict=True),
    Target("gateway p99 < 20 ms at 1k req/s", "gateway", "p99_ms", {"rate": 1000},
           20, False, "ms", strict=True, needs=("achieved_rate", 950)),
    *(
        Target(f"ticket reads: {what} p95 < 50 ms at 100k tickets", "ticket_reads",
               f"{name}_p95_ms", {"tickets": 100_000}, 50, False, "ms", strict=True)
        for name, what in (("page", "a page"), ("filtered", "a filtered page"),
                           ("dashboard", "the dashboard"))
    ),
    Target("memory retrieval p95 < 50 ms over 10k memories", "recall", "search_p95_ms",
           {"memories": 10_000}, 50, False, "ms", strict=True),
    Target("memory retrieval with embeddings p95 < 50 ms over 10k memories", "recall",
           "hybrid_search_p95_ms", {"memories": 10_000}, 50, False, "ms", strict=True),
    Target("memory recall@5 ≥ 0.8 on the labelled set (69 past tasks, 71 queries)", "recall",
           "recall_at_5", {"memories": 69}, 0.8, True, "share"),
    Target("default worker: idle gap p50 ≤ 5 ms with a backlog", "default_worker",
           "idle_gap_p50_ms", W2, 5, False, "ms"),
    Target("default worker: idle gap p99 ≤ 50 ms with a backlog", "default_worker",
           "idle_gap_p99_ms", W2, 50, False, "ms"),
    *(Target(f"throughput restored < 5 s after a {label}", "recovery", "recovery_s",
             params, 5, False, "s", strict=True)
      for params, label in (
          ({"fault": "single-restart"}, "single-node restart (from its return)"),
          ({"fault": "cluster-node-loss", "from": "election"},
           "cluster node loss (from the new leaders' election)"))),
    # Not from the brief: "a leak shows" made checkable. RSS may grow while the first wave
    # sizes caches and arenas; after that it must stay flat.
    *(Target(f"no leak: {role} RSS growth ≤ 10 MB over the last 2 of 3 churn waves", "memory",
             "rss_growth_late_mb", {"role": role}, 10, False, "MB")
      for role in ("planner", "worker")),
)  # fmt: skip


@dataclass
class ScenarioRun:
    scenario: str
    reps: list[list[Metric]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # noqa: T201 - progress of a long run


def available(only: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """(scenarios to run, asked-for scenarios whose module does not exist), in SCENARIOS order."""
    wanted = set(only) if only is not None else set(SCENARIOS)
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios: {', '.join(sorted(unknown))}")
    names = [n for n in SCENARIOS if n in wanted]
    found = [n for n in names if importlib.util.find_spec(f"benchmarks.scenarios.{n}")]
    return found, [n for n in names if n not in found]


def run_scenario(name: str, scale: float, reps: int, out: Path) -> ScenarioRun:
    module = importlib.import_module(f"benchmarks.scenarios.{name}")
    # A scenario may cap its repetitions (`REPS`) to keep the whole run within budget.
    reps = min(reps, int(getattr(module, "REPS", reps)))
    result = ScenarioRun(name)
    start = time.perf_counter()
    for rep in range(1, reps + 1):
        workdir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
        began = time.perf_counter()
        try:
            metrics = asyncio.run(
                module.run(BenchConfig(workdir=workdir, scale=scale)), loop_factory=loop_factory()
            )
        except Exception:  # noqa: BLE001 - one failing scenario must not stop the rest
            result.error = traceback.format_exc()
            log(f"  {name} repetition {rep} failed:\n{result.error}")
            break
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result.reps.append(list(metrics))
        log(f"  {name} repetition {rep}/{reps}: {time.perf_counter() - began:.1f} s")
    result.seconds = time.perf_counter() - start
    return result


def medians(metrics: Iterable[Metric]) -> list[Metric]:
    """One metric per key, with the median of its values (NaNs left out), in first-seen order."""
    groups: dict[Any, list[Metric]] = {}
    for m in metrics:
        groups.setdefault(m.key, []).append(m)
    out = []
    for group in groups.values():
        values = [m.value for m in group if not math.isnan(m.value)]
        out.append(replace(group[0], value=statistics.median(values) if values else math.nan))
    return out


def find(meds: Iterable[Metric], scenario: str, name: str, params: Params) -> list[Metric]:
    """The metrics of `scenario` named `name` whose params include `params`."""
    wanted = (scenario, name)
    return [
        m for m in meds if (m.scenario, m.name) == wanted and params.items() <= m.params.items()
    ]


def ratios(meds: list[Metric]) -> list[Ratio]:
    out = []
    for baseline, (unit, names) in BASELINES.items():
        for base in meds:
            if base.scenario != baseline or (names is not None and base.name not in names):
                continue
            for omoi in meds:
                same = omoi.name == base.name and omoi.params == base.params
                if omoi.scenario in OMOI_SCENARIOS and same and base.value:
                    value = omoi.value / base.value * (100 if unit == "%" else 1)
                    out.append(Ratio(omoi.scenario, baseline, base.name, base.params, value, unit))
    return out


def _measure(target: Target, meds: list[Metric]) -> float | None:
    found = find(meds, target.scenario, target.metric, target.params)
    if not found:
        return None
    # Several matches (e.g. one per endpoint): the least favourable one counts.
    value = (min if target.at_least else max)(m.value for m in found)
    if target.baseline is None:
        return value
    base = find(meds, target.baseline, target.metric, target.params)
    if not base or not base[0].value:
        return None
    return value / base[0].value * (100 if target.unit == "%" else 1)


def evaluate(meds: list[Metric], scale: float) -> list[Verdict]:
    verdicts = []
    for t in TARGETS:
        measured = _measure(t, meds)
        if measured is None or math.isnan(measured):
            verdicts.append(Verdict(t.label, None, t.unit, "n.a.", "not measured"))
            continue
        if t.needs is not None:
            reached = find(meds, t.scenario, t.needs[0], t.params)
            if not reached or reached[0].value < t.needs[1]:
                got = f"{reached[0].value:,.0f} {reached[0].unit}" if reached else "nothing"
                note = f"load reached only {got}"
                verdicts.append(Verdict(t.label, measured, t.unit, "n.a.", note))
                continue
        if scale != 1.0:
            verdicts.append(Verdict(t.label, measured, t.unit, "n.a.", f"scale {scale:g}"))
            continue
        if t.at_least:
            ok = measured >= t.bound
        else:
            ok = measured < t.bound if t.strict else measured <= t.bound
        verdicts.append(Verdict(t.label, measured, t.unit, "PASS" if ok else "MISS"))
    return verdicts


def _command(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(ram / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "nats_server": _command(find_nats_server(), "--version").removeprefix("nats-server: "),
        "duckdb": duckdb.__version__,
        "git_commit": _command("git", "rev-parse", "--short", "HEAD"),
    }


def machine_line(info: Mapping[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM, {info['os']}, "
        f"Python {info['python']}, nats-server {info['nats_server']}, "
        f"duckdb {info['duckdb']}, commit {info['git_commit']}"
    )


def _plain(value: Any) -> Any:
    """JSON-ready: NaN becomes null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def report(
    runs: list[ScenarioRun], missing: list[str], scale: float, reps: int, total_s: float
) -> dict[str, Any]:
    """Everything results.json holds; the markdown and the figure are made from it."""
    meds = medians(m for run in runs for rep in run.reps for m in rep)
    out: dict[str, Any] = _plain(
        {
            "machine": machine_info(),
            "params": {"scale": scale, "reps": reps, "scenarios": [r.scenario for r in runs]},
            "missing": missing,
            "total_s": total_s,
            "scenarios": {
                r.scenario: {
                    "seconds": r.seconds,
                    "error": r.error,
                    "reps": [[asdict(m) for m in rep] for rep in r.reps],
                }
                for r in runs
            },
            "medians": [asdict(m) for m in meds],
            "ratios": [asdict(r) for r in ratios(meds)],
            "targets": [asdict(v) for v in evaluate(meds, scale)],
        }
    )
    return out

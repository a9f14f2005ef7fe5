"""Run the benchmarks and report: `python -m benchmarks [--scale 1.0] [--reps 3] [--only a,b]
[--out benchmarks/results] [--readme README.md]`.

Writes results.json, results.md and results.png under `<out>/<UTC timestamp>/`, copies them
to `<out>/latest/`, optionally puts the tables into the README between its bench markers,
and prints the markdown. Exits 1 if a scenario failed (the others still run and report).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from benchmarks import harness

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
IMAGE = "benchmarks/results/latest/results.png"
SERIES = (("Omoi", "#2b6cb0"), ("raw JetStream", "#9c9c9c"), ("Celery + Redis", "#c05621"))
# The metrics shown as a table in the figure; the rest are in results.md.
TABLE_SCENARIOS = ("recorder", "analytics", "gateway", "memory")


def fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 else f"{value:.3f}"


def with_unit(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{fmt(value)}x" if unit == "x" else f"{fmt(value)} {unit}"


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def machine_text(report: dict[str, Any]) -> str:
    p = report["params"]
    return (
        f"Machine: {harness.machine_line(report['machine'])}. Scale {p['scale']:g}, "
        f"{p['reps']} repetition(s), medians; run took {report['total_s']:.0f} s."
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [machine_text(report), ""]
    lines += ["| scenario | metric | params | median | unit |", "|---|---|---|---:|---|"]
    for m in report["medians"]:
        row = (m["scenario"], m["name"], fmt_params(m["params"]), fmt(m["value"]), m["unit"])
        lines.append("| " + " | ".join(row) + " |")
    if report["ratios"]:
        lines += ["", "| Omoi vs baseline | params | Omoi / baseline |", "|---|---|---:|"]
        for r in report["ratios"]:
            what = f"{r['omoi']} {r['metric']} vs {r['baseline']}"
            value = with_unit(r["value"], r["unit"])
            lines.append(f"| {what} | {fmt_params(r['params'])} | {value} |")
    lines += ["", "| target | measured | verdict |", "|---|---:|---|"]
    for t in report["targets"]:
        measured = with_unit(t["measured"], t["unit"])
        verdict = f"{t['verdict']} ({t['note']})" if t["note"] else t["verdict"]
        lines.append(f"| {t['target']} | {measured} | {verdict} |")
    notes = [f"`{n}` not run: no module yet." for n in report["missing"]]
    notes += [
        f"`{n}` failed: see results.json." for n, s in report["scenarios"].items() if s["error"]
    ]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def _values(meds: list[dict[str, Any]], scenario: str, name: str, **params: Any) -> float | None:
    for m in meds:
        if (m["scenario"], m["name"]) == (scenario, name) and params.items() <= m["params"].items():
            value: float | None = m["value"]
            return value
    return None


def _bars(ax: Axes, groups: list[str], series: dict[str, list[float | None]], log: bool) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (label, color) in enumerate(SERIES):
        values = series.get(label)
        if not values or all(v is None for v in values):
            continue
        xs = [g + (i - (len(SERIES) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=label, color=color)
        ax.bar_label(bars, labels=[fmt(v) for v in values], fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)


def plot(report: dict[str, Any], path: Path) -> None:
    meds: list[dict[str, Any]] = report["medians"]
    fig, (thr, lat, tab) = plt.subplots(
        1, 3, figsize=(18, 7), gridspec_kw={"width_ratios": [1.1, 1.1, 1.3]}
    )
    sources = ("lifecycle", "raw_jetstream", "celery_redis")
    workers = sorted({m["params"]["workers"] for m in meds if m["name"] == "tasks_per_s"})
    thr.set_title("Throughput, tasks/s (log; higher is better)")
    thr.set_xlabel("workers")
    _bars(
        thr,
        [str(w) for w in workers],
        {
            label: [_values(meds, src, "tasks_per_s", workers=w) for w in workers]
            for (label, _), src in zip(SERIES, sources, strict=True)
        },
        log=True,
    )
    stats = ("start_p50_ms", "start_p99_ms", "e2e_p50_ms", "e2e_p99_ms")
    lat.set_title("Latency at 200 tasks/s, 2 workers, ms (log; lower is better)")
    lat_sources = ("latency", "raw_jetstream", "celery_redis")
    _bars(
        lat,
        [s.removesuffix("_ms").replace("_", " ") for s in stats],
        {
            label: [_values(meds, src, s, rate=200, workers=2) for s in stats]
            for (label, _), src in zip(SERIES, lat_sources, strict=True)
        },
        log=True,
    )
    rows = [
        [m["scenario"], m["name"], fmt_params(m["params"]), with_unit(m["value"], m["unit"])]
        for m in meds
        if m["scenario"] in TABLE_SCENARIOS
        and (m["scenario"], m["name"]) != ("analytics", "p50_ms")
    ]
    tab.axis("off")
    tab.set_title("Recorder, analytics, gateway, memory (medians)")
    if rows:
        labels = ["scenario", "metric", "params", "median"]
        table = tab.table(cellText=rows, colLabels=labels, loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(7.5)
        table.scale(1, 1.15)
        table.auto_set_column_width(list(range(4)))
    else:
        tab.text(0.5, 0.5, "not measured", ha="center", transform=tab.transAxes)
    title = "Omoi benchmarks. " + machine_text(report)
    fig.suptitle(textwrap.fill(title, 170), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(path: Path, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: no {README_START} ... {README_END} block")
    block = f"{README_START}\n![Benchmark results]({IMAGE})\n\n{body}{README_END}"
    path.write_text(text[:start] + block + text[end + len(README_END) :], encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--scale", type=float, default=1.0, help="1.0 is the full run")
    p.add_argument("--reps", type=int, default=3, help="repetitions per scenario")
    p.add_argument("--only", help="comma-separated scenarios, e.g. lifecycle,raw_jetstream")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--readme", type=Path, help="put the results into this README")
    args = p.parse_args(argv)
    began = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        names, missing = harness.available(args.only.split(",") if args.only else None)
    except ValueError as exc:
        p.error(str(exc))
    for name in missing:
        harness.log(f"skipping {name}: benchmarks/scenarios/{name}.py does not exist yet")
    start = time.perf_counter()
    runs = []
    for name in names:
        harness.log(f"{name}: {args.reps} repetition(s) at scale {args.scale:g}")
        runs.append(harness.run_scenario(name, args.scale, args.reps, args.out))
    report = harness.report(runs, missing, args.scale, args.reps, time.perf_counter() - start)
    md = markdown(report)
    target = args.out / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target.mkdir(parents=True)
    (target / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (target / "results.md").write_text("# Benchmark results\n\n" + md, encoding="utf-8")
    plot(report, target / "results.png")
    latest = args.out / "latest"
    shutil.rmtree(latest, ignore_errors=True)
    shutil.copytree(target, latest)
    if args.readme:
        update_readme(args.readme, md)
    print(md)  # noqa: T201 - the report
    total = time.perf_counter() - began
    print(f"Results in {target} and {latest}; total run time {total:.0f} s.")  # noqa: T201
    return 1 if any(run.error for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

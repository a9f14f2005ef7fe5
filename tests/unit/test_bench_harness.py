"""The benchmark harness: medians, ratios and target verdicts, and a smoke run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.__main__ import markdown, update_readme
from benchmarks.common import Metric
from benchmarks.scenarios import celery_redis
from tests.helpers import require_tool

REPO = Path(__file__).resolve().parents[2]


def tps(scenario: str, workers: int, value: float) -> Metric:
    return Metric(scenario, "tasks_per_s", value, "tasks/s", {"workers": workers})


def lat(scenario: str, name: str, value: float) -> Metric:
    return Metric(scenario, name, value, "ms", {"rate": 200, "workers": 2})


def test_medians_group_by_key_and_skip_nan() -> None:
    runs = [
        tps("lifecycle", 2, 100),
        tps("lifecycle", 2, 300),
        tps("lifecycle", 2, 200),
        tps("lifecycle", 4, 50),
        Metric("latency", "start_max_ms", math.nan, "ms"),
        Metric("latency", "start_max_ms", 7.0, "ms"),
        Metric("latency", "e2e_max_ms", math.nan, "ms"),
    ]
    meds = {(m.name, m.params.get("workers")): m.value for m in harness.medians(runs)}
    assert meds[("tasks_per_s", 2)] == 200
    assert meds[("tasks_per_s", 4)] == 50
    assert meds[("start_max_ms", None)] == 7.0
    assert math.isnan(meds[("e2e_max_ms", None)])
    # Even counts take the mean of the middle two; order is first seen.
    two = harness.medians([tps("raw_jetstream", 1, 10), tps("raw_jetstream", 1, 20)])
    assert [m.value for m in two] == [15]


def test_ratios_match_name_and_params() -> None:
    meds = [
        tps("lifecycle", 1, 100),
        tps("lifecycle", 2, 150),
        tps("raw_jetstream", 1, 400),
        tps("raw_jetstream", 2, 300),
        tps("celery_redis", 2, 30),
        tps("celery_redis", 4, 40),  # no Omoi counterpart: no ratio
        lat("latency", "start_p50_ms", 1.5),
        lat("celery_redis", "start_p50_ms", 6.0),
        lat("raw_jetstream", "start_p50_ms", 0.5),  # raw JetStream: throughput only
    ]
    found = {(r.baseline, r.metric, r.params.get("workers")): r for r in harness.ratios(meds)}
    assert set(found) == {
        ("raw_jetstream", "tasks_per_s", 1),
        ("raw_jetstream", "tasks_per_s", 2),
        ("celery_redis", "tasks_per_s", 2),
        ("celery_redis", "start_p50_ms", 2),
    }
    assert found[("raw_jetstream", "tasks_per_s", 1)].value == pytest.approx(25.0)
    assert found[("raw_jetstream", "tasks_per_s", 2)].unit == "%"
    assert found[("celery_redis", "tasks_per_s", 2)].value == pytest.approx(5.0)
    assert found[("celery_redis", "start_p50_ms", 2)].value == pytest.approx(0.25)


def full_set(**overrides: float) -> list[Metric]:
    values = {
        "omoi": 150.0, "raw": 300.0, "celery": 30.0, "p50": 2.0, "p99": 12.0,
        "ingest": 60_000.0, "lag": 999.0, "publish": 10_000.0, "analytics": 100.0,
        "gateway": 15.0, "gateway_rate": 1000.0, "planner_growth": 10.0, "worker_growth": 11.0,
        "gap_p50": 5.0, "gap_p99": 60.0, "recovery_single": 5.0, "recovery_cluster": 2.0,
        "logs": 20_000.0, "false_positives": 0.0, "detected": 2.0, "telemetry": 89.9,
    } | overrides  # fmt: skip
    return [
        tps("lifecycle", 2, values["omoi"]),
        tps("raw_jetstream", 2, values["raw"]),
        tps("celery_redis", 2, values["celery"]),
        Metric("lifecycle", "cpu_us_per_task", values.get("cpu", 900.0), "µs",
               {"workers": 2, "role": "total"}),
        Metric("raw_jetstream", "cpu_us_per_task", 200.0, "µs", {"workers": 2, "role": "total"}),
        lat("latency", "start_p50_ms", values["p50"]),
        lat("latency", "start_p99_ms", values["p99"]),
        Metric("recorder", "ingest_events_per_s", values["ingest"], "events/s", {"events": 1}),
        Metric("recorder", "lag_p99_ms", values["lag"], "ms", {"rate": 10_000}),
        Metric("recorder", "publish_events_per_s", values["publish"], "events/s", {"rate": 10_000}),
        Metric("analytics", "p95_ms", values["analytics"], "ms", {"query": "all"}),
        Metric("analytics", "p95_ms", 500.0, "ms", {"query": "q2"}),
        Metric("logs", "lines_per_s", values["logs"], "lines/s", {"lines": 200_000}),
        Metric("gateway", "p99_ms", values["gateway"], "ms", {"rate": 1000}),
        Metric("gateway", "achieved_rate", values["gateway_rate"], "req/s", {"rate": 1000}),
        *(
            Metric("memory", "rss_growth_late_mb", values[f"{role}_growth"], "MB",
                   {"role": role, "tasks": 32_000})
            for role in ("planner", "worker")
        ),
        Metric("default_worker", "idle_gap_p50_ms", values["gap_p50"], "ms", {"workers": 2}),
        Metric("default_worker", "idle_gap_p99_ms", values["gap_p99"], "ms", {"workers": 2}),
        Metric("recovery", "recovery_s", values["recovery_single"], "s",
               {"fault": "single-restart"}),
        Metric("recovery", "recovery_s", values["recovery_cluster"], "s",
               {"fault": "cluster-node-loss", "from": "election"}),
        Metric("anomalies", "false_positives", values["false_positives"], "findings",
               {"tasks": 6000}),
        Metric("anomalies", "faulty_workers_detected", values["detected"], "of 2",
               {"tasks": 6000}),
        Metric("telemetry", "on_vs_off_pct", values["telemetry"], "%", {"workers": 2}),
        Metric("recall", "search_p95_ms", 20.0, "ms", {"memories": 10_000}),
        Metric("recall", "hybrid_search_p95_ms", 30.0, "ms", {"memories": 10_000}),
        *(
            Metric("ticket_reads", f"{name}_p95_ms", 12.0, "ms", {"tickets": 100_000})
            for name in ("page", "filtered", "dashboard")
        ),
        Metric("recall", "recall_at_5", 0.85, "share", {"memories": 69}),
    ]  # fmt: skip


def test_targets_at_full_scale() -> None:
    got = {v.target: v for v in harness.evaluate(full_set(), 1.0)}
    assert len(got) == len(harness.TARGETS)
    # lifecycle: 50 % of raw (bound inclusive) and 5x Celery (inclusive)
    assert got["lifecycle ≥ 50 % of raw JetStream (2 workers)"].verdict == "PASS"
    assert got["lifecycle ≥ 50 % of raw JetStream (2 workers)"].measured == pytest.approx(50)
    assert got["lifecycle ≥ 5x Celery + Redis (2 workers)"].verdict == "PASS"
    # CPU per task as a share of the raw round trip's: 900 / 200 µs is 450 %, within 500 %.
    cpu = "Omoi CPU per task ≤ 5x the raw JetStream round trip's (2 workers)"
    assert got[cpu].verdict == "PASS" and got[cpu].measured == pytest.approx(450)
    costly = {v.target: v for v in harness.evaluate(full_set(cpu=1001.0), 1.0)}
    assert costly[cpu].verdict == "MISS"
    assert got["schedule-to-start p50 ≤ 2 ms at 200 tasks/s"].verdict == "PASS"
    assert got["schedule-to-start p99 ≤ 10 ms at 200 tasks/s"].verdict == "MISS"
    assert got["recorder ingest ≥ 50k events/s"].verdict == "PASS"
    assert got["recorder lag p99 < 1 s at 10k events/s"].verdict == "PASS"
    # strict bound: exactly 100 ms is a miss
    assert got["analytics p95 < 100 ms over 1M events"].verdict == "MISS"
    assert got["log pipeline ≥ 20k lines/s into the store"].verdict == "PASS"  # inclusive
    watched = "lifecycle with tracing and JSON logs ≥ 90 % of both off (2 workers, same run)"
    assert got[watched].verdict == "MISS" and got[watched].measured == pytest.approx(89.9)
    assert got["gateway p99 < 20 ms at 1k req/s"].verdict == "PASS"
    # idle gaps: bounds inclusive; recovery: strictly under 5 s
    assert got["default worker: idle gap p50 ≤ 5 ms with a backlog"].verdict == "PASS"
    assert got["default worker: idle gap p99 ≤ 50 ms with a backlog"].verdict == "MISS"
    single = "throughput restored < 5 s after a single-node restart (from its return)"
    assert got[single].verdict == "MISS"
    cluster = "throughput restored < 5 s after a cluster node loss (from the new leaders' election)"
    assert got[cluster].verdict == "PASS"
    # the leak bound is inclusive, per role
    leak = "no leak: {} RSS growth ≤ 10 MB over the last 2 of 3 churn waves"
    assert got[leak.format("planner")].verdict == "PASS"
    assert got[leak.format("worker")].verdict == "MISS"
    # anomaly detection: none false (inclusive bound 0), both faulty workers found
    assert got["anomaly detection: no false positives over 6,000 steady tasks"].verdict == "PASS"
    flagged = "anomaly detection: the failing and the slow worker both flagged"
    assert got[flagged].verdict == "PASS"
    noisy = {v.target: v for v in harness.evaluate(full_set(false_positives=1, detected=1), 1.0)}
    assert noisy["anomaly detection: no false positives over 6,000 steady tasks"].verdict == "MISS"
    assert noisy[flagged].verdict == "MISS"


def test_targets_below_bounds_and_missing_and_smoke() -> None:
    low = {v.target: v for v in harness.evaluate(full_set(omoi=140, celery=28, logs=19_999), 1.0)}
    assert low["log pipeline ≥ 20k lines/s into the store"].verdict == "MISS"
    assert low["lifecycle ≥ 50 % of raw JetStream (2 workers)"].verdict == "MISS"
    assert low["lifecycle ≥ 5x Celery + Redis (2 workers)"].verdict == "PASS"
    # The load generator fell short of the stated rate: no verdict either way.
    short = {v.target: v for v in harness.evaluate(full_set(publish=8000, gateway_rate=600), 1.0)}
    assert short["recorder lag p99 < 1 s at 10k events/s"].verdict == "n.a."
    assert "8,000" in short["recorder lag p99 < 1 s at 10k events/s"].note
    assert short["gateway p99 < 20 ms at 1k req/s"].verdict == "n.a."
    # Nothing measured.
    assert {v.verdict for v in harness.evaluate([], 1.0)} == {"n.a."}
    # Smoke runs measure but never judge.
    smoke = harness.evaluate(full_set(), 0.001)
    assert {v.verdict for v in smoke} == {"n.a."}
    assert all(v.measured is not None for v in smoke)


def test_available_skips_missing_modules_and_refuses_unknown_names() -> None:
    found, missing = harness.available(["analytics", "recorder"])
    assert found + missing == ["recorder", "analytics"]
    with pytest.raises(ValueError, match="nope"):
        harness.available(["nope"])


def test_readme_block_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# X\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\n## Development\n")
    update_readme(readme, "| a | b |\n")
    update_readme(readme, "| c | d |\n")
    text = readme.read_text()
    assert "old" not in text and "| a | b |" not in text
    assert "| c | d |\n<!-- bench:end -->\n\n## Development\n" in text
    assert "benchmarks/results/latest/results.png" in text


def test_markdown_has_the_tables() -> None:
    meds = full_set()
    report = {
        "machine": {"cpu": "CPU", "cores": 2, "ram_gb": 4, "os": "Linux", "python": "3.12",
                    "nats_server": "v2", "duckdb": "2", "git_commit": "abc"},
        "params": {"scale": 1.0, "reps": 3}, "total_s": 12.0, "missing": ["memory"],
        "scenarios": {"gateway": {"error": "boom"}},
        "medians": [m.__dict__ | {"params": m.params} for m in meds],
        "ratios": [r.__dict__ for r in harness.ratios(meds)],
        "targets": [v.__dict__ for v in harness.evaluate(meds, 1.0)],
    }  # fmt: skip
    md = markdown(report)
    assert md.startswith("Machine: CPU, 2 cores")
    assert "| lifecycle | tasks_per_s | workers=2 | 150.0 | tasks/s |" in md
    assert "| lifecycle tasks_per_s vs raw_jetstream | workers=2 | 50.0 % |" in md
    assert "| lifecycle tasks_per_s vs celery_redis | workers=2 | 5.00x |" in md
    assert "| analytics p95 < 100 ms over 1M events | 100.0 ms | MISS |" in md
    assert "`memory` not run" in md and "`gateway` failed" in md


@pytest.mark.timeout(300)
def test_smoke_run_writes_every_result(tmp_path: Path) -> None:
    # Every scenario runs, the Celery baseline too: it would fail below with a traceback.
    require_tool(Path(celery_redis.REDIS_SERVER).exists(), "redis-server")
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks", "--scale", "0.001", "--reps", "1", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    latest = out / "latest"
    report = json.loads((latest / "results.json").read_text())
    expected, missing = harness.available()
    assert report["params"]["scenarios"] == expected
    assert report["missing"] == missing
    measured = {m["scenario"] for m in report["medians"]}
    assert measured == set(expected)
    for name in expected:
        assert report["scenarios"][name]["error"] is None
        assert len(report["scenarios"][name]["reps"]) == 1
    assert {v["verdict"] for v in report["targets"]} == {"n.a."}
    assert report["machine"]["nats_server"].startswith("v")
    md = (latest / "results.md").read_text()
    assert "| scenario | metric | params | median | unit |" in md
    assert md.count("\n| ") > len(report["medians"])
    png = (latest / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    stamped = [p for p in out.iterdir() if p.name != "latest"]
    assert len(stamped) == 1 and (stamped[0] / "results.json").exists()
    # Work directories are removed after each repetition.
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert "| scenario | metric |" in done.stdout and "total run time" in done.stdout

"""The Kubernetes manifests (deploy/k8s), validated offline: every core object against the
Kubernetes API schemas (`kubernetes-validate`, which ships them), and every name Omoi's
code decides (roles, credentials, streams, consumers) as the code has it now, so KEDA
scales a worker pool on the consumers that pool's workers read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from agents.runner import ROLES
from bus import constants as c
from schemas import WORK_PHASES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def manifests() -> list[dict[str, Any]]:
    docs = [
        d for path in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())
    ]
    return [d for d in docs if d]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_every_core_object_is_valid_against_the_kubernetes_schemas() -> None:
    core = [d for d in manifests() if d["kind"] != "ScaledObject"]
    assert {d["kind"] for d in core} >= {"Deployment", "Service", "ConfigMap"}
    for doc in core:
        kubernetes_validate.validate(doc, latest_version(), strict=True)


def test_a_broken_object_is_caught() -> None:
    bad = by_kind("Deployment")["omoi-planner"] | {"spec": {"replicas": "one"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, latest_version(), strict=True)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_each_agent_runs_its_role_with_only_its_own_credentials() -> None:
    deployments = by_kind("Deployment")
    roles = set()
    for name, d in deployments.items():
        box = container(d)
        if box["command"][:2] == ["omoi", "agent"]:
            role = box["command"][2]
            assert role in ROLES, name
        else:
            assert box["command"][:3] == ["python", "-m", "gateway"], name
            role = "gateway"
        roles.add(role)
        env = {e["name"]: e for e in box["env"]}
        assert env["OMOI_NATS_CREDENTIALS"]["value"] == f"/run/omoi/{role}.nk"
        (auth,) = [v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth"]
        assert auth["secret"]["items"] == [{"key": f"{role}.nk", "path": f"{role}.nk"}], name
        # Only what talks to a model gets its key: not a pool of shell workers.
        shell_only = "--capability" in box["command"] and "shell" in box["command"]
        talks = role in ("planner", "validator") or (role == "worker" and not shell_only)
        assert ("OMOI_LLM_API_KEY" in env) == talks, name
    # Every agent but the autoscaler (KEDA is its place here), and the gateway.
    assert roles == (set(ROLES) - {"autoscaler"}) | {"gateway"}


def test_keda_scales_each_pool_on_both_lanes_of_the_consumers_its_workers_read() -> None:
    deployments = by_kind("Deployment")
    scaled = by_kind("ScaledObject")
    assert scaled
    for name, so in scaled.items():
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        argv = container(target)["command"]
        phase, capability = argv[argv.index("--phase") + 1], argv[argv.index("--capability") + 1]
        assert phase in {p.value for p in WORK_PHASES}
        spec = so["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert target["spec"]["replicas"] == spec["minReplicaCount"]
        triggers = spec["triggers"]
        assert {t["type"] for t in triggers} == {"nats-jetstream"}
        assert {t["metadata"]["stream"] for t in triggers} == {c.TASKS_STREAM}
        consumers = {t["metadata"]["consumer"] for t in triggers}
        assert consumers == {c.task_consumer(phase, capability, lane) for lane in c.LANES}, name
        for t in triggers:
            meta = t["metadata"]
            assert int(meta["lagThreshold"]) >= 1 and meta["natsServerMonitoringEndpoint"]
            assert meta["account"] == "$G"  # Omoi's users are in the global account

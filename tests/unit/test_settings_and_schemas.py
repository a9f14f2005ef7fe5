"""Settings parsing and backoff, and the wire-model contracts in `schemas`."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.errors import SettingsError
from agents.settings import Settings
from schemas import (
    Heartbeat,
    Phase,
    PhaseTransition,
    TaskState,
    TicketSubmission,
    split_task_key,
    task_key,
    utcnow,
)
from schemas.registry import AgentCard

# Settings


def test_from_env_reads_nats_url_and_prefixed_fields() -> None:
    env = {
        "NATS_URL": "nats://example:4223",
        "OMOI_DATA_DIR": "/srv/omoi",
        "OMOI_HEARTBEAT_INTERVAL_S": "2.5",
        "OMOI_REPLICAS": "3",
        "OMOI_WORKFLOWS_DIR": "/etc/omoi/workflows",
        "OMOI_DEFAULT_WORKFLOW": "custom",
        "OMOI_NOT_A_FIELD": "ignored",
        "HOME": "/root",
    }
    s = Settings.from_env(env)
    assert s.nats_url == "nats://example:4223"
    assert s.data_dir == Path("/srv/omoi")
    assert s.heartbeat_interval_s == 2.5
    assert s.replicas == 3
    assert s.workflows_dir == Path("/etc/omoi/workflows")
    assert s.default_workflow == "custom"
    assert s.workspaces_dir == Path("/srv/omoi/workspaces")


def test_from_env_empty_environment_gives_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"NATS_URL": "", "OMOI_REPLICAS": ""}) == Settings()
    assert Settings().nats_url is None


def test_from_env_overrides_win_and_none_overrides_are_ignored() -> None:
    env = {"NATS_URL": "nats://env:4222", "OMOI_REPLICAS": "3", "OMOI_ACK_WAIT_S": "9"}
    s = Settings.from_env(env, nats_url="nats://flag:4222", replicas=None, ack_wait_s=4.0)
    assert s.nats_url == "nats://flag:4222"
    assert s.replicas == 3
    assert s.ack_wait_s == 4.0


@pytest.mark.parametrize(
    "env", [{"OMOI_REPLICAS": "9"}, {"OMOI_HEARTBEAT_INTERVAL_S": "0"}, {"OMOI_ACK_WAIT_S": "x"}]
)
def test_from_env_rejects_invalid_values(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    # The message names the variable, so the operator knows what to fix.
    assert next(iter(env)) in str(info.value)


def test_to_env_round_trips() -> None:
    original = Settings(
        nats_url="nats://127.0.0.1:4333",
        data_dir=Path("/tmp/omoi data"),
        heartbeat_interval_s=0.5,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        max_ticket_bytes=4096,
        workflows_dir=Path("/opt/wf"),
        replicas=3,
    )
    env = original.to_env()
    assert env["NATS_URL"] == "nats://127.0.0.1:4333"
    assert env["OMOI_REPLICAS"] == "3"
    assert all(isinstance(v, str) for v in env.values())
    assert Settings.from_env(env) == original
    assert Settings.from_env(Settings().to_env()) == Settings()
    assert "NATS_URL" not in Settings().to_env()
    assert "OMOI_WORKFLOWS_DIR" not in Settings().to_env()


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [(1, 0.5, 1.0), (2, 0.5, 2.0), (3, 0.5, 4.0), (1, 0.0, 0.8), (0, 0.5, 1.0), (7, 0.5, 60.0)],
)
def test_retry_delay_examples(attempt: int, jitter: float, delay: float) -> None:
    assert Settings().retry_delay(attempt, jitter) == pytest.approx(delay)


@pytest.mark.parametrize("attempt", range(1, 15))
@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.75, 0.999])
def test_retry_delay_doubles_with_jitter_and_never_exceeds_the_cap(
    attempt: int, jitter: float
) -> None:
    s = Settings()
    base = min(60.0, 2.0 ** (attempt - 1))
    delay = s.retry_delay(attempt, jitter)
    assert 0.8 * base <= delay < 1.2 * base
    assert delay <= s.retry_cap_s
    assert delay == pytest.approx(min(60.0, base * (0.8 + 0.4 * jitter)))


def test_retry_delay_uses_configured_base_and_cap() -> None:
    s = Settings(retry_base_s=0.05, retry_cap_s=0.2)
    assert s.retry_delay(1, 0.5) == pytest.approx(0.05)
    assert s.retry_delay(3, 0.5) == pytest.approx(0.2)
    assert s.retry_delay(10, 0.999) == pytest.approx(0.2)


@pytest.mark.parametrize(("interval", "ttl"), [(30.0, 150.0), (2.0, 10.0), (0.5, 2.5)])
def test_topology_heartbeat_ttl_is_five_intervals(interval: float, ttl: float) -> None:
    topo = Settings(heartbeat_interval_s=interval, replicas=3, ack_wait_s=7.0).topology()
    assert topo.heartbeat_ttl_s == pytest.approx(ttl)
    assert (topo.replicas, topo.ack_wait_s) == (3, 7.0)


def test_topology_heartbeat_ttl_has_a_floor_of_one_second() -> None:
    assert Settings(heartbeat_interval_s=0.1).topology().heartbeat_ttl_s == 1.0


# schemas


def test_ticket_submission_forbids_unknown_fields() -> None:
    with pytest.raises(ValidationError) as info:
        TicketSubmission.model_validate({"title": "t", "titel": "typo"})
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    assert info.value.errors()[0]["loc"] == ("titel",)


def test_task_state_tolerates_unknown_fields() -> None:
    raw = {
        "id": "T1.a",
        "ticket_id": "T1",
        "name": "a",
        "phase": "design",
        "status": "running",
        "added_in_v2": {"anything": [1, 2]},
    }
    state = TaskState.model_validate_json(json.dumps(raw))
    assert state.phase is Phase.DESIGN
    assert state.status == "running"
    assert "added_in_v2" not in json.loads(state.to_json())


def test_phase_transition_serialises_from_as_from() -> None:
    step = PhaseTransition(from_=Phase.TESTING, to=Phase.IMPLEMENTATION, reason="tests failed")
    wire = json.loads(step.to_json())
    assert wire["from"] == "testing"
    assert "from_" not in wire
    assert wire["to"] == "implementation"
    again = PhaseTransition.model_validate_json(step.to_json())
    assert again == step
    first = PhaseTransition.model_validate({"from": None, "to": "design", "reason": "r"})
    assert first.from_ is None


def test_task_key_round_trips_through_split() -> None:
    assert split_task_key(task_key("T1", "build")) == ("T1", "build")
    assert split_task_key("T1.a.b") == ("T1", "a.b")


@pytest.mark.parametrize("key", ["", "nodot", ".name", "ticket.", "."])
def test_split_task_key_errors(key: str) -> None:
    with pytest.raises(ValueError, match=r"<ticket_id>\.<task_name>"):
        split_task_key(key)


@pytest.mark.parametrize(
    ("age_s", "missed", "stale"),
    [(0.0, 3, False), (90.0, 3, False), (90.5, 3, True), (30.5, 1, True), (59.0, 2, False)],
)
def test_heartbeat_is_stale(age_s: float, missed: int, stale: bool) -> None:
    now = utcnow()
    beat = Heartbeat(agent_id="w1", role="worker", at=now - timedelta(seconds=age_s))
    assert beat.age_s(now) == pytest.approx(age_s)
    assert beat.is_stale(now, missed_beats=missed) is stale


# Worker labels and the service API's card


def test_worker_labels_split_dedupe_and_round_trip() -> None:
    s = Settings.from_env({"OMOI_WORKER_LABELS": "gpu, linux-arm64,,gpu"})
    assert s.worker_labels == ("gpu", "linux-arm64")
    assert s.to_env()["OMOI_WORKER_LABELS"] == "gpu,linux-arm64"
    assert Settings.from_env(s.to_env()) == s
    # `--label` flags arrive as a list; each may hold several.
    assert Settings.from_env({}, worker_labels=["a,b", "c"]).worker_labels == ("a", "b", "c")


@pytest.mark.parametrize("label", ["GPU", "1gpu", "a.b", "a b", "x" * 33, "gpu!"])
def test_worker_labels_are_tokens_like_capabilities(label: str) -> None:
    with pytest.raises(SettingsError, match="OMOI_WORKER_LABELS") as info:
        Settings.from_env({"OMOI_WORKER_LABELS": f"ok,{label}"})
    assert repr(label) in str(info.value)


def test_the_worker_parser_takes_labels_and_refuses_bad_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agents.runner import parser

    args = parser("worker").parse_args(["--label", "gpu", "--label", "big"])
    assert args.labels == ["gpu", "big"]
    with pytest.raises(SystemExit):
        parser("worker").parse_args(["--label", "GPU"])
    assert "argument --label: label 'GPU'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser("planner").parse_args(["--agent-id", "a.b"])
    assert "argument --agent-id" in capsys.readouterr().err


def test_an_agent_card_round_trips_through_string_metadata() -> None:
    card = AgentCard(
        role="worker",
        agent_id="w-1",
        omoi_version="0.1.0",
        host="box",
        pid=42,
        phases=["design", "testing"],
        capabilities=["shell"],
        labels=[],
        slots=4,
    )
    meta = card.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["phases"] == "design,testing" and meta["labels"] == "" and meta["slots"] == "4"
    assert AgentCard.from_metadata(meta) == card
    planner = AgentCard(role="planner", agent_id="p-1", omoi_version="0.1.0")
    assert "slots" not in planner.metadata()
    assert AgentCard.from_metadata(planner.metadata()) == planner
    with pytest.raises(ValidationError):
        AgentCard.from_metadata({"role": "worker"})

"""Secrets: the task environment, the redactor, and secrets read from files."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from agents.errors import SettingsError
from agents.redact import REDACTED, Redactor, install_log_redaction
from agents.settings import Settings
from agents.task_env import scrubbed, task_environment

KEY = "omoi-test-key-5b1d9e0c7a"

WORKER_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/w",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TERM": "xterm",
    "USER": "w",
    "NATS_URL": "nats://10.0.0.1:4222",
    "OMOI_LLM_API_KEY": KEY,
    "OMOI_DATA_DIR": "/data",
    "OPENAI_API_KEY": KEY,
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "GITHUB_TOKEN": "ghp-token-value",
    "SSH_AUTH_SOCK": "/run/ssh.sock",
    "PYTHONPATH": "/src",
    "TEAM_REGISTRY": "registry.example",
}


# The task environment


def test_tasks_get_the_allow_list_only() -> None:
    env = task_environment(WORKER_ENV, Settings(llm_api_key=SecretStr(KEY)))
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/w",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "xterm",
        "USER": "w",
    }


def test_opted_in_names_pass_but_never_a_known_secret_value() -> None:
    settings = Settings.from_env(
        {
            "OMOI_LLM_API_KEY": KEY,
            "OMOI_TASK_ENV_PASS": "TEAM_REGISTRY, GITHUB_TOKEN,OPENAI_API_KEY,MISSING",
        }
    )
    assert settings.task_env_pass == ("TEAM_REGISTRY", "GITHUB_TOKEN", "OPENAI_API_KEY", "MISSING")
    env = task_environment(WORKER_ENV, settings)
    # An operator may hand a team's own token on; the model key stays, whatever its name.
    assert env["TEAM_REGISTRY"] == "registry.example"
    assert env["GITHUB_TOKEN"] == "ghp-token-value"
    assert "OPENAI_API_KEY" not in env
    assert "MISSING" not in env
    assert KEY not in env.values()


@pytest.mark.parametrize("name", ["OMOI_LLM_API_KEY", "NATS_URL", "not a name", "1X"])
def test_omoi_and_nats_variables_cannot_be_opted_in(name: str) -> None:
    with pytest.raises(SettingsError, match="OMOI_TASK_ENV_PASS"):
        Settings.from_env({"OMOI_TASK_ENV_PASS": f"PATH,{name}"})


def test_task_env_pass_round_trips_through_the_child_environment() -> None:
    settings = Settings(task_env_pass=("A", "B_2"))
    env = settings.to_env()
    assert env["OMOI_TASK_ENV_PASS"] == "A,B_2"
    assert Settings.from_env(env) == settings


def test_git_keeps_proxies_and_the_ssh_agent_but_no_secrets() -> None:
    env = scrubbed(WORKER_ENV)
    assert env["SSH_AUTH_SOCK"] == "/run/ssh.sock"
    assert env["PATH"] == "/usr/bin:/bin"
    for gone in ("NATS_URL", "OMOI_LLM_API_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN"):
        assert gone not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env


# The redactor


def test_redactor_replaces_every_known_value() -> None:
    redact = Redactor([KEY, "short", "another-secret-value"])
    text = f"key={KEY}; again {KEY}; other another-secret-value; short stays"
    assert redact.text(text) == (f"key={REDACTED}; again {REDACTED}; other {REDACTED}; short stays")
    assert redact.data({"a": [f"x{KEY}x", 3, None], "b": {"c": KEY}}) == {
        "a": [f"x{REDACTED}x", 3, None],
        "b": {"c": REDACTED},
    }


def test_redactor_hides_a_secret_cut_at_either_edge() -> None:
    redact = Redactor([KEY])
    # A tail that starts inside the key, a clip that ends inside it.
    assert redact.text(KEY[7:] + "\nrest") == REDACTED + "\nrest"
    assert redact.text("start " + KEY[:12]) == "start " + REDACTED
    # A piece too short to tell from ordinary text stays.
    assert redact.text(KEY[-3:] + " ok") == KEY[-3:] + " ok"


def test_an_empty_redactor_changes_nothing() -> None:
    redact = Redactor.from_settings(Settings())
    assert not redact
    value = {"a": "b"}
    assert redact.data(value) is value


def test_log_lines_are_redacted_with_arguments_and_tracebacks() -> None:
    root = logging.getLogger("redaction-test-root")
    root.propagate = False
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        install_log_redaction(Redactor([KEY]), root)
        install_log_redaction(Redactor([KEY]), root)  # idempotent
        assert len(handler.filters) == 1
        child = logging.getLogger("redaction-test-root.child")
        child.warning("key is %s", KEY)
        try:
            raise ValueError(f"bad key {KEY}")
        except ValueError:
            child.exception("failed with %r", {"k": KEY})
    finally:
        root.removeHandler(handler)
    out = stream.getvalue()
    assert KEY not in out
    assert out.count(REDACTED) == 3, out
    assert "ValueError: bad key [redacted]" in out


# Secrets from files


def secret_file(tmp_path: Path, text: str, mode: int = 0o600, name: str = "key") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, KEY + "\n")
    settings = Settings.from_env({"OMOI_LLM_API_KEY_FILE": str(path)})
    assert settings.llm_api_key == SecretStr(KEY)
    assert settings.secret_values() == [KEY]
    # Children get the file, not the secret.
    env = settings.to_env()
    assert env["OMOI_LLM_API_KEY_FILE"] == str(path)
    assert KEY not in env.values()
    assert Settings.from_env(env).llm_api_key == SecretStr(KEY)
    # A value set later is passed as itself.
    changed = settings.model_copy(update={"llm_api_key": SecretStr("replaced-key-value")})
    assert changed.to_env()["OMOI_LLM_API_KEY"] == "replaced-key-value"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_secret_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, KEY, mode)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"OMOI_LLM_API_KEY_FILE": str(path)})
    message = str(info.value)
    assert f"mode {mode:04o}" in message and f"chmod 600 {path}" in message
    assert message.startswith("OMOI_LLM_API_KEY_FILE:")
    assert KEY not in message


def test_unreadable_empty_and_doubly_set_secrets_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SettingsError, match=r"cannot read .*nope"):
        Settings.from_env({"OMOI_LLM_API_KEY_FILE": str(missing)})
    if os.geteuid() != 0:  # root reads anything
        locked = secret_file(tmp_path, KEY, 0o000, name="locked")
        with pytest.raises(SettingsError, match="Permission denied"):
            Settings.from_env({"OMOI_LLM_API_KEY_FILE": str(locked)})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(SettingsError, match="is empty"):
        Settings.from_env({"OMOI_LLM_API_KEY_FILE": str(empty)})
    with pytest.raises(SettingsError, match="not a regular file"):
        Settings.from_env({"OMOI_LLM_API_KEY_FILE": str(tmp_path)})
    path = secret_file(tmp_path, KEY)
    with pytest.raises(SettingsError, match="set one"):
        Settings.from_env({"OMOI_LLM_API_KEY_FILE": str(path), "OMOI_LLM_API_KEY": KEY})

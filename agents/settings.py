"""Typed settings, parsed once at the edge (CLI or `__main__`) and passed in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from agents.autoscaler.policy import parse_pools
from agents.errors import SettingsError
from agents.logs import LogFormat
from agents.secret_files import FILE_SUFFIX, read_secret_file
from agents.task_env import ENV_NAME, NEVER_PREFIXES
from bus.auth import SEED_SUFFIX, AuthDir, Credentials, load_credentials
from bus.permissions import ROLES, SYSTEM_ROLE
from bus.topology import TopologyConfig
from schemas.guardian import InterventionKind
from schemas.registry import check_label, split_list
from schemas.usage import Budget

DEFAULT_NATS_PORT = 4222
ENV_PREFIX = "OMOI_"


class Settings(BaseModel):
    """Everything tunable. Environment: `NATS_URL` and `OMOI_<FIELD>` (upper case)."""

    nats_url: str | None = None
    # This process's NATS identity, an nkey seed file. Unset: the role's own file in
    # `auth_dir` (default `<data_dir>/auth`, made by `omoi up` or `omoi auth init`).
    nats_credentials: Path | None = None
    # The monitor's second identity, in the servers' system account (refused connections).
    # Unset: `system.nk` in the auth dir, if there is one.
    nats_system_credentials: Path | None = None
    auth_dir: Path | None = None
    data_dir: Path = Path(".omoi")
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_cap_s: float = Field(default=60.0, ge=0)
    ack_wait_s: float = Field(default=30.0, gt=0)
    # How long a resource lock outlives its holder's last renewal (renewed while the
    # task runs): a dead worker's locks are free this long after it died.
    lock_ttl_s: float = Field(default=30.0, gt=0)
    # How long a handed-off task may wait for a live agent of its new capability before
    # it fails, saying none serves it.
    handoff_timeout_s: float = Field(default=120.0, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # `json`: one object per line with agent, subject, ticket and task, for machines.
    log_format: LogFormat = "text"
    # Whether an agent process also ships its lines (as JSON) to `omoi.logs.<role>.<id>`,
    # for the store's `logs` view and `omoi logs`.
    log_ship: bool = True
    # Whether agents record spans (OpenTelemetry): to the store's `spans` view through
    # `omoi.spans.<role>.<id>`, and to `otlp_endpoint` when one is set.
    tracing: bool = True
    # An OTLP/HTTP collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`); spans go to its
    # `/v1/traces`.
    otlp_endpoint: str | None = None
    # How often the planner sweeps every running ticket; the sweep also restores the
    # message of work that has been without one for `lost_message_after_s`.
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    lost_message_after_s: float = Field(default=10.0, gt=0)
    fetch_poll_s: float = Field(default=1.0, gt=0)
    # Tasks a worker executes at once (like Celery's --concurrency). Coding agents want 1;
    # quick shell or noop tasks gain from more.
    worker_concurrency: int = Field(default=1, ge=1, le=256)
    # What a worker says it is (`gpu`, `linux-arm64`), for people and tools to pick it by:
    # `omoi agents --label gpu`. OMOI_WORKER_LABELS=gpu,big; tokens like capabilities.
    worker_labels: tuple[str, ...] = ()
    # Outcome events the planner takes at once; a ticket is reconciled once per batch.
    planner_batch: int = Field(default=256, ge=1, le=10_000)
    # Planners share the tickets' partitions by leases of this length, renewed three
    # times a lease: a dead planner's partitions move to the others within about this long.
    planner_lease_s: float = Field(default=6.0, ge=1.0, le=300.0)
    events_max_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    # How long OMOI_LOGS keeps lines (the store keeps them for `store_retention_s`).
    logs_max_age_s: float = Field(default=3 * 24 * 3600, gt=0)
    max_ticket_bytes: int = Field(default=1024 * 1024, gt=0)
    default_workflow: str = "default"
    workflows_dir: Path | None = None
    replicas: int = Field(default=1, ge=1, le=5)
    # The model (any litellm model string). Unset: no decomposition or reviews, and
    # agent tasks fail with a clear message.
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_base_url: str | None = None
    # For models litellm has no price for (local, scripted): dollars per token.
    llm_input_cost_per_token: float | None = Field(default=None, ge=0)
    llm_output_cost_per_token: float | None = Field(default=None, ge=0)
    llm_num_retries: int = Field(default=2, ge=0)
    llm_timeout_s: float = Field(default=120.0, gt=0)
    # Per-attempt limits of an agent task, unless the task sets its own.
    agent_max_iterations: int = Field(default=60, ge=1)
    agent_max_cost_usd: float | None = Field(default=None, gt=0)
    agent_max_tokens: int | None = Field(default=None, ge=1)
    # Per-ticket limits over all attempts of all its tasks, unless the ticket sets its own.
    ticket_max_cost_usd: float | None = Field(default=None, gt=0)
    ticket_max_tokens: int | None = Field(default=None, ge=1)
    # Delivery: GitHub's REST API (a GitHub Enterprise server's `/api/v3`), the token
    # that pushes to `github_host` over HTTPS and opens pull requests there.
    github_api_url: str = "https://api.github.com"
    github_host: str = "github.com"
    github_token: SecretStr | None = None
    # GitHub's webhooks at the gateway (`POST /api/v1/webhooks/github`): the secret they are
    # signed with (unset: refused), the label that makes an issue a ticket, where a
    # repository is cloned from (`{repo}` is owner/name) and the workflow its tickets run.
    github_webhook_secret: SecretStr | None = None
    github_label: str = "omoi"
    github_clone_url: str = "https://github.com/{repo}.git"
    github_workflow: str | None = None
    # Jira: the site and the account the delivery agent comments and transitions as; the
    # gateway's webhook secret, the status that makes an issue a ticket, where its work is
    # cloned from and pushed to (`{project}` is the project key), its workflow, and
    # the statuses an issue is moved to when work starts and when it is done.
    jira_url: str | None = None
    jira_email: str | None = None
    jira_token: SecretStr | None = None
    jira_webhook_secret: SecretStr | None = None
    jira_status: str = "Ready for Omoi"
    jira_repository: str | None = None
    jira_workflow: str | None = None
    jira_started_status: str = "In Progress"
    jira_done_status: str = "Done"
    # The Jira projects the `jira` tool may touch besides a ticket's own issue's.
    jira_projects: tuple[str, ...] = ()
    # Supabase (the `supabase` tool, made by the delivery agent): the Management API, the
    # project migrations go to, and a personal access token.
    supabase_api_url: str = "https://api.supabase.com"
    supabase_project: str | None = Field(default=None, pattern=r"^[a-z0-9]{1,40}$")
    supabase_token: SecretStr | None = None
    # Discoveries (agents/planner/discoveries.py): how deep a chain of them may go, how
    # many a ticket may take, and the estimate above which one waits for an operator.
    discovery_max_depth: int = Field(default=2, ge=0, le=10)
    discovery_max: int = Field(default=10, ge=0, le=500)
    discovery_approval_usd: float = Field(default=1.0, ge=0)
    # Memory: how many similar past tasks a coding agent's prompt gets, in how many
    # characters at most, and how long its worker waits for the recorder to find them.
    memory_recall: int = Field(default=5, ge=0, le=50)
    memory_chars: int = Field(default=3000, ge=0)
    memory_timeout_s: float = Field(default=1.0, gt=0)
    # Embeddings for memory (agents/embeddings.py), made by the recorder through litellm:
    # the model ("openai/text-embedding-3-small"; unset: full-text search alone), and its
    # provider's address and key when they are not the chat model's.
    embedding_model: str | None = None
    embedding_base_url: str | None = None
    embedding_api_key: SecretStr | None = None
    embedding_timeout_s: float = Field(default=10.0, gt=0)
    # The analytics store: events per committed batch, how often readers' files are
    # published, and how long events are kept.
    record_batch: int = Field(default=2000, ge=1, le=100_000)
    store_publish_interval_s: float = Field(default=2.0, gt=0)
    store_retention_s: float = Field(default=30 * 24 * 3600, gt=0)
    # The monitor's anomaly detection: how often it judges, the recent window a worker is
    # judged on, the history before it that says what is usual, and the finished attempts
    # a worker needs in the window (agents/monitor/detection.py has the other rules).
    anomaly_interval_s: float = Field(default=15.0, gt=0)
    anomaly_window_s: float = Field(default=300.0, gt=0)
    anomaly_baseline_s: float = Field(default=24 * 3600.0, gt=0)
    anomaly_min_samples: int = Field(default=3, ge=1)
    # A task waiting this long in the normal lane is starved (agents/monitor/starved.py).
    anomaly_starved_s: float = Field(default=900.0, gt=0)
    # Alert rules (TOML, agents/monitor/alert_rules.py); unset: no alerts. Webhook
    # notices are signed with `alert_webhook_secret` (HMAC-SHA256); mail goes through
    # `smtp_host`. Each delivery is tried `alert_attempts` times, backing off from
    # `alert_retry_base_s`, each try cut off after `alert_timeout_s`.
    alert_rules: Path | None = None
    alert_webhook_secret: SecretStr | None = None
    alert_attempts: int = Field(default=5, ge=1, le=20)
    alert_retry_base_s: float = Field(default=1.0, ge=0)
    alert_timeout_s: float = Field(default=5.0, gt=0)
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "omoi@localhost"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    # The guardian (agents/guardian/policy.py): a task failing on this many different
    # workers is poison; the intervention kinds it applies alone (the rest it proposes):
    # OMOI_GUARDIAN_AUTONOMOUS=quarantine_worker,pause_ticket ('' proposes everything).
    guardian_poison_workers: int = Field(default=3, ge=2)
    # A running agent is stuck after this many progress reports of the same command with
    # no file changed; with `guardian_model_review` (and OMOI_LLM_MODEL) a model words the
    # steering message from its trajectory, else the rules' own advice is sent.
    guardian_stuck_steps: int = Field(default=4, ge=2)
    guardian_model_review: bool = False
    # The autoscaler (agents/autoscaler): its pools (`phase:capability:min:max`, comma
    # list), the host whose supervisor runs them (default: its own), how often it looks,
    # how many tasks a worker is worth, and its cooldown and hysteresis.
    autoscaler_pools: tuple[str, ...] = ()
    autoscaler_host: str | None = None
    autoscaler_interval_s: float = Field(default=5.0, gt=0)
    autoscaler_tasks_per_worker: int = Field(default=10, ge=1)
    autoscaler_cooldown_s: float = Field(default=30.0, ge=0)
    autoscaler_down_after_s: float = Field(default=60.0, ge=0)
    autoscaler_urgent_wait_s: float = Field(default=60.0, gt=0)
    # A held discovery whose estimate is at most this (and that opens no phase) the
    # guardian approves on its own; any other it proposes.
    guardian_discovery_usd: float = Field(default=5.0, ge=0)
    guardian_autonomous: tuple[InterventionKind, ...] = tuple(InterventionKind)
    # How often a running agent task may publish a task.progress event.
    progress_interval_s: float = Field(default=2.0, gt=0)
    # The size of the context one phase hands to the next, in (approximate) tokens.
    context_tokens: int = Field(default=1200, ge=100)
    # Variables of the worker's environment that tasks get on top of the fixed
    # allow-list (agents/task_env.py): OMOI_TASK_ENV_PASS=NAME1,NAME2.
    task_env_pass: tuple[str, ...] = ()

    # Secret field -> (the file it was read from, its value then), so `to_env` hands a
    # child the file rather than the secret.
    _secret_files: dict[str, tuple[str, SecretStr]] = PrivateAttr(default_factory=dict)

    @field_validator("task_env_pass", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("guardian_autonomous", mode="before")
    @classmethod
    def _split_kinds(cls, value: object) -> object:
        return split_list(value)

    @field_validator("worker_labels", "jira_projects", "autoscaler_pools", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        return split_list(value)

    @field_validator("autoscaler_pools")
    @classmethod
    def _pools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_pools(value)  # the autoscaler's own reading: a bad pool is named here
        return value

    @field_validator("worker_labels")
    @classmethod
    def _labels(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_label(label) for label in labels))

    @field_validator("task_env_pass")
    @classmethod
    def _passable(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.startswith(NEVER_PREFIXES):
                raise ValueError(f"{name}: Omoi's and NATS's own variables never reach tasks")
        return names

    @classmethod
    def secret_fields(cls) -> list[str]:
        return [n for n, f in cls.model_fields.items() if SecretStr in _types(f.annotation)]

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> Settings:
        """Settings from `NATS_URL`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OMOI_<FIELD>` and, for
        each secret, `OMOI_<FIELD>_FILE`; SettingsError names what is wrong."""
        values: dict[str, object] = {}
        if env.get("NATS_URL"):
            values["nats_url"] = env["NATS_URL"]
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            values["otlp_endpoint"] = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if env.get(key):
                values[name] = env[key]
        files: dict[str, tuple[str, SecretStr]] = {}
        for name in cls.secret_fields():
            key = ENV_PREFIX + name.upper()
            if not env.get(key + FILE_SUFFIX):
                continue
            if env.get(key):
                raise SettingsError(f"both {key} and {key}{FILE_SUFFIX} are set; set one")
            path = env[key + FILE_SUFFIX]
            secret = SecretStr(read_secret_file(key + FILE_SUFFIX, Path(path)))
            values[name] = secret
            files[name] = (path, secret)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None
        settings._secret_files = files
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process parse these same settings. A
        secret read from a file is passed as that file, so it stays out of the child's
        environment too."""
        env = {}
        # An identity is per process: children pick their own role's from the auth dir.
        values = self.model_dump(
            exclude_none=True, exclude={"nats_credentials", "nats_system_credentials"}
        )
        for name, value in values.items():
            key = ENV_PREFIX + name.upper()
            if isinstance(value, SecretStr):
                source = self._secret_files.get(name)
                if source is not None and source[1] == value:
                    env[key + FILE_SUFFIX] = source[0]
                else:
                    env[key] = value.get_secret_value()
            elif name == "nats_url":
                env["NATS_URL"] = str(value)
            elif isinstance(value, tuple | list):
                # Empty too: an empty list may differ from the default (guardian_autonomous).
                env[key] = ",".join(value)
            else:
                env[key] = str(value)
        return env

    def secret_values(self) -> list[str]:
        """Every secret these settings hold: what never reaches a task, and what is
        redacted wherever output is shown."""
        return [
            value.get_secret_value()
            for name in self.secret_fields()
            if isinstance(value := getattr(self, name), SecretStr)
        ]

    def topology(self) -> TopologyConfig:
        return TopologyConfig(
            replicas=self.replicas,
            ack_wait_s=self.ack_wait_s,
            events_max_age_s=self.events_max_age_s,
            logs_max_age_s=self.logs_max_age_s,
            # Long enough for the monitor to see an agent go stale before it vanishes.
            heartbeat_ttl_s=max(5 * self.heartbeat_interval_s, 1.0),
            partition_lease_s=self.planner_lease_s,
        )

    @property
    def auth_path(self) -> Path:
        return self.auth_dir or self.data_dir / "auth"

    def credentials(self, role: str) -> Credentials | None:
        """The NATS identity a process of `role` connects with: `nats_credentials` if
        set, else the role's seed in the auth dir, else none (a server without auth)."""
        if self.nats_credentials is not None:
            own = self.nats_credentials.name.removesuffix(SEED_SUFFIX)
            return load_credentials(self.nats_credentials, own if own in ROLES else role)
        seed = AuthDir(self.auth_path).seed_file(role)
        return load_credentials(seed, role) if seed.exists() else None

    def system_credentials(self) -> Credentials | None:
        """The identity that hears what the servers announce: `nats_system_credentials`,
        else `system.nk` in the auth dir, else none."""
        if self.nats_system_credentials is not None:
            return load_credentials(self.nats_system_credentials, SYSTEM_ROLE)
        seed = AuthDir(self.auth_path).seed_file(SYSTEM_ROLE)
        return load_credentials(seed, SYSTEM_ROLE) if seed.exists() else None

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store" / "omoi.duckdb"

    @property
    def memory_path(self) -> Path:
        """The memory store (store/memory.py), the recorder's like the analytics store."""
        return self.data_dir / "store" / "memory.duckdb"

    @property
    def published_dir(self) -> Path:
        """Parquet segments and an init script that readers (and the duckdb CLI) use."""
        return self.data_dir / "store" / "published"

    @property
    def agent_state_dir(self) -> Path:
        """Where agent conversations, and the SDK's own files, persist."""
        return self.data_dir / "agent-state"

    def agent_budget(self) -> Budget:
        return Budget(
            max_iterations=self.agent_max_iterations,
            max_cost_usd=self.agent_max_cost_usd,
            max_tokens=self.agent_max_tokens,
        )

    def ticket_budget(self) -> Budget:
        return Budget(max_cost_usd=self.ticket_max_cost_usd, max_tokens=self.ticket_max_tokens)

    def retry_delay(self, attempt: int, jitter: float) -> float:
        """Exponential backoff for retry number `attempt` (1-based); `jitter` in [0, 1)."""
        delay: float = min(self.retry_cap_s, self.retry_base_s * 2.0 ** max(attempt - 1, 0))
        return min(self.retry_cap_s, delay * (0.8 + 0.4 * jitter))


def _types(annotation: object) -> tuple[object, ...]:
    """The types an annotation admits: `SecretStr | None` -> (SecretStr, NoneType)."""
    return getattr(annotation, "__args__", None) or (annotation,)


def _describe(exc: ValidationError) -> str:
    """Which variables are wrong and why, never with the value (it may be a secret)."""
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        variable = "NATS_URL" if field == "nats_url" else ENV_PREFIX + field.upper()
        parts.append(f"{variable}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)

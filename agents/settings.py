"""Typed settings, parsed once at the edge (CLI or `__main__`) and passed in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from bus.topology import TopologyConfig

DEFAULT_NATS_PORT = 4222
ENV_PREFIX = "OMOI_"


class Settings(BaseModel):
    """Everything tunable. Environment: `NATS_URL` and `OMOI_<FIELD>` (upper case)."""

    nats_url: str | None = None
    data_dir: Path = Path(".omoi")
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_cap_s: float = Field(default=60.0, ge=0)
    ack_wait_s: float = Field(default=30.0, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    fetch_poll_s: float = Field(default=1.0, gt=0)
    events_max_age_s: float = Field(default=7 * 24 * 3600, gt=0)
    max_ticket_bytes: int = Field(default=1024 * 1024, gt=0)
    default_workflow: str = "default"
    workflows_dir: Path | None = None
    replicas: int = Field(default=1, ge=1, le=5)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> Settings:
        values: dict[str, object] = {}
        if env.get("NATS_URL"):
            values["nats_url"] = env["NATS_URL"]
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if env.get(key):
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process parse these same settings."""
        env = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "nats_url":
                env["NATS_URL"] = str(value)
            else:
                env[ENV_PREFIX + name.upper()] = str(value)
        return env

    def topology(self) -> TopologyConfig:
        return TopologyConfig(
            replicas=self.replicas,
            ack_wait_s=self.ack_wait_s,
            events_max_age_s=self.events_max_age_s,
            # Long enough for the monitor to see an agent go stale before it vanishes.
            heartbeat_ttl_s=max(5 * self.heartbeat_interval_s, 1.0),
        )

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    def retry_delay(self, attempt: int, jitter: float) -> float:
        """Exponential backoff for retry number `attempt` (1-based); `jitter` in [0, 1)."""
        delay: float = min(self.retry_cap_s, self.retry_base_s * 2.0 ** max(attempt - 1, 0))
        return min(self.retry_cap_s, delay * (0.8 + 0.4 * jitter))

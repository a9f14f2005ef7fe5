"""What the monitor found out of the ordinary, with its evidence: the data of the
`anomaly.detected` and `anomaly.resolved` events (`omoi.events._agents.anomaly.*`)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas.common import WireModel


class AnomalyKind(StrEnum):
    # A worker's attempts of one phase and capability take far longer than their baseline.
    RUN_TIME = "run_time"
    # A worker's attempts fail far more often than the baseline's rate makes plausible.
    FAILURE_RATE = "failure_rate"
    # A worker's attempts cost far more than their baseline.
    COST = "cost"
    # A consumer's backlog grows sample after sample, faster than it ever did.
    QUEUE_GROWTH = "queue_growth"
    # An agent's heartbeats come far apart, though it is not (yet) stale.
    HEARTBEAT_GAP = "heartbeat_gap"
    # An attempt still running far longer than its phase's finished attempts take.
    RUNAWAY = "runaway"
    # A task waiting in the normal lane far longer than it should (the guardian raises
    # its ticket's priority).
    STARVED = "starved"


class Anomaly(WireModel):
    """One finding. `key` names what it is about, the same for as long as it lasts: the
    event id of its detection and of its resolution derive from it."""

    kind: AnomalyKind
    key: str
    summary: str
    phase: str | None = None
    capability: str | None = None
    agent: str | None = None
    consumer: str | None = None
    # The task (`<ticket>.<task>`), for a runaway attempt or a starved task.
    task: str | None = None
    # A starved task's priority, as its dispatch says.
    priority: str | None = None
    # What was seen, and what is usual: the baseline's median and its spread (MAD scaled
    # to a standard deviation), or for failure_rate the baseline's rate.
    observed: float
    baseline: float
    spread: float = 0.0
    # How far out it is (robust z-score, or -log10 of a binomial tail probability), and
    # the score that flags.
    score: float
    threshold: float
    samples: int = Field(ge=0)
    baseline_samples: int = Field(ge=0)
    window_s: float = Field(ge=0)
    # Attempts (`ticket.task#attempt`) or values behind it, newest first.
    evidence: list[str] = Field(default_factory=list)

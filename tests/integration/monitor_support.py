"""What the monitor's tests share: a store written the recorder's way from synthetic
attempts, and the workload's lanes and good workers."""

from __future__ import annotations

from collections.abc import Sequence

from agents.settings import Settings
from benchmarks.workloads import Attempt, Attempts, Lane
from store.writer import EventStore

LANES = (Lane("implementation", "shell", 2.0), Lane("testing", "shell", 6.0, failure_rate=0.05))
GOOD = ("w-good-1", "w-good-2")


class Store:
    def __init__(self, settings: Settings) -> None:
        self.writer = EventStore(settings.store_path, settings.published_dir).open()
        self.attempts = Attempts()

    def add(self, attempts: Sequence[Attempt]) -> None:
        self.writer.ingest([e for a in attempts for e in self.attempts.events(a)])
        self.writer.publish()

"""Memory: what each finished coding task taught, kept across tickets and found again.

A worker publishes a `MemoryRecord` as the data of a `memory.recorded` event when an agent
task succeeds; the recorder keeps it in its memory store. Before a coding agent starts,
its worker asks for the most similar past tasks (`omoi.memory.search`, a `MemoryQuery`,
answered with a `MemoryAnswer`) and puts them in the prompt.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.common import StrictWireModel, WireModel, utcnow


class MemoryRecord(WireModel):
    """One task's lesson: what it was asked, what it did, what went wrong and what fixed it."""

    id: str  # `<ticket>.<task>.g<generation>`: the same success recorded twice is one memory
    ticket_id: str
    task: str
    phase: str
    title: str = ""
    instructions: str = ""
    summary: str = ""
    files: list[str] = Field(default_factory=list)
    # The earlier attempts' errors ("category: message"), fixed by the attempt that succeeded.
    errors: list[str] = Field(default_factory=list)
    # A gate's feedback the task was made to address.
    feedback: str = ""
    at: datetime = Field(default_factory=utcnow)

    def text(self) -> str:
        """What search matches against."""
        return "\n".join(
            p
            for p in (
                self.title, self.instructions, self.summary, " ".join(self.files),
                *self.errors, self.feedback,
            )
            if p
        )  # fmt: skip


class MemoryQuery(StrictWireModel):
    text: str = Field(min_length=1, max_length=20_000)
    limit: int = Field(default=5, ge=1, le=50)
    # A ticket's own tasks are not "past work" for it.
    exclude_ticket: str | None = None


class MemoryHit(WireModel):
    memory: MemoryRecord
    score: float


class MemoryAnswer(WireModel):
    ok: bool = True
    hits: list[MemoryHit] = Field(default_factory=list)
    # What recurs among the hits: an error category that was fixed before, and how.
    playbook: list[str] = Field(default_factory=list)
    took_ms: float = 0.0
    # How the hits were ranked: by words alone ("bm25"), or by words and meaning fused
    # ("hybrid": the recorder embedded the query).
    ranked_by: str = "bm25"
    error: str | None = None


class ForgetMemory(StrictWireModel):
    id: str = Field(min_length=1, max_length=300)

"""Model usage and budgets: what an agent attempt spent, and what it may spend."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from schemas.common import StrictWireModel, WireModel


class Usage(WireModel):
    """Tokens, dollars and agent steps spent by one attempt (or summed over many)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    iterations: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def total(cls, spent: Iterable[Usage]) -> Usage:
        """What several attempts (or tasks) spent together."""
        out = cls()
        for usage in spent:
            out = out + usage
        return out

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 6),
            iterations=self.iterations + other.iterations,
        )


class Budget(StrictWireModel):
    """Limits for one task attempt or one whole ticket; None means no limit."""

    max_iterations: int | None = Field(default=None, ge=1, le=10_000)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)

    def remaining(self, spent: Usage) -> Budget:
        """What is left of this budget after `spent`."""
        return Budget.model_construct(
            max_iterations=None
            if self.max_iterations is None
            else self.max_iterations - spent.iterations,
            max_cost_usd=None if self.max_cost_usd is None else self.max_cost_usd - spent.cost_usd,
            max_tokens=None if self.max_tokens is None else self.max_tokens - spent.total_tokens,
        )

    def exhausted_by(self, spent: Usage) -> str | None:
        """Which limit `spent` reaches, as a message, or None."""
        if self.max_iterations is not None and spent.iterations >= self.max_iterations:
            return f"{spent.iterations} iterations reached the limit of {self.max_iterations}"
        if self.max_cost_usd is not None and spent.cost_usd >= self.max_cost_usd:
            return f"${spent.cost_usd:.4f} reached the limit of ${self.max_cost_usd:.4f}"
        if self.max_tokens is not None and spent.total_tokens >= self.max_tokens:
            return f"{spent.total_tokens} tokens reached the limit of {self.max_tokens}"
        return None

    def tightest(self, other: Budget | None) -> Budget:
        """The stricter of two budgets, limit by limit."""
        if other is None:
            return self

        def low[N: (int, float)](a: N | None, b: N | None) -> N | None:
            return b if a is None else a if b is None else min(a, b)

        return Budget.model_construct(
            max_iterations=low(self.max_iterations, other.max_iterations),
            max_cost_usd=low(self.max_cost_usd, other.max_cost_usd),
            max_tokens=low(self.max_tokens, other.max_tokens),
        )

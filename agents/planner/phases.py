"""The ticket phase state machine."""

from __future__ import annotations

from agents.errors import TransitionError
from schemas import WORK_PHASES, Phase

_NEXT: dict[Phase, Phase] = {
    Phase.REQUIREMENTS: Phase.DESIGN,
    Phase.DESIGN: Phase.IMPLEMENTATION,
    Phase.IMPLEMENTATION: Phase.TESTING,
    Phase.TESTING: Phase.DEPLOYMENT,
    Phase.DEPLOYMENT: Phase.DONE,
}

# Edges besides "forward to the next phase".
_EXTRA: dict[Phase, frozenset[Phase]] = {
    Phase.TESTING: frozenset({Phase.IMPLEMENTATION}),
}


def next_phase(phase: Phase) -> Phase:
    try:
        return _NEXT[phase]
    except KeyError:
        raise TransitionError(f"phase {phase.value!r} has no next phase") from None


def allowed_targets(current: Phase, blocked_from: Phase | None = None) -> frozenset[Phase]:
    if current is Phase.DONE:
        return frozenset()
    if current is Phase.BLOCKED:
        # Back into the phase it was blocked in, or on past it (overriding its gate).
        return frozenset({blocked_from, _NEXT[blocked_from]}) if blocked_from else frozenset()
    return frozenset({_NEXT[current], Phase.BLOCKED}) | _EXTRA.get(current, frozenset())


def check_transition(current: Phase, target: Phase, blocked_from: Phase | None = None) -> None:
    allowed = allowed_targets(current, blocked_from)
    if target not in allowed:
        options = ", ".join(sorted(p.value for p in allowed)) or "none"
        raise TransitionError(
            f"cannot move from {current.value} to {target.value} (allowed: {options})"
        )


def phase_index(phase: Phase) -> int:
    return WORK_PHASES.index(phase)

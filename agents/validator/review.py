"""The optional model review of a gate: does the work meet the acceptance criteria?"""

from __future__ import annotations

import logging
from pathlib import Path

from agents.llm.client import ModelClient, ModelError
from schemas.gate import CheckResult, GateRequest

log = logging.getLogger(__name__)

MARKER = "omoi:review"
MAX_FILE_CHARS = 3000
MAX_FILES = 8

SYSTEM = "You are a strict code reviewer at a phase gate. You judge evidence, not intentions."


def _evidence(repo: Path, results: list[CheckResult]) -> str:
    parts = []
    for r in results:
        parts.append(f"- {r.name}: {'passed' if r.passed else 'FAILED'} ({r.detail})")
    shown = 0
    for r in results:
        for rel in r.files:
            path = repo / rel
            if shown >= MAX_FILES or not path.is_file():
                continue
            text = path.read_text(errors="replace")[:MAX_FILE_CHARS]
            parts.append(f"\n### {rel}\n{text}")
            shown += 1
    return "\n".join(parts)


async def review(
    model: ModelClient, request: GateRequest, repo: Path, results: list[CheckResult]
) -> tuple[bool, str]:
    """(passed, review text). A model that cannot be reached does not block the gate."""
    criteria = "\n".join(f"- {c}" for c in request.acceptance) or "- (none given)"
    prompt = (
        f"{MARKER} phase={request.phase.value}\n"
        f"Ticket: {request.title}\n\n{request.description}\n\n"
        f"Acceptance criteria:\n{criteria}\n\nEvidence from the {request.phase.value} phase:\n"
        f"{_evidence(repo, results)}\n\n"
        "Answer with a first line 'VERDICT: PASS' or 'VERDICT: FAIL', then your reasons."
    )
    try:
        done = await model.complete(SYSTEM, prompt, max_tokens=1500)
    except ModelError as exc:
        log.warning("review of %s %s unavailable: %s", request.ticket_id, request.phase, exc)
        return True, f"(review unavailable: {exc})"
    text = done.text.strip()
    first = next((line for line in text.splitlines() if line.strip()), "")
    return "FAIL" not in first.upper(), text[:4000]

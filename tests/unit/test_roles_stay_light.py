"""Roles that never run a coding agent must not pay for the OpenHands SDK (or litellm)."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "agents.planner.agent",
    "agents.worker.agent",
    "agents.validator.agent",
    "agents.recorder.agent",
    "agents.monitor.agent",
    "gateway.app",
    "cli.app",
]


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_role_loads_neither_the_sdk_nor_litellm(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'openhands', 'litellm'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""

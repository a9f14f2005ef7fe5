"""Log lines: JSON for machines, text for people, both with the same context."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from agents.base import AgentLog
from agents.logs import JsonFormatter, TextFormatter
from agents.redact import RedactingFilter, Redactor
from bus.log_context import bind_log_fields, log_fields, logging_context


def _logger(formatter: logging.Formatter, name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_a_json_line_carries_the_agent_and_the_bound_context() -> None:
    logger, out = _logger(JsonFormatter(), "omoi.test.json")
    agent = AgentLog(logger, {"agent": "worker-1"})
    with logging_context(ticket="T-1", task="build", subject="omoi.tasks.implementation.shell"):
        agent.info("%s failed: %s", "T-1.build", "exit 3")
    agent.warning("after the block")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "T-1.build failed: exit 3"
    assert first["level"] == "info" and first["logger"] == "omoi.test.json"
    assert (first["agent"], first["ticket"], first["task"]) == ("worker-1", "T-1", "build")
    assert first["subject"] == "omoi.tasks.implementation.shell"
    assert first["ts"].endswith("+00:00")
    assert second["agent"] == "worker-1" and "ticket" not in second


def test_a_traceback_is_one_field_of_one_line() -> None:
    logger, out = _logger(JsonFormatter(), "omoi.test.exc")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("handler failed")
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and "RuntimeError: boom" in record["exc"]


def test_text_keeps_the_agent_prefix_and_adds_ids() -> None:
    logger, out = _logger(TextFormatter(), "omoi.test.text")
    with logging_context(ticket="T-2", task="test", subject="omoi.tasks.testing.shell"):
        AgentLog(logger, {"agent": "planner-1"}).info("started")
    line = out.getvalue().strip()
    assert line.endswith("omoi.test.text: [planner-1] started (ticket=T-2 task=test)")


def test_secrets_are_redacted_from_json_lines() -> None:
    logger, out = _logger(JsonFormatter(), "omoi.test.secret")
    secret = "sk-live-0123456789abcdef"
    logger.handlers[0].addFilter(RedactingFilter(Redactor([secret])))
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError:
        logger.exception("calling with %s", secret)
    assert secret not in out.getvalue()
    assert "[redacted]" in json.loads(out.getvalue())["message"]


async def test_each_asyncio_task_keeps_its_own_fields() -> None:
    seen: dict[str, dict[str, str]] = {}
    both = asyncio.Barrier(2)

    async def handle(ticket: str) -> None:
        bind_log_fields(ticket=ticket)
        await both.wait()
        seen[ticket] = dict(log_fields())

    await asyncio.gather(asyncio.create_task(handle("A")), asyncio.create_task(handle("B")))
    assert seen == {"A": {"ticket": "A"}, "B": {"ticket": "B"}}
    assert dict(log_fields()) == {}


def test_only_id_fields_can_be_bound() -> None:
    with pytest.raises(ValueError, match="payload"), logging_context(payload="x"):
        pass

"""The backstop: known secret values never leave a process in output, events or logs.

Tasks do not get secrets in their environment (agents/task_env.py), but a task can
still find one (a file it can read, another process's memory) and print it. Whatever
the worker or validator turns into a task's output tail, an event or a log line passes
through one `Redactor` first, built at the edge from the settings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Settings name the log format from agents.logs, which filters with this module.
    from agents.settings import Settings


REDACTED = "[redacted]"
# Shorter values would match ordinary text; no real key is this short.
MIN_SECRET_CHARS = 6
# A secret cut by a tail or a clip leaves a piece at the edge of the text; a piece this
# long is still worth hiding, a shorter one is noise.
MIN_PIECE_CHARS = 6


class Redactor:
    """Replaces every known secret value, and a piece of one at either end of a text
    (where truncating output may have cut it), with `[redacted]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len)[::-1]
        alternatives = "|".join(re.escape(s) for s in self.secrets)
        self._pattern = re.compile(alternatives) if self.secrets else None

    @classmethod
    def from_settings(cls, settings: Settings, extra: Iterable[str] = ()) -> Redactor:
        """Every secret the settings hold (the model key, each `*_FILE` secret), and
        `extra` values the caller knows of."""
        return cls([*settings.secret_values(), *extra])

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        value = self._pattern.sub(REDACTED, value)
        for secret in self.secrets:
            value = _cut_edges(value, secret)
        return value

    def data(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, strings) with every string redacted."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


def _cut_edges(text: str, secret: str) -> str:
    """Redact the secret's tail at the start of `text` and its head at the end."""
    for size in range(min(len(secret) - 1, len(text)), MIN_PIECE_CHARS - 1, -1):
        if text.startswith(secret[-size:]):
            text = REDACTED + text[size:]
            break
    for size in range(min(len(secret) - 1, len(text)), MIN_PIECE_CHARS - 1, -1):
        if text.endswith(secret[:size]):
            text = text[:-size] + REDACTED
            break
    return text


class RedactingFilter(logging.Filter):
    """Redacts a record's final text (message, arguments and traceback) in place."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


def install_log_redaction(redactor: Redactor, root: logging.Logger | None = None) -> None:
    """Filter every handler of the root logger: records from any logger end there, and
    a logger's own filters would not see its children's records."""
    if not redactor:
        return
    for handler in (root or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))

"""The environment task processes get: shell tasks, gate commands, the agent's terminal.

A task runs whatever its ticket asks for, so it gets an allow-list built from the
worker's (or validator's) own environment, not that environment itself: the worker's
holds the model key, its NATS address and every `OMOI_*` setting. docs/security.md
("Task environment") documents the list; keep the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.settings import Settings

# What a shell needs to behave like a login on this machine, and nothing that names a
# service or a credential.
ALLOWED = frozenset({"PATH", "HOME", "LANG", "TZ", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR"})
ALLOWED_PREFIXES = ("LC_",)
# Omoi's settings (the model key among them) and the NATS connection: never a task's
# business, not even when an operator opts a name in.
NEVER_PREFIXES = ("OMOI_", "NATS_")
# Names that usually hold a credential. Not part of the allow-list anyway; git's
# environment (which must keep proxies and the ssh agent) drops them by name.
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDS|CREDENTIAL|SEED", re.IGNORECASE)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def task_environment(base: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The part of `base` a task may see: the allow-list plus the names opted in with
    `settings.task_env_pass`, minus Omoi's and NATS's variables and any variable whose
    value is one of the settings' secrets (a key copied into OPENAI_API_KEY, say)."""
    known = {s for s in settings.secret_values() if s}
    wanted = set(settings.task_env_pass)
    return {
        name: value
        for name, value in base.items()
        if (name in ALLOWED or name.startswith(ALLOWED_PREFIXES) or name in wanted)
        and not name.startswith(NEVER_PREFIXES)
        and value not in known
    }


def scrubbed(base: Mapping[str, str]) -> dict[str, str]:
    """`base` without Omoi's, NATS's and credential-named variables.

    For Omoi's own git calls in a workspace: a task can make git run its code (hooks,
    filters and other commands in the copy's .git/config), so git gets no secrets
    either, but it keeps what fetching needs (proxies, SSH_AUTH_SOCK)."""
    return {
        name: value
        for name, value in base.items()
        if not name.startswith(NEVER_PREFIXES) and not SECRET_NAME.search(name)
    }

"""Secrets read from files: `OMOI_<NAME>_FILE` names a file holding `OMOI_<NAME>`.

A file keeps the secret out of process environments (and so out of `ps e` and
/proc/<pid>/environ). Docker and Kubernetes secrets are mounted this way.
"""

from __future__ import annotations

from pathlib import Path

from agents.errors import SettingsError
from bus.private_files import PrivateFileError, read_private

FILE_SUFFIX = "_FILE"


def read_secret_file(variable: str, path: Path) -> str:
    """The secret in `path` (named by environment variable `variable`), without its
    trailing newline. Refuses a file that others than its owner may read: a secret
    in it is not one any more, and quietly using it would hide that."""
    try:
        raw = read_private(path)
    except PrivateFileError as exc:
        raise SettingsError(f"{variable}: {exc}") from None
    try:
        value = raw.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}: {path} is not UTF-8 text") from None
    if not value:
        raise SettingsError(f"{variable}: {path} is empty")
    return value

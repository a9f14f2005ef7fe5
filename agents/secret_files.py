"""Secrets read from files: `OMOI_<NAME>_FILE` names a file holding `OMOI_<NAME>`.

A file keeps the secret out of process environments (and so out of `ps e` and
/proc/<pid>/environ). Docker and Kubernetes secrets are mounted this way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agents.errors import SettingsError

FILE_SUFFIX = "_FILE"


def read_secret_file(variable: str, path: Path) -> str:
    """The secret in `path` (named by environment variable `variable`), without its
    trailing newline. Refuses a file that others than its owner may read: a secret
    in it is not one any more, and quietly using it would hide that."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    # One open file for both the check and the read, so the file cannot be swapped
    # in between.
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SettingsError(f"{variable}: {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise SettingsError(
                f"{variable}: {path} may be read by others than its owner (mode {mode:04o}); "
                f"make it private with `chmod 600 {path}`"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            raw = handle.read()
    finally:
        os.close(fd)
    try:
        value = raw.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}: {path} is not UTF-8 text") from None
    if not value:
        raise SettingsError(f"{variable}: {path} is empty")
    return value

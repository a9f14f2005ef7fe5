"""Files only their owner may read: NATS seeds, secrets named by `*_FILE`, API tokens and
session keys. One rule for all of them: a file others may read is refused, not used (its
secret may have leaked already) and not silently fixed; and one way to write them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bus.errors import BusError


class PrivateFileError(BusError):
    """A private file that cannot be used as it is; the message names it and the fix."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def read_private(path: Path, *, max_bytes: int | None = None) -> bytes:
    """The file's bytes (at most `max_bytes` + 1, to tell an oversized one), refusing a
    file that is not regular or that others than its owner may read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        raise PrivateFileError(f"cannot read {path}: {exc.strerror}", missing=missing) from None
    # One open file for both the check and the read, so the file cannot be swapped between.
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PrivateFileError(f"{path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise PrivateFileError(
                f"{path} may be read by others than its owner (mode {mode:04o}); "
                f"make it private with `chmod 600 {path}`"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    finally:
        os.close(fd)


def write_private(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write atomically with mode 0600 (the directory 0700). Without `replace`, an existing
    file is kept and False returned: of two processes making one, both use the same."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # The umask cannot widen it, but an old temp file's mode could have: set it.
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # fails if it exists: never replaces
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True

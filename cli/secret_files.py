"""Secret files under `<data-dir>/auth/`: written 0600 (in a 0700 directory), refused when
anyone else may read them.

`omoi up` keeps the local admin's API token here, and the gateway its session key. A file
that others can read is not silently used (nor silently fixed): its secret may have leaked
already, so the error says to delete it (a new one is made) or to `chmod 600` it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

AUTH_DIR = "auth"
ADMIN_TOKEN_FILE = "gateway-admin.token"
SESSION_KEY_FILE = "gateway-session.key"


class SecretFileError(Exception):
    """A secret file that must not be used as it is; the message says what to do."""


def auth_path(data_dir: Path, name: str) -> Path:
    return data_dir / AUTH_DIR / name


def read_secret(path: Path) -> str | None:
    """The file's text, stripped; None when there is no file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretFileError(
            f"{path} may be read by others (mode {stat.S_IMODE(mode):04o}); its secret may "
            f"have leaked: delete it to get a new one, or `chmod 600 {path}` to keep it"
        )
    return path.read_text(encoding="utf-8").strip()


def write_secret(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write atomically with mode 0600 (the directory 0700). Without `replace`, an existing
    file is kept and False returned: of two processes making one, both use the same."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # The umask cannot widen it, but an old temp file's mode could have: set it.
        os.fchmod(fd, 0o600)
        os.write(fd, (text + "\n").encode())
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


def session_key(data_dir: Path) -> bytes:
    """The gateway's session key for this data dir, made on first use."""
    path = auth_path(data_dir, SESSION_KEY_FILE)
    text = read_secret(path)
    if not text:
        write_secret(path, secrets.token_hex(32), replace=False)
        text = read_secret(path) or ""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise SecretFileError(f"{path} is not a hex key: delete it to get a new one") from None

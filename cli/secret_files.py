"""Secret files under `<data-dir>/auth/`: written 0600 (in a 0700 directory), refused when
anyone else may read them.

`omoi up` keeps the local admin's API token here, and the gateway its session key. A file
that others can read is not silently used (nor silently fixed): its secret may have leaked
already, so the error says to delete it (a new one is made) or to `chmod 600` it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from bus.private_files import PrivateFileError, read_private, write_private

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
        return read_private(path).decode("utf-8").strip()
    except PrivateFileError as exc:
        if exc.missing:
            return None
        raise SecretFileError(f"{exc}; or delete it to get a new one") from None


def write_secret(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write `text` and a newline, privately (see `write_private`)."""
    return write_private(path, text + "\n", replace=replace)


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

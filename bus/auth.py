"""NATS identities: an nkey per role, kept in one directory, and the server block that
admits them with the permissions of `bus.permissions`.

An auth directory holds `<role>.nk` (the role's nkey seed, mode 0600; what `nats --nkey`
and nats.js's `nkeyAuthenticator` take) and `authorization.conf`, the block a
nats-server config includes. The seeds are the secrets; the server only ever sees the
public keys. `omoi up` makes one per data dir on first start; `omoi auth init DIR`
makes one for a cluster of your own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nkeys

from bus.errors import AuthError
from bus.permissions import (
    PERMISSIONS,
    RESPONSE_WINDOW,
    ROLES,
    SYSTEM_ACCOUNT,
    SYSTEM_ROLE,
    Permissions,
    inbox_prefix,
)
from bus.private_files import PrivateFileError, read_private, write_private

SERVER_BLOCK = "authorization.conf"
SEED_SUFFIX = ".nk"
# Seeds are small; anything bigger is not a seed file, and is not read whole.
_MAX_SEED_BYTES = 4096


class CredentialsError(AuthError):
    """A credentials file that cannot be used: missing, unreadable, malformed, or open
    to other users. The message names the file and how to fix it."""


@dataclass(frozen=True)
class Credentials:
    """One role's identity, loaded: what `Bus.connect` authenticates with."""

    role: str
    seed: str
    path: Path

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.role)

    def connect_options(self) -> dict[str, str]:
        """What `nats.connect` takes to authenticate as this identity."""
        return {"nkeys_seed_str": self.seed, "inbox_prefix": self.inbox_prefix}

    def __repr__(self) -> str:  # never the seed
        return f"Credentials(role={self.role!r}, path={str(self.path)!r})"


def load_credentials(path: Path, role: str | None = None) -> Credentials:
    """Read a seed file, refusing one other users could read. `role` defaults to the
    file's name (`worker.nk` is the worker's)."""
    role = role or path.name.removesuffix(SEED_SUFFIX)
    if role not in ROLES:
        raise CredentialsError(f"{path}: unknown role {role!r}; one of {', '.join(ROLES)}")
    try:
        raw = read_private(path, max_bytes=_MAX_SEED_BYTES)
    except PrivateFileError as exc:
        raise CredentialsError(f"credentials: {exc}") from None
    seed = raw.decode(errors="replace").strip()
    if len(raw) > _MAX_SEED_BYTES or not _is_user_seed(seed):
        raise CredentialsError(f"{path}: not an nkey user seed (it should start with 'SU')")
    return Credentials(role=role, seed=seed, path=path)


def _is_user_seed(seed: str) -> bool:
    if not seed.startswith("SU"):
        return False
    try:
        key = nkeys.from_seed(seed.encode()).public_key
    except (nkeys.NkeysError, ValueError):  # binascii.Error (bad base32) is a ValueError
        return False
    return bool(key)


def _public_key(seed: str) -> str:
    key: bytes = nkeys.from_seed(seed.encode()).public_key
    return key.decode()


class AuthDir:
    """The seeds of every role and the server block, in one directory (mode 0700)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def seed_file(self, role: str) -> Path:
        return self.path / f"{role}{SEED_SUFFIX}"

    @property
    def server_block(self) -> Path:
        return self.path / SERVER_BLOCK

    def exists(self) -> bool:
        return self.server_block.exists()

    def ensure(self, *, rotate: tuple[str, ...] = (), owner: int | None = None) -> AuthDir:
        """Create the seeds that are missing (existing ones are kept, so identities
        survive restarts), new ones for the roles in `rotate`, and rewrite the server
        block from the permission table. `owner`: the uid the files are given to (the
        containers' user), which needs root."""
        unknown = set(rotate) - set(ROLES)
        if unknown:
            raise CredentialsError(f"unknown role(s) {sorted(unknown)}; one of {', '.join(ROLES)}")
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        for role in ROLES:
            seed_file = self.seed_file(role)
            if role in rotate or not seed_file.exists():
                seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
                write_private(seed_file, seed + "\n")
        write_private(self.server_block, self.render())
        if owner is not None:
            for path in (self.path, self.server_block, *map(self.seed_file, ROLES)):
                os.chown(path, owner, -1)
        return self

    def credentials(self, role: str) -> Credentials:
        return load_credentials(self.seed_file(role), role)

    def public_keys(self) -> dict[str, str]:
        return {role: _public_key(self.credentials(role).seed) for role in ROLES}

    def render(self) -> str:
        """The nats-server block for these identities: Omoi's roles in the server's
        default account, and `system` in its system account, where every server of a
        cluster announces the connections it refused."""
        keys = self.public_keys()

        def users(roles: list[str], indent: str) -> str:
            return ",\n".join(_user_block(r, keys[r], PERMISSIONS[r], indent) for r in roles)

        omoi = [r for r in ROLES if r != SYSTEM_ROLE]
        return (
            "# Generated by Omoi from bus/permissions.py; regenerated on every start.\n"
            f"authorization {{\n  users: [\n{users(omoi, '    ')}\n  ]\n}}\n"
            f"accounts {{\n  {SYSTEM_ACCOUNT}: {{\n    users: [\n"
            f"{users([SYSTEM_ROLE], '      ')}\n    ]\n  }}\n}}\n"
            f"system_account: {SYSTEM_ACCOUNT}\n"
        )


def _user_block(role: str, public_key: str, perms: Permissions, indent: str) -> str:
    publish: dict[str, object] = {"allow": list(perms.publish)}
    if perms.deny_publish:
        publish["deny"] = list(perms.deny_publish)
    block: dict[str, object] = {"publish": publish, "subscribe": {"allow": list(perms.subscribe)}}
    if perms.responds:
        # Replies only to requests it received, never to arbitrary inboxes.
        block["allow_responses"] = {"max": 1, "expires": RESPONSE_WINDOW}
    # The server's config format accepts JSON values.
    entry = f"{{nkey: {public_key}, permissions: {json.dumps(block)}}}"
    return f"{indent}# {role}: {perms.notes}\n{indent}{entry}"

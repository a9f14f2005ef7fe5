"""API tokens, roles, rate-limit settings and secret files: the pure parts."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from cli.client import ClientError
from cli.secret_files import SecretFileError, read_secret, session_key, write_secret
from cli.tokens import parse_ttl
from gateway.auth import Principal, trusted
from gateway.config import ConfigError, options_from_env, parse_rate
from gateway.sessions import safe_next
from schemas.common import utcnow
from schemas.token import ROLE_ORDER, ApiToken, Role, mint, parse_token, token_hash


def test_a_token_is_its_public_id_and_a_secret_of_32_random_bytes() -> None:
    text, record = mint(Role.SUBMITTER, "ci", created_by="test")
    prefix, token_id, secret = text.split("_", 2)
    assert (prefix, token_id) == ("omoi", record.id)
    assert len(secret) == 43  # 32 bytes, URL-safe base64 without padding
    assert parse_token(text) == (record.id, secret)
    # Only a digest is stored, and it is of the whole token.
    assert record.hash == token_hash(text) and secret not in record.model_dump_json()
    assert record.matches(text)
    assert not record.matches(text[:-1] + ("A" if text[-1] != "A" else "B"))
    other, _ = mint(Role.SUBMITTER)
    assert other != text and parse_token(other) != parse_token(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "omoi_",
        "Bearer omoi_abcdefabcdef_" + "A" * 43,
        "omoi_ABCDEFABCDEF_" + "A" * 43,  # ids are lower case
        "omoi_abcdefabcde_" + "A" * 43,  # 11 characters
        "omoi_abcdefabcdef_" + "A" * 42,
        "omoi_abcdefabcdef_" + "A" * 42 + "=",
        "xomoi_abcdefabcdef_" + "A" * 43,
        "omoi_abcdefabcdef_" + "A" * 43 + "\n",
    ],
)
def test_malformed_tokens_are_not_parsed(text: str) -> None:
    assert parse_token(text) is None


def test_expiry_and_the_stored_record_round_trips() -> None:
    past = utcnow() - timedelta(hours=2)
    _, old = mint(Role.VIEWER, ttl_s=3600, now=past)
    assert old.expired()
    _, fresh = mint(Role.VIEWER, ttl_s=3600)
    assert not fresh.expired() and not mint(Role.VIEWER)[1].expired()
    assert ApiToken.model_validate_json(fresh.model_dump_json()) == fresh


def test_roles_are_ordered_and_only_operators_and_admins_are_trusted() -> None:
    assert [r.value for r in ROLE_ORDER] == ["viewer", "submitter", "operator", "admin"]
    assert Role.ADMIN.at_least(Role.OPERATOR) and Role.OPERATOR.at_least(Role.OPERATOR)
    assert not Role.SUBMITTER.at_least(Role.OPERATOR)
    assert {r: trusted(Principal("abcdefabcdef", r, "", "bearer")) for r in Role} == {
        Role.VIEWER: False,
        Role.SUBMITTER: False,
        Role.OPERATOR: True,
        Role.ADMIN: True,
    }
    assert not trusted(None)


def test_durations_and_rate_limits_parse() -> None:
    assert [parse_ttl(t) for t in ("90", "90s", "15m", "12h", "30d")] == [
        90, 90, 900, 43200, 2592000,
    ]  # fmt: skip
    for bad in ("", "0", "-5m", "12w", "soon"):
        with pytest.raises(ClientError):
            parse_ttl(bad)
    assert parse_rate("6000/minute") == ("minute", 6000)
    assert parse_rate("off") is None and parse_rate("0") is None
    for bad in ("fast", "10/week", "-1/second", "/minute"):
        with pytest.raises(ConfigError):
            parse_rate(bad)
    env = {"OMOI_GATEWAY_TOKEN_RATE_LIMIT": "50/second", "OMOI_GATEWAY_SECURE_COOKIES": "true"}
    options = options_from_env(env, session_key=b"k" * 32)
    assert options.token_rate_limit == ("second", 50)
    assert options.address_rate_limit == ("minute", 600)  # the default
    assert options.secure_cookies is True and options.session_key == b"k" * 32


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/tickets/T-1", "/tickets/T-1"),
        (None, "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("tickets", "/"),
    ],
)
def test_after_signing_in_only_a_path_on_this_site_is_followed(
    asked: str | None, goes_to: str
) -> None:
    assert safe_next(asked) == goes_to


def test_secret_files_are_private_and_others_readable_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "gateway-admin.token"
    assert read_secret(path) is None
    write_secret(path, "omoi_x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_secret(path) == "omoi_x"
    assert not write_secret(path, "other", replace=False)  # kept, never replaced
    assert read_secret(path) == "omoi_x"
    os.chmod(path, 0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        read_secret(path)


def test_the_session_key_is_made_once_per_data_dir(tmp_path: Path) -> None:
    first = session_key(tmp_path)
    assert len(first) == 32 and session_key(tmp_path) == first
    (tmp_path / "auth" / "gateway-session.key").write_text("not hex")
    with pytest.raises(SecretFileError, match="delete it"):
        session_key(tmp_path)

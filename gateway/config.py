"""The gateway's own settings from the environment, parsed once by `python -m gateway`.

- `OMOI_GATEWAY_TOKEN_RATE_LIMIT`: requests per token, `6000/minute` (the default);
  `N/second|minute|hour|day`, or `off`.
- `OMOI_GATEWAY_ADDRESS_RATE_LIMIT`: requests per client address without a valid token,
  `600/minute` by default.
- `OMOI_GATEWAY_SECURE_COOKIES`: `true`, `false`, or `auto` (the default: Secure when the
  request came over https).
- `OMOI_GATEWAY_SESSION_TTL_S`: how long a dashboard session lasts, 43200 (12 h).

The session key is `<data-dir>/auth/gateway-session.key`, made on first start: gateways
sharing a data dir (or that file) share sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, cast, get_args

from litestar.middleware.rate_limit import DurationUnit

from gateway.context import GatewayOptions, RateLimit

PREFIX = "OMOI_GATEWAY_"
UNITS: tuple[str, ...] = get_args(DurationUnit)


class ConfigError(ValueError):
    pass


def parse_rate(text: str) -> RateLimit | None:
    """`6000/minute` as ("minute", 6000); `off` (or `0`) as None."""
    value = text.strip().lower()
    if value in ("off", "0", "none"):
        return None
    count, _, unit = value.partition("/")
    if not count.isdigit() or int(count) < 1 or unit not in UNITS:
        raise ConfigError(f"not a rate limit: {text!r} (N/second|minute|hour|day, or off)")
    return cast(DurationUnit, unit), int(count)


def _secure(text: str) -> bool | None:
    value = text.strip().lower()
    if value in ("auto", ""):
        return None
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ConfigError(f"OMOI_GATEWAY_SECURE_COOKIES: true, false or auto, not {text!r}")


def options_from_env(env: Mapping[str, str], *, session_key: bytes) -> GatewayOptions:
    values: dict[str, Any] = {"session_key": session_key}
    parsers: dict[str, Callable[[str], Any]] = {
        "token_rate_limit": parse_rate,
        "address_rate_limit": parse_rate,
        "secure_cookies": _secure,
        "session_ttl_s": float,
    }
    names = {f.name for f in fields(GatewayOptions)}
    for name, parse in parsers.items():
        assert name in names
        raw = env.get(PREFIX + name.upper())
        if raw is not None:
            values[name] = parse(raw)
    return GatewayOptions(**values)

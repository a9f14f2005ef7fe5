"""`omoi token` as a user runs it (a subprocess), against a real server and a real gateway."""

from __future__ import annotations

import json

import httpx
import pytest

from agents.settings import Settings
from bus import Bus
from bus import constants as c
from gateway.app import create_app
from gateway.serve import serving
from schemas.token import ApiToken
from tests.helpers import wait_until
from tests.integration.test_audit import omoi
from tests.integration.test_gateway import assert_problem, bearer

pytestmark = pytest.mark.integration


async def test_create_list_revoke_from_the_cli(settings: Settings, bus: Bus) -> None:
    app = create_app(settings=settings, bus=bus)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        code, out, err = await omoi(settings, "token", "create", "--role", "operator",
                                    "--name", "deploy bot", "--ttl", "1h")  # fmt: skip
        assert code == 0, err
        token = out.strip()
        token_id = token.split("_")[1]
        assert out.count("\n") == 1 and token.startswith("omoi_")  # the token alone on stdout
        assert f"omoi token revoke {token_id}" in err  # how to get rid of it, on stderr
        # Stored hashed: the secret is nowhere in the bucket.
        record = await (await bus.bucket(c.TOKENS_BUCKET, ApiToken)).value(token_id)
        assert record is not None and record.role == "operator" and record.expires_at
        assert token.split("_", 2)[2] not in record.model_dump_json()

        # It works at once against the gateway, with its role.
        assert (await http.get("/api/v1/tickets", headers=bearer(token))).status_code == 200
        assert_problem(await http.get("/api/v1/tokens", headers=bearer(token)), 403)

        code, out, _ = await omoi(settings, "token", "list", "--json")
        listed = json.loads(out)
        assert code == 0 and [(t["id"], t["role"], t["name"]) for t in listed] == [
            (token_id, "operator", "deploy bot")
        ]
        assert "hash" not in listed[0] and token not in out
        code, out, _ = await omoi(settings, "token", "list")
        assert code == 0 and token_id in out and "deploy bot" in out

        code, out, err = await omoi(settings, "token", "revoke", token_id)
        assert code == 0, err
        assert f"revoked {token_id}" in out

        async def refused() -> bool:
            r = await http.get("/api/v1/tickets", headers=bearer(token))
            return r.status_code == 401

        await wait_until(refused, timeout=1.0, interval=0.02)
        code, _, err = await omoi(settings, "token", "revoke", token_id)
        assert code == 1 and "no token" in err
        code, _, err = await omoi(settings, "token", "create", "--role", "root")
        assert code == 2 and "root" in err
        code, _, err = await omoi(settings, "token", "create", "--role", "viewer", "--ttl", "soon")
        assert code == 2 and "not a duration" in err

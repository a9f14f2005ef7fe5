"""The Supabase Management API calls of the `supabase` tool (API v1): apply a migration,
read a table's columns. Shapes from Supabase's Management API reference ("Database":
list migrations, apply a migration, run a query), with a personal access token as bearer.

A migration is applied once by name: one already listed is answered as applied, so a
call made again changes nothing. A table's columns come from `information_schema`, its
names checked as identifiers before they are put in the query.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from agents.errors import AgentError

MIGRATION_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,99}$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


class SupabaseError(AgentError):
    """A Management API call failed; `status` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Supabase:
    def __init__(self, http: httpx.AsyncClient, api_url: str, project: str, token: str) -> None:
        self.http = http
        self.base = f"{api_url.rstrip('/')}/v1/projects/{project}/database"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    async def migrate(self, name: str, query: str) -> dict[str, Any]:
        if not MIGRATION_NAME.match(name):
            raise ValueError(f"a migration's name is snake_case: {name!r}")
        applied = await self._call("GET", "/migrations", expect=200)
        if any(m.get("name") == name for m in applied or []):
            return {"migration": name, "applied": False, "note": "applied before; left alone"}
        await self._call("POST", "/migrations", expect=200, json={"name": name, "query": query})
        return {"migration": name, "applied": True}

    async def table_schema(self, schema: str, table: str) -> dict[str, Any]:
        for name in (schema, table):
            if not IDENTIFIER.match(name):
                raise ValueError(f"not an identifier: {name!r}")
        query = (
            "select column_name, data_type, is_nullable, column_default "
            "from information_schema.columns "
            f"where table_schema = '{schema}' and table_name = '{table}' "
            "order by ordinal_position"
        )
        rows = await self._call("POST", "/query", expect=200, json={"query": query})
        if not rows:
            raise SupabaseError(f"no table {schema}.{table}", 404)
        return {"table": f"{schema}.{table}", "columns": rows}

    async def _call(self, method: str, path: str, *, expect: int, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(
                method, self.base + path, headers=self.headers, **kwargs
            )
        except httpx.HTTPError as exc:
            raise SupabaseError(f"Supabase did not answer {method} {path}: {exc!r}") from exc
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text[:300]
        if response.status_code not in (expect, 201):
            detail = body.get("message") if isinstance(body, dict) else body
            raise SupabaseError(
                f"{method} {path}: HTTP {response.status_code}: {str(detail)[:500]}",
                response.status_code,
            )
        return body

"""A local stand-in for the Supabase Management API calls the `supabase` tool makes, for tests.

Shapes from Supabase's Management API reference (v1): `GET /v1/projects/{ref}/database/migrations`
(the applied migrations, `[{"version", "name"}]`), `POST .../database/migrations` (`{"query",
"name"}`: runs and records it; 200 `{}`), `POST .../database/query` (`{"query"}`: 201 with the
rows as objects). A bearer personal access token. The database is a real DuckDB file whose
default schema is `public`, so migrations and `information_schema` reads are real SQL.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import duckdb

from tests.http_receivers import ThreadedReceiver, json_handler

TOKEN = "sbp_test-token-0123456789"
PROJECT = "abcdefghijklmnop"
_PATH = re.compile(r"^/v1/projects/(?P<ref>[a-z0-9]+)/database/(?P<what>migrations|query)$")


@dataclass
class FakeSupabase(ThreadedReceiver):
    database: Path
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    migrations: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.db = duckdb.connect(str(self.database))
        self.db.execute("create schema if not exists public; set schema = 'public'")
        self.serve(json_handler(self.answer))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.db.close()

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.db.execute(query).fetchall()

    def answer(self, method: str, path: str, auth: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.calls.append((method, path, body))
            if auth != f"Bearer {TOKEN}":
                return 401, {"message": "Unauthorized"}
            found = _PATH.match(path)
            if found is None or found["ref"] != PROJECT:
                return 404, {"message": "Project not found"}
            if found["what"] == "migrations" and method == "GET":
                return 200, list(self.migrations)
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                return 400, {"message": "query is required"}
            try:
                cursor = self.db.execute(body["query"])
                columns = [d[0] for d in cursor.description or []]
                rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
            except duckdb.Error as exc:
                return 400, {"message": f"Failed to run sql query: {exc}"}
            if found["what"] == "query":
                return 201, rows
            version = f"2026120700{len(self.migrations):04d}"
            self.migrations.append({"version": version, "name": str(body.get("name", ""))})
            return 200, {}

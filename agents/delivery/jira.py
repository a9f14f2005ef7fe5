"""The few Jira Cloud REST calls Omoi makes (API v3): read an issue, comment on it, move it
to a status. Shapes from Atlassian's REST reference ("Issue comments": get comments, add
comment; "Issues": get issue, get transitions, transition issue). Comments are Atlassian Document
Format; each carries a marker naming the Omoi event it reports, so a redelivered event
finds its comment made and adds none.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import httpx

from agents.errors import AgentError

log = logging.getLogger(__name__)


class JiraError(AgentError):
    """A Jira call failed; `status` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def marker(event_id: str) -> str:
    return f"[omoi:{event_id}]"


def document(text: str) -> dict[str, Any]:
    """A plain text as an ADF document: a paragraph a line."""
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": line}]}
            for line in text.splitlines()
            if line.strip()
        ],
    }


def plain(node: Any) -> str:
    """An ADF document's text (a paragraph a line); a string stays as it is."""
    if isinstance(node, str) or node is None:
        return node or ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    parts = [plain(child) for child in node.get("content") or []]
    joiner = "\n" if node.get("type") in ("doc", "bulletList", "orderedList") else ""
    return joiner.join(parts)


class Jira:
    def __init__(self, http: httpx.AsyncClient, base_url: str, email: str, token: str) -> None:
        self.http = http
        self.base = base_url.rstrip("/") + "/rest/api/3"
        basic = base64.b64encode(f"{email}:{token}".encode()).decode()
        self.headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}

    async def comment_once(self, key: str, text: str, event_id: str) -> bool:
        """Add `text` as a comment unless the event's comment is there; whether it added."""
        tag = marker(event_id)
        status, body = await self._call("GET", f"/issue/{key}/comment", params={"maxResults": 100})
        if status != 200:
            raise JiraError(f"reading {key}'s comments failed: {_message(status, body)}", status)
        if any(tag in json.dumps(c.get("body")) for c in body.get("comments", [])):
            return False
        status, body = await self._call(
            "POST", f"/issue/{key}/comment", json={"body": document(f"{text}\n{tag}")}
        )
        if status != 201:
            raise JiraError(f"commenting on {key} failed: {_message(status, body)}", status)
        return True

    async def read(self, key: str) -> dict[str, Any]:
        """The issue as the `jira` tool shows it: summary, status, description, comments."""
        status, body = await self._call(
            "GET", f"/issue/{key}", params={"fields": "summary,status,description,comment"}
        )
        if status != 200:
            raise JiraError(f"reading {key} failed: {_message(status, body)}", status)
        fields = body.get("fields") or {}
        comments = (fields.get("comment") or {}).get("comments", [])
        return {
            "key": body.get("key", key),
            "summary": fields.get("summary"),
            "status": (fields.get("status") or {}).get("name"),
            "description": plain(fields.get("description")),
            "comments": [plain(c.get("body")) for c in comments],
        }

    async def move_to(self, key: str, status_name: str) -> bool:
        """Transition the issue to the status named so (case-insensitive); False when no
        transition of the issue's workflow leads there from where it is."""
        status, body = await self._call("GET", f"/issue/{key}/transitions")
        if status != 200:
            raise JiraError(f"reading {key}'s transitions failed: {_message(status, body)}", status)
        wanted = status_name.casefold()
        for transition in body.get("transitions", []):
            to = (transition.get("to") or {}).get("name", "")
            if wanted in (to.casefold(), str(transition.get("name", "")).casefold()):
                status, answer = await self._call(
                    "POST",
                    f"/issue/{key}/transitions",
                    json={"transition": {"id": transition["id"]}},
                )
                if status != 204:
                    raise JiraError(f"moving {key} failed: {_message(status, answer)}", status)
                return True
        log.info("%s: no transition to %r from where it is", key, status_name)
        return False

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            response = await self.http.request(
                method, self.base + path, headers=self.headers, **kwargs
            )
        except httpx.HTTPError as exc:
            raise JiraError(f"Jira did not answer {method} {path}: {exc!r}") from exc
        if not response.content:
            return response.status_code, {}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"errorMessages": [response.text[:300]]}


def _message(status: int, body: Any) -> str:
    errors = body.get("errorMessages") if isinstance(body, dict) else None
    return f"HTTP {status}: {'; '.join(map(str, errors or [])) or str(body)[:300]}"

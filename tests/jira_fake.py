"""A local stand-in for the Jira Cloud REST v3 endpoints Omoi calls, for tests.

Shapes from Atlassian's REST reference: `GET /rest/api/3/issue/{key}` (its `fields`:
summary, status, description as an Atlassian Document, comment); `GET/POST
/rest/api/3/issue/{key}/comment` (comments whose `body` is an Atlassian Document; 201 on
add); `GET/POST /rest/api/3/issue/{key}/transitions` (`{"transitions": [{"id", "name",
"to": {"name"}}]}`; 204 on a transition). Basic auth with an email and an API token.
Every request is recorded so tests assert on what Omoi sent; issues move through a small workflow.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Self

from tests.http_receivers import ThreadedReceiver, json_handler

EMAIL, TOKEN = "omoi@example.com", "jira-api-token-0123456789"
AUTH = "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
WORKFLOW = {"To Do": ["In Progress"], "Ready for Omoi": ["In Progress"],
            "In Progress": ["Done"], "Done": []}  # fmt: skip
IDS = {"In Progress": "21", "Done": "31"}
_PATH = re.compile(
    r"^/rest/api/3/issue/(?P<key>[A-Z][A-Z0-9_]*-\d+)(?:/(?P<what>comment|transitions))?$"
)


@dataclass
class Call:
    method: str
    path: str
    body: Any


@dataclass
class FakeJira(ThreadedReceiver):
    status: dict[str, str] = field(default_factory=dict)  # issue key -> status name
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)  # issue key -> summary
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.serve(json_handler(self.answer))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def texts(self, key: str) -> list[str]:
        with self.lock:
            return [json.dumps(c["body"]) for c in self.comments.get(key, [])]

    def answer(self, method: str, path: str, auth: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.calls.append(Call(method, path, body))
            if auth != AUTH:
                return 401, {"errorMessages": ["You are not authenticated."]}
            found = _PATH.match(path)
            if found is None or found["key"] not in self.status:
                return 404, {
                    "errorMessages": [
                        "Issue does not exist or you do not have permission to see it."
                    ]
                }
            key = found["key"]
            if found["what"] is None:
                return 200, self._issue(key)
            if found["what"] == "comment":
                if method == "GET":
                    listed = self.comments.get(key, [])
                    return 200, {"comments": listed, "total": len(listed), "startAt": 0}
                comment = {"id": str(len(self.comments.get(key, [])) + 10000), "body": body["body"]}
                self.comments.setdefault(key, []).append(comment)
                return 201, comment
            if method == "GET":
                names = WORKFLOW[self.status[key]]
                return 200, {
                    "transitions": [{"id": IDS[n], "name": n, "to": {"name": n}} for n in names]
                }
            wanted = body["transition"]["id"]
            target = next((n for n in WORKFLOW[self.status[key]] if IDS[n] == wanted), None)
            if target is None:
                return 400, {"errorMessages": ["Transition id is not valid"]}
            self.status[key] = target
            return 204, None

    def _issue(self, key: str) -> dict[str, Any]:
        text = {"type": "text", "text": f"What {key} asks for."}
        description = {"type": "doc", "version": 1,
                       "content": [{"type": "paragraph", "content": [text]}]}  # fmt: skip
        listed = self.comments.get(key, [])
        return {
            "key": key,
            "fields": {
                "summary": self.summaries.get(key, key),
                "status": {"name": self.status[key]},
                "description": description,
                "comment": {"comments": listed, "total": len(listed)},
            },
        }

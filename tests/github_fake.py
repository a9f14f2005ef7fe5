"""A local stand-in for the few GitHub REST endpoints Omoi calls, for tests.

Shapes from GitHub's REST reference (API version 2022-11-28): "List pull requests"
(`GET /repos/{owner}/{repo}/pulls`, filtered by `head=owner:branch` and `state`) and
"Create a pull request" (`POST /repos/{owner}/{repo}/pulls`: 201 with the pull request;
422 "Validation Failed" when one is already open from that head); "Get a repository"
(`GET /repos/{owner}/{repo}`); "Get an issue", "List issue comments", "Create an issue
comment" (`/repos/{owner}/{repo}/issues/{number}[/comments]`, 201 on create); "List
review comments on a pull request" (`GET /repos/{owner}/{repo}/pulls/{number}/comments`).
Every request is recorded, so tests assert on what Omoi sent; `fail_next` answers the next
calls with an error status instead.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.http_receivers import QuietHandler, ThreadedReceiver

TOKEN = "ghp_test-token-0123456789"
_REPO = r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_PULLS = re.compile(_REPO + "/pulls$")
_REPOSITORY = re.compile(_REPO + "$")
_ISSUE = re.compile(_REPO + r"/issues/(?P<number>\d+)$")
_COMMENTS = re.compile(_REPO + r"/(?P<kind>issues|pulls)/(?P<number>\d+)/comments$")


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub(ThreadedReceiver):
    calls: list[Call] = field(default_factory=list)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    # "owner/repo#number" -> an issue; its comments; a pull request's review comments.
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    review_comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.serve(_handler(self))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, call: Call) -> tuple[int, Any]:
        with self.lock:
            self.calls.append(call)
            if call.headers.get("authorization") != f"Bearer {TOKEN}":
                return 401, {"message": "Bad credentials"}
            if self.fail_next:
                return self.fail_next.pop(0), {"message": "Server Error"}
            found = _PULLS.match(call.path)
            if found is None:
                return self._read_or_comment(call)
            repo = f"{found['owner']}/{found['repo']}"
            if call.method == "GET":
                return 200, self._listed(repo, call.query)
            if call.method == "POST":
                return self._created(repo, found["owner"], call.body)
            return 405, {"message": "Method Not Allowed"}

    def _read_or_comment(self, call: Call) -> tuple[int, Any]:
        if (found := _REPOSITORY.match(call.path)) and call.method == "GET":
            repo = f"{found['owner']}/{found['repo']}"
            return 200, {"full_name": repo, "default_branch": "main"}
        if (found := _ISSUE.match(call.path)) and call.method == "GET":
            issue = self.issues.get(f"{found['owner']}/{found['repo']}#{found['number']}")
            return (200, issue) if issue else (404, {"message": "Not Found"})
        found = _COMMENTS.match(call.path)
        if found is None:
            return 404, {"message": "Not Found"}
        key = f"{found['owner']}/{found['repo']}#{found['number']}"
        if found["kind"] == "pulls":
            return 200, self.review_comments.get(key, [])
        if call.method == "GET":
            return 200, self.comments.get(key, [])
        if not isinstance(call.body, dict) or not call.body.get("body"):
            return 422, {"message": "Validation Failed", "errors": [{"code": "missing_field"}]}
        listed = self.comments.setdefault(key, [])
        number = len(listed) + 1
        url = f"https://github.test/{found['owner']}/{found['repo']}/issues/{found['number']}"
        comment = {"id": number, "body": call.body["body"], "user": {"login": "omoi[bot]"},
                   "html_url": f"{url}#issuecomment-{number}"}  # fmt: skip
        listed.append(comment)
        return 201, comment

    def _listed(self, repo: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        head = query.get("head", [""])[0]
        state = query.get("state", ["open"])[0]
        return [
            p
            for p in self.pulls
            if p["_repo"] == repo
            and (not head or head == f"{p['_owner']}:{p['head']['ref']}")
            and state in ("all", p["state"])
        ]

    def _created(self, repo: str, owner: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not all(k in body for k in ("title", "head", "base")):
            return 422, {"message": "Validation Failed", "errors": [{"code": "missing_field"}]}
        if any(
            p["_repo"] == repo and p["head"]["ref"] == body["head"] and p["state"] == "open"
            for p in self.pulls
        ):
            message = f"A pull request already exists for {owner}:{body['head']}."
            return 422, {"message": "Validation Failed", "errors": [{"message": message}]}
        number = len(self.pulls) + 1
        pull = {
            "_repo": repo,
            "_owner": owner,
            "number": number,
            "state": "open",
            "html_url": f"https://github.test/{repo}/pull/{number}",
            "title": body["title"],
            "body": body.get("body") or "",
            "head": {"ref": body["head"]},
            "base": {"ref": body["base"]},
            "merged": False,
        }
        self.pulls.append(pull)
        return 201, pull

    def requests(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]


def _handler(fake: FakeGitHub) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = fake.answer(
                Call(self.command, url.path, parse_qs(url.query), headers, body)
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

    return Handler

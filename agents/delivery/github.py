"""The few GitHub REST calls Omoi makes: find a branch's open pull request, open one; for
the `github` tool, read an issue and its comments, comment, read a pull request's review
comments.

Shapes from GitHub's REST reference ("Pulls": list pull requests, create a pull
request, list review comments; "Issues": get an issue, list and create issue comments;
API version 2022-11-28). The client is given its HTTP session, base URL and
token; a call that fails says why in a `GitHubError` (the status and GitHub's message),
after a few tries when the failure may pass (a 5xx, a 429, no connection).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from agents.errors import AgentError
from schemas.delivery import PullRequest

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
TRIES = 3
BACKOFF_S = 0.5


class GitHubError(AgentError):
    """A GitHub API call failed; `status` is its HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GitHub:
    def __init__(self, http: httpx.AsyncClient, api_url: str, token: str | None) -> None:
        self.http = http
        self.api_url = api_url.rstrip("/")
        self.headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    async def open_pull_request(self, repo: str, pull: dict[str, str]) -> PullRequest:
        """The open pull request from `pull["head"]`, made if there is none (so asking
        twice opens one). `pull`: title, head, base, body."""
        found = await self.find_open(repo, pull["head"])
        if found is not None:
            return found
        status, body = await self._call("POST", f"/repos/{repo}/pulls", json=pull)
        if status == 422 and "already exists" in str(body).lower():
            # Made by an earlier attempt between our look and this call.
            if (found := await self.find_open(repo, pull["head"])) is not None:
                return found
        if status != 201:
            raise GitHubError(f"opening the pull request failed: {_message(status, body)}", status)
        return _pull(body)

    async def find_open(self, repo: str, branch: str) -> PullRequest | None:
        owner = repo.split("/", 1)[0]
        status, body = await self._call(
            "GET", f"/repos/{repo}/pulls", params={"head": f"{owner}:{branch}", "state": "open"}
        )
        if status != 200 or not isinstance(body, list):
            raise GitHubError(f"listing pull requests failed: {_message(status, body)}", status)
        return _pull(body[0]) if body else None

    async def get(self, path: str, **params: Any) -> Any:
        """A GET's JSON answer (the integration tools' reads); GitHubError unless 200."""
        status, body = await self._call("GET", path, params=params or None)
        if status != 200:
            raise GitHubError(f"GET {path} failed: {_message(status, body)}", status)
        return body

    async def comment_once(self, repo: str, number: int, text: str, tag: str) -> str:
        """Comment on an issue or pull request unless a comment carrying `tag` is there
        (a call made again adds none); the comment's URL."""
        path = f"/repos/{repo}/issues/{number}/comments"
        for comment in await self.get(path, per_page=100):
            if tag in str(comment.get("body", "")):
                return str(comment.get("html_url", ""))
        status, body = await self._call("POST", path, json={"body": f"{text}\n\n{tag}"})
        if status != 201:
            raise GitHubError(f"commenting on #{number} failed: {_message(status, body)}", status)
        return str(body.get("html_url", ""))

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        for attempt in range(1, TRIES + 1):
            try:
                response = await self.http.request(
                    method, self.api_url + path, headers=self.headers, **kwargs
                )
            except httpx.HTTPError as exc:
                if attempt == TRIES:
                    raise GitHubError(f"GitHub did not answer {method} {path}: {exc!r}") from exc
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response.status_code, _json(response)
                if attempt == TRIES:
                    return response.status_code, _json(response)
            log.info("GitHub %s %s: trying again (%d of %d)", method, path, attempt + 1, TRIES)
            await asyncio.sleep(BACKOFF_S * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def _message(status: int, body: Any) -> str:
    detail = body.get("message") if isinstance(body, dict) else body
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        detail = f"{detail} ({errors})"
    return f"HTTP {status}: {str(detail)[:500]}"


def _pull(body: Any) -> PullRequest:
    try:
        return PullRequest(number=int(body["number"]), url=str(body["html_url"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise GitHubError(f"GitHub answered with no pull request: {str(body)[:300]}") from exc

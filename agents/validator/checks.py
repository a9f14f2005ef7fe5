"""Gate checks. Only committed work counts as evidence, so they run in a fresh clone."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.errors import AgentError
from agents.spans import mark_failed, work_span
from schemas.gate import CheckKind, CheckResult, CheckSpec, GateSpec

log = logging.getLogger(__name__)

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
OUTPUT_TAIL_BYTES = 8 * 1024
DIFF_TAIL_CHARS = 4 * 1024
MAX_HASHED_FILES = 50
MAX_LISTED = 10
KILL_GRACE_S = 1.0
FEEDBACK_LINES = 40
FEEDBACK_CHARS = 6 * 1024
_GIT_ENV = dict(
    GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0", LC_ALL="C"
)
_GIT_IDENT = ("-c", "user.name=omoi", "-c", "user.email=omoi@localhost", "-c", "color.ui=false")


class GateError(AgentError):
    """A gate could not be evaluated: the workspace could not be copied, git failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _git(args: Sequence[str], *, cwd: Path, home: Path, timeout: float = 600.0) -> str:
    # No system/global/XDG config, no inherited GIT_DIR, no prompt to hang a headless agent,
    # and the C locale because the diff check reads git's "N files changed" summary.
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), **_GIT_ENV}
    cmd = ["git", *_GIT_IDENT, *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GateError(f"git {args[0]} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise GateError(f"cannot run git {args[0]}: {exc}") from exc
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()[-2000:] or "(no output)"
        raise GateError(f"git {' '.join(args)} failed with exit code {proc.returncode}: {stderr}")
    return proc.stdout.decode(errors="replace")


def _check_rev(rev: str) -> None:
    # Anything starting with '-' would be parsed by git as an option.
    if not rev or rev.startswith("-"):
        raise GateError(f"invalid commit {rev!r}")


def clean_copy(workspace: Path, dest: Path, commit: str | None = None) -> str:
    """Clone the workspace's committed state (a repository, or a bundle of one) into
    `dest`, at `commit` if given; return the commit checked out."""
    home = dest.parent
    home.mkdir(parents=True, exist_ok=True)
    if commit is not None:
        _check_rev(commit)
    source, target = str(workspace.absolute()), str(dest.absolute())
    _git(["clone", "--no-hardlinks", "--quiet", "--", source, target], cwd=home, home=home)
    if commit is not None:
        try:
            _git(["cat-file", "-e", f"{commit}^{{commit}}"], cwd=dest, home=home)
        except GateError:
            raise GateError(f"commit {commit} is not in the workspace") from None
        _git(["checkout", "--quiet", "--detach", commit], cwd=dest, home=home)
    return _git(["rev-parse", "HEAD"], cwd=dest, home=home).strip()


async def run_checks(
    spec: GateSpec, repo: Path, *, base_commit: str | None, env: Mapping[str, str]
) -> list[CheckResult]:
    """Run every check in order, also after a failure, so a fixer sees all problems at once."""
    results: list[CheckResult] = []
    for check in spec.checks:
        started = time.monotonic()
        with work_span(
            "check", attributes={"omoi.check": check.label, "omoi.check_kind": check.kind.value}
        ) as span:
            try:
                result = await _run_one(check, repo, base_commit, env)
            except (OSError, GateError) as exc:
                result = _result(check, False, getattr(exc, "message", None) or str(exc))
            if not result.passed:
                mark_failed(span, "the check failed")
        result.duration_s = round(time.monotonic() - started, 3)
        outcome = "passed" if result.passed else "failed"
        log.info("check %r %s: %s", result.name, outcome, result.detail)
        results.append(result)
    return results


async def _run_one(
    check: CheckSpec, repo: Path, base_commit: str | None, env: Mapping[str, str]
) -> CheckResult:
    if check.kind is CheckKind.DIFF:
        return await _diff(check, repo, base_commit)
    if check.kind is CheckKind.COMMAND:
        return await _command(check, repo, env)
    # Hashing may read large files; keep the event loop (and heartbeats) responsive.
    fs_check = {CheckKind.FILE: _file, CheckKind.GLOB: _glob, CheckKind.ARTIFACT: _artifact}
    return await asyncio.to_thread(fs_check[check.kind], check, repo)


def verdict_passed(results: Sequence[CheckResult]) -> bool:
    return all(r.passed for r in results)


def feedback(results: Sequence[CheckResult], review: str | None = None) -> str:
    """A compact summary for whoever fixes the phase; empty when there is nothing to fix."""
    failed = [r for r in results if not r.passed]
    sections: list[str] = []
    if failed:
        heads = [f"- {r.name} ({r.kind}): {_clip(r.detail, 500)}" for r in failed]
        with_output = [r for r in failed if r.kind == CheckKind.COMMAND and r.output_tail.strip()]
        # Share the output budget, so one chatty command cannot crowd out the other failures;
        # the slack covers the header and the per-entry "\n    …" markers.
        room = FEEDBACK_CHARS - 64 - sum(len(h) + 8 for h in heads)
        share = room // max(1, len(with_output))
        entries = []
        for head, r in zip(heads, failed, strict=True):
            if r in with_output and share >= 200:
                lines = r.output_tail.rstrip().splitlines()[-FEEDBACK_LINES:]
                tail = "\n".join("    " + line for line in lines)
                if len(tail) > share:
                    tail = "    …" + tail[-share:]
                head = f"{head}\n{tail}"
            entries.append(head)
        sections.append(_clip("Failed checks:\n" + "\n".join(entries), FEEDBACK_CHARS))
    if review and review.strip():
        sections.append("Review:\n" + _clip(review.strip(), FEEDBACK_CHARS))
    return "\n\n".join(sections)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _result(check: CheckSpec, passed: bool, detail: str, **extra: Any) -> CheckResult:
    return CheckResult(name=check.label, kind=check.kind, passed=passed, detail=detail, **extra)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _inside(root: Path, path: Path) -> bool:
    """Whether `path` (symlinks followed) lies in the work tree rooted at resolved `root`."""
    target = path.resolve()
    return target.is_relative_to(root) and target.relative_to(root).parts[:1] != (".git",)


def _file(check: CheckSpec, repo: Path) -> CheckResult:
    rel = Path(check.path or "").as_posix()
    target = repo / rel
    if not target.exists():
        return _result(check, False, f"{rel} does not exist")
    if not _inside(repo.resolve(), target):
        return _result(check, False, f"{rel} lies outside the repository's work tree")
    if not target.is_file():
        return _result(check, False, f"{rel} is not a regular file")
    size = target.stat().st_size
    files = {rel: _sha256(target)}
    if size < check.min_bytes:
        detail = f"{rel} has {size} bytes, expected at least {check.min_bytes}"
        return _result(check, False, detail, files=files)
    detail = f"{rel} exists ({_size(size)})"
    if check.contains is not None:
        text = target.read_text(encoding="utf-8", errors="replace")
        if not re.search(check.contains, text, re.I | re.M):
            return _result(check, False, f"{rel} does not match /{check.contains}/", files=files)
        detail += f" and matches /{check.contains}/"
    return _result(check, True, detail, files=files)


def _matches(repo: Path, pattern: str) -> list[Path]:
    root = repo.resolve()
    found = (p for p in repo.glob(pattern) if p.relative_to(repo).parts[:1] != (".git",))
    return sorted(p for p in found if p.is_file() and _inside(root, p))


def _hashes(repo: Path, paths: Sequence[Path]) -> dict[str, str]:
    return {p.relative_to(repo).as_posix(): _sha256(p) for p in paths[:MAX_HASHED_FILES]}


def _glob(check: CheckSpec, repo: Path) -> CheckResult:
    pattern = check.path or ""
    found = _matches(repo, pattern)
    if not found:
        return _result(check, False, f"no files match {pattern}")
    noun = "file matches" if len(found) == 1 else "files match"
    return _result(check, True, f"{len(found)} {noun} {pattern}", files=_hashes(repo, found))


def _artifact(check: CheckSpec, repo: Path) -> CheckResult:
    pattern = check.path or ""
    sized = [(p, p.stat().st_size) for p in _matches(repo, pattern)]
    if not sized:
        return _result(check, False, f"no artifacts match {pattern}")
    good = [(p, s) for p, s in sized if s >= check.min_bytes]
    if not good:
        detail = f"no artifact matching {pattern} has at least {check.min_bytes} bytes: "
        return _result(check, False, detail + _listing(repo, sized))
    files = _hashes(repo, [p for p, _ in good])
    noun = "artifact" if len(good) == 1 else "artifacts"
    return _result(check, True, f"{len(good)} {noun}: {_listing(repo, good)}", files=files)


def _listing(repo: Path, sized: Sequence[tuple[Path, int]]) -> str:
    shown = [f"{p.relative_to(repo).as_posix()} ({_size(s)})" for p, s in sized]
    more = f" and {len(shown) - MAX_LISTED} more" if len(shown) > MAX_LISTED else ""
    return ", ".join(shown[:MAX_LISTED]) + more


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


async def _diff(check: CheckSpec, repo: Path, base: str | None) -> CheckResult:
    def git(*args: str) -> Awaitable[str]:
        return asyncio.to_thread(_git, args, cwd=repo, home=repo.parent, timeout=check.timeout_s)

    if base is None:
        roots = (await git("rev-list", "--max-parents=0", "HEAD")).split()
        head = (await git("rev-parse", "HEAD")).strip()
        # The oldest root is listed last; a lone root commit is compared with nothing.
        base = EMPTY_TREE if head in roots else roots[-1]
    _check_rev(base)
    stat = (await git("diff", "--stat=200", base, "HEAD", "--")).strip()
    since = "the empty tree" if base == EMPTY_TREE else base[:12]
    if not stat:
        return _result(check, False, f"no changes since {since}")
    summary = stat.splitlines()[-1].strip()
    return _result(check, True, f"{summary} since {since}", output_tail=stat[-DIFF_TAIL_CHARS:])


async def _command(check: CheckSpec, repo: Path, env: Mapping[str, str]) -> CheckResult:
    tmp = Path(tempfile.mkdtemp(prefix=".omoi-tmp-", dir=repo.parent))
    # Output goes to an unlinked file rather than a pipe: on Python 3.12 a pipe held open by
    # a leftover background process would keep proc.wait() from returning. It sits outside
    # TMPDIR so the command cannot delete it.
    with tempfile.TemporaryFile(dir=repo.parent) as out:
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                check.command or "",
                cwd=repo,
                env={**env, "TMPDIR": str(tmp)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                async with asyncio.timeout(check.timeout_s):
                    code: int | None = await proc.wait()
            except TimeoutError:
                code = None
            finally:
                # Also after a normal exit: background leftovers must not outlive the check.
                await _kill_group(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out.seek(max(0, out.seek(0, os.SEEK_END) - OUTPUT_TAIL_BYTES))
        tail = out.read().decode(errors="replace")
    if code is None:
        return _result(check, False, f"timed out after {check.timeout_s:g}s", output_tail=tail)
    return _result(check, code == 0, f"exit code {code}", exit_code=code, output_tail=tail)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after a grace, and reap
    the shell while the event loop still runs (an unobserved exit leaks its transport)."""
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)
    finally:
        # Also when cancelled during the grace period, so nothing survives a cancel.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

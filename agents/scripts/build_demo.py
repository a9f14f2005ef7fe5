"""Regenerate demo.json (the scripted model's offline demo): python -m agents.scripts.build_demo"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WS = "${workspace}"


def term(command: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "terminal", "arguments": {"command": command}}]}


def create(path: str, text: str) -> dict[str, Any]:
    args = {"command": "create", "path": f"{WS}/{path}", "file_text": text}
    return {"tool_calls": [{"name": "file_editor", "arguments": args}]}


def finish(message: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "finish", "arguments": {"message": message}}]}


def task(name: str, *turns: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "match": rf"task {name}\.\nWorkspace: (?P<workspace>/\S+)",
        "turns": list(turns),
    }


REQUIREMENTS = """# Requirements: slugify

textkit.slugify(text) turns any title into a URL slug.

## Acceptance criteria
- slugify("Hello, World!") == "hello-world"
- runs of separators collapse to one dash, with none at the ends
- accented letters lose their accents: slugify("Crème brûlée") == "creme-brulee"
- an input with no letters or digits gives "n-a"
"""

DESIGN = """# Design

- Package `textkit` under src/, one module `slug.py` with `slugify(text: str) -> str`.
- NFKD-normalise, drop combining marks, lower-case, replace every run of characters
  outside [a-z0-9] with one dash, strip dashes; empty result becomes "n-a".
- Tests: tests/test_slug.py with unittest, one test per acceptance criterion.
- Packaging: a source archive dist/textkit-0.1.0.tar.gz.
"""

SLUG = '''"""URL slugs."""

import re
import unicodedata


def slugify(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c)).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", plain).strip("-")
    return slug or "n-a"
'''

TESTS = """import unittest

from textkit import slugify


class SlugifyTest(unittest.TestCase):
    def test_simple(self):
        self.assertEqual(slugify("Hello, World!"), "hello-world")

    def test_separators_collapse(self):
        self.assertEqual(slugify("  a -- b__c  "), "a-b-c")

    def test_accents(self):
        self.assertEqual(slugify("Crème brûlée"), "creme-brulee")

    def test_nothing_left(self):
        self.assertEqual(slugify("!!!"), "n-a")


if __name__ == "__main__":
    unittest.main()
"""

TEST_CMD = "PYTHONPATH=src python3 -m unittest discover -s tests -v"

PLAN = {
    "tasks": [
        {
            "name": "requirements",
            "phase": "requirements",
            "capability": "agent",
            "instructions": "Write docs/requirements.md with acceptance criteria for slugify.",
            "acceptance": ["docs/requirements.md lists checkable acceptance criteria"],
        },
        {
            "name": "design",
            "phase": "design",
            "capability": "agent",
            "instructions": "Write docs/design.md: module, function, tests, packaging.",
            "depends_on": ["requirements"],
        },
        {
            "name": "implement",
            "phase": "implementation",
            "capability": "agent",
            "instructions": "Implement textkit.slugify in src/ with unittest tests in tests/.",
            "acceptance": ["every acceptance criterion has a test"],
            "depends_on": ["design"],
        },
        {
            "name": "test",
            "phase": "testing",
            "capability": "agent",
            "instructions": f"Run `{TEST_CMD}` and save the output to docs/test-report.txt.",
            "depends_on": ["implement"],
        },
        {
            "name": "deploy",
            "phase": "deployment",
            "capability": "agent",
            "instructions": "Build dist/textkit-0.1.0.tar.gz from src/, tests/ and docs/.",
            "depends_on": ["test"],
        },
    ]
}


def script() -> dict[str, Any]:
    return {
        "description": "SCRIPTED MODEL for the offline demo: fixed turns, not a real LLM.",
        "conversations": [
            {
                "name": "decompose",
                "match": "omoi:decompose",
                "turns": [{"content": json.dumps(PLAN)}],
            },
            {
                "name": "review",
                "match": "omoi:review",
                "turns": [{"content": "VERDICT: PASS\nEach criterion is concrete and testable."}],
            },
            {
                "name": "summarise",
                "match": "omoi:summarise",
                "turns": [{"content": "The phase finished; see the listed files."}],
            },
            task(
                "requirements",
                term("mkdir -p docs"),
                create("docs/requirements.md", REQUIREMENTS),
                finish("Wrote docs/requirements.md with four acceptance criteria."),
            ),
            task(
                "design",
                create("docs/design.md", DESIGN),
                finish("Wrote docs/design.md: one module, unittest tests, a source archive."),
            ),
            task(
                "implement",
                term("mkdir -p src/textkit tests"),
                create(
                    "src/textkit/__init__.py",
                    'from textkit.slug import slugify\n\n__all__ = ["slugify"]\n',
                ),
                create("src/textkit/slug.py", SLUG),
                create("tests/test_slug.py", TESTS),
                term(TEST_CMD),
                finish("Implemented textkit.slugify (src/textkit/slug.py) with 4 tests."),
            ),
            task(
                "test",
                term(f"{TEST_CMD} 2>&1 | tee docs/test-report.txt"),
                finish("Ran the unit tests; the report is in docs/test-report.txt."),
            ),
            task(
                "deploy",
                term(
                    "mkdir -p dist && tar czf dist/textkit-0.1.0.tar.gz src tests docs && ls dist"
                ),
                finish("Built dist/textkit-0.1.0.tar.gz."),
            ),
        ],
    }


if __name__ == "__main__":
    (HERE / "demo.json").write_text(json.dumps(script(), indent=2) + "\n")

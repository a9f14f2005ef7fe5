"""Nothing outside `bus/` touches NATS, and only `bus/settle.py` settles a message.

The rule is checked on the syntax tree of every product module, so neither a comment nor
a string that mentions nats can trip it, and an aliased import cannot hide from it.
Benchmarks and tests are independent clients of NATS and are not checked.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The packages that reach NATS only through a `bus.Bus` and what `bus/` offers.
CLIENTS = ("agents", "gateway", "cli", "store", "schemas")
BUS = "bus"
SETTLE = Path("bus/settle.py")
NATS_HANDLES = frozenset({"nc", "js", "admin"})
SETTLING = frozenset({"ack", "ack_sync", "nak", "term", "in_progress"})
_DYNAMIC_IMPORTS = frozenset({"__import__", "import_module"})
_DYNAMIC_ATTRS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _is_nats(module: str) -> bool:
    return module == "nats" or module.startswith("nats.")


def _literal(args: list[ast.expr], index: int) -> str | None:
    if len(args) > index and isinstance(arg := args[index], ast.Constant):
        return arg.value if isinstance(arg.value, str) else None
    return None


class Checker(ast.NodeVisitor):
    """Collects what breaks the rule. A `client` module may not import nats nor reach for
    a connection handle (`.nc`, `.js`, `.admin`); no module but the one that `may_settle`
    calls `ack`, `ack_sync`, `nak`, `term` or `in_progress`."""

    def __init__(self, path: Path, *, client: bool, may_settle: bool) -> None:
        self.path = path
        self.client = client
        self.may_settle = may_settle
        self.found: list[Violation] = []

    def flag(self, node: ast.expr | ast.stmt, what: str) -> None:
        self.found.append(Violation(self.path, node.lineno, what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self.client and _is_nats(alias.name):
                self.flag(node, f"imports {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if self.client and node.level == 0 and node.module and _is_nats(node.module):
            self.flag(node, f"imports from {node.module}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if self.client and node.attr in NATS_HANDLES:
            self.flag(node, f"uses .{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in SETTLING and not self.may_settle:
            self.flag(node, f"calls .{func.attr}() outside {SETTLE}")
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in _DYNAMIC_IMPORTS:
            module = _literal(node.args, 0)
            if self.client and module is not None and _is_nats(module):
                self.flag(node, f"imports {module} dynamically")
        elif name in _DYNAMIC_ATTRS:
            self._dynamic_attribute(node, name, _literal(node.args, 1))
        self.generic_visit(node)

    def _dynamic_attribute(self, node: ast.Call, how: str, attr: str | None) -> None:
        if self.client and attr in NATS_HANDLES:
            self.flag(node, f"uses .{attr} through {how}")
        elif not self.may_settle and attr in SETTLING:
            self.flag(node, f"reaches .{attr} through {how} outside {SETTLE}")


def violations(source: str, path: Path, *, client: bool, may_settle: bool) -> list[Violation]:
    """What in `source` breaks the rule (see `Checker`), in line order."""
    checker = Checker(path, client=client, may_settle=may_settle)
    checker.visit(ast.parse(source, filename=str(path)))
    return sorted(checker.found, key=lambda v: v.line)


def product_modules(root: Path = ROOT) -> list[Path]:
    return sorted(
        path.relative_to(root)
        for package in (*CLIENTS, BUS)
        for path in (root / package).rglob("*.py")
    )


def check(path: Path, root: Path = ROOT) -> list[Violation]:
    return violations(
        (root / path).read_text(encoding="utf-8"),
        path,
        client=path.parts[0] in CLIENTS,
        may_settle=path == SETTLE,
    )


def test_no_module_outside_bus_touches_nats_and_only_settle_settles() -> None:
    modules = product_modules()
    assert len(modules) > 80, modules  # the walk really found the tree
    broken = [str(v) for path in modules for v in check(path)]
    assert not broken, "\n".join(broken)


def test_every_product_package_is_checked() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {name.rstrip("*") for name in included} == {*CLIENTS, BUS}


def test_settle_is_where_settling_happens() -> None:
    # The exemption must not be vacuous: settle.py really is the module that settles.
    tree = ast.parse((ROOT / SETTLE).read_text(encoding="utf-8"))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert {"ack", "nak", "term", "in_progress"} <= called
    assert check(SETTLE) == []


# The checker itself, on small sources: each of these must be caught, at its line.

CAUGHT_IN_CLIENTS = [
    ("import nats", "imports nats"),
    ("import nats.errors as ne", "imports nats.errors"),
    ("import os, nats.js.api", "imports nats.js.api"),
    ("from nats.aio.msg import Msg", "imports from nats.aio.msg"),
    ("from nats import errors", "imports from nats"),
    ("def f():\n    from nats.js.api import DeliverPolicy", "imports from nats.js.api"),
    ("importlib.import_module('nats.js')", "imports nats.js dynamically"),
    ("__import__('nats')", "imports nats dynamically"),
    ("bus.nc.request('s', b'')", "uses .nc"),
    ("x = ctx.bus.js", "uses .js"),
    ("await self.bus.admin.stream_info('S')", "uses .admin"),
    ("getattr(bus, 'nc')", "uses .nc through getattr"),
    ("async def f(bus):\n    info = await bus.js.stream_info('S')", "uses .js"),
]


@pytest.mark.parametrize(("source", "what"), CAUGHT_IN_CLIENTS)
def test_checker_catches_nats_in_a_client(source: str, what: str) -> None:
    path = Path("gateway/example.py")
    found = violations(source, path, client=True, may_settle=False)
    assert [(v.line, v.what) for v in found] == [(source.count("\n") + 1, what)]
    assert str(found[0]).startswith(f"{path}:{found[0].line}: ")


CAUGHT_ANYWHERE = [
    ("await msg.ack()", "calls .ack() outside bus/settle.py"),
    ("await delivery.msg.ack_sync()", "calls .ack_sync() outside bus/settle.py"),
    ("await msg.nak(delay=1)", "calls .nak() outside bus/settle.py"),
    ("await m.term()", "calls .term() outside bus/settle.py"),
    ("await m.in_progress()", "calls .in_progress() outside bus/settle.py"),
    ("await getattr(m, 'ack')()", "reaches .ack through getattr outside bus/settle.py"),
]


@pytest.mark.parametrize(("source", "what"), CAUGHT_ANYWHERE)
@pytest.mark.parametrize("client", [True, False])
def test_checker_catches_settling_anywhere_but_settle(source: str, what: str, client: bool) -> None:
    found = violations(source, Path("bus/consumer.py"), client=client, may_settle=False)
    assert [(v.line, v.what) for v in found] == [(1, what)]
    assert violations(source, SETTLE, client=False, may_settle=True) == []


ALLOWED = [
    # Mentions are not uses.
    '"""Handlers never see nats-py\'s Msg; bus.nc is private."""',
    "# import nats",
    "log = logging.getLogger('nats')",
    # Names that merely start like it, and relative imports.
    "import natsort",
    "from .nats import helper",
    # The settle API itself is how everyone else settles; a field named ack is not a call.
    "from bus.settle import ack\nawait ack(delivery)",
    "pending.ack.cancel()",
    "def term(command): ...\nterm('ls')",
    # What the bus offers instead.
    "await bus.request(subject, data, timeout=5)",
    "since = await streams.last_seq(bus, 'EVENTS')",
]


@pytest.mark.parametrize("source", ALLOWED)
def test_checker_allows_what_is_not_a_violation(source: str) -> None:
    assert violations(source, Path("cli/example.py"), client=True, may_settle=False) == []


def test_bus_itself_may_use_nats_but_not_settle() -> None:
    source = "import nats\nnc = bus.nc\nawait msg.ack()\n"
    found = violations(source, Path("bus/consumer.py"), client=False, may_settle=False)
    assert [(v.line, v.what) for v in found] == [(3, "calls .ack() outside bus/settle.py")]


def test_the_walk_finds_violations_in_a_tree_and_names_their_place(tmp_path: Path) -> None:
    # What the suite does to the real tree, on a small one with a module that breaks
    # every rule, one in `bus/` that may use nats, and settle.py.
    for package in (*CLIENTS, BUS):
        (tmp_path / package).mkdir()
    (tmp_path / "agents" / "deep").mkdir()
    (tmp_path / "agents" / "deep" / "bad.py").write_text(
        "x = 1\nfrom nats.js import api\n\nasync def f(bus, msg):\n"
        "    await bus.js.publish('s', b'')\n    await msg.nak()\n"
    )
    (tmp_path / "bus" / "bus.py").write_text("import nats\nnc = bus.nc\nawait msg.term()\n")
    (tmp_path / "bus" / "settle.py").write_text("await msg.ack()\n")
    found = [str(v) for path in product_modules(tmp_path) for v in check(path, tmp_path)]
    assert found == [
        "agents/deep/bad.py:2: imports from nats.js",
        "agents/deep/bad.py:5: uses .js",
        "agents/deep/bad.py:6: calls .nak() outside bus/settle.py",
        "bus/bus.py:3: calls .term() outside bus/settle.py",
    ]

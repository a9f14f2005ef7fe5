import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from agents.runner import ROLES
from bus.server import DEFAULT_MAX_PAYLOAD

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ("planner", "monitor", "validator", "worker")


def load() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yml").read_text())


def argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value`, `--name value` and bare `-flag` tokens, keyed without dashes."""
    out: dict[str, str] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        nxt = args[i + 1] if i + 1 < len(args) else ""
        out[name] = value if eq else ("" if nxt.startswith("-") else nxt)
    return out


def hosts(urls: str) -> set[str]:
    return {urlparse(u.strip()).hostname or "" for u in urls.split(",")}


def nats_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("nats:")}


def test_three_nats_nodes_form_a_jetstream_cluster() -> None:
    nodes = nats_services(load())
    assert len(nodes) == 3
    cluster_names = set()
    for name, node in nodes.items():
        version = re.match(r"nats:(\d+)\.(\d+)", node["image"])
        assert version is not None
        assert (int(version[1]), int(version[2])) >= (2, 11), node["image"]
        f = flags(argv(node))
        assert "js" in f or "jetstream" in f, f"{name}: JetStream not enabled"
        assert f.get("server_name") == name
        assert hosts(f["routes"]) == set(nodes) - {name}, f"{name} must route to the others"
        cluster_names.add(f.get("cluster_name"))
    assert len(cluster_names) == 1
    assert None not in cluster_names


def test_cluster_max_payload_matches_embedded_server() -> None:
    for node in nats_services(load()).values():
        mounts = dict(reversed(str(m).split(":")[:2]) for m in node["volumes"])
        conf = ROOT / mounts[flags(argv(node))["config"]]
        match = re.search(r"^max_payload:\s*(\d+)MB\s*$", conf.read_text(), re.MULTILINE)
        assert match is not None, f"{conf} sets no max_payload"
        assert int(match[1]) * 1024 * 1024 == DEFAULT_MAX_PAYLOAD


def test_nats_client_port_only_on_loopback() -> None:
    ports = [str(p) for s in nats_services(load()).values() for p in s.get("ports", [])]
    assert ports, "no client port published for the CLI"
    assert all(p.startswith("127.0.0.1:") for p in ports), ports


def resolves(args: list[str]) -> bool:
    if args[:2] == ["omoi", "agent"] and len(args) >= 3:
        return args[2] in ROLES
    if len(args) >= 3 and args[0].startswith("python") and args[1] == "-m":
        package, _, role = args[2].partition(".")
        if package != "agents" or role not in ROLES:
            return False
        try:
            return importlib.util.find_spec(f"agents.{role}.__main__") is not None
        except ModuleNotFoundError:  # the parent is not a package
            return False
    return False


def test_agent_services_run_real_entry_points_against_the_cluster() -> None:
    compose = load()
    nodes = set(nats_services(compose))
    for role in AGENTS:
        service = compose["services"][role]
        assert service.get("build") == ".", role
        assert resolves(argv(service)), f"{role}: {argv(service)} is not an agent entry point"
        env = service["environment"]
        assert hosts(env["NATS_URL"]) == nodes, role
        assert str(env["OMOI_REPLICAS"]) == "3", role
        assert nodes <= set(service["depends_on"]), role
        assert service.get("restart") == "unless-stopped", role
    assert compose["services"]["worker"]["deploy"]["replicas"] >= 2


def test_dockerfile_installs_the_package_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-cache-dir \.\s*$", text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user
    assert user[-1] not in {"root", "0"}


def test_mounted_files_exist_and_named_volumes_are_declared() -> None:
    compose = load()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"

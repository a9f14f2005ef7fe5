import importlib.util
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import yaml

from agents.runner import ROLES
from agents.settings import Settings
from bus.server import DEFAULT_MAX_PAYLOAD

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gateway"


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


def role_of(args: list[str]) -> str | None:
    """The role (or "gateway") a container command runs, if it is a real entry point."""
    if args[:2] == ["omoi", "agent"] and len(args) >= 3:
        return args[2] if args[2] in ROLES else None
    if len(args) >= 3 and args[0].startswith("python") and args[1] == "-m":
        module = args[2]
        package, _, role = module.partition(".")
        if module != GATEWAY and (package != "agents" or role not in ROLES):
            return None
        try:
            found = importlib.util.find_spec(f"{module}.__main__") is not None
        except ModuleNotFoundError:  # the parent is not a package
            return None
        return (role or module) if found else None
    return None


def omoi_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from this repository, by the role they run."""
    out: dict[str, dict[str, Any]] = {}
    for name, service in compose["services"].items():
        if service.get("build") != "." or argv(service)[:2] == ["omoi", "auth"]:
            continue
        role = role_of(argv(service))
        assert role is not None, f"{name}: {argv(service)} is not an Omoi entry point"
        assert role not in out, f"{name}: a second service runs {role}"
        out[role] = service
    return out


def test_every_role_and_the_gateway_run_against_the_whole_cluster() -> None:
    compose = load()
    nodes = set(nats_services(compose))
    services = omoi_services(compose)
    # Not the autoscaler: compose sizes workers with `deploy.replicas`; the autoscaler
    # scales through a supervisor (`omoi up`), and KEDA does on Kubernetes (deploy/k8s).
    assert set(services) == {*ROLES, GATEWAY} - {"autoscaler"}
    for role, service in services.items():
        env = service["environment"]
        assert hosts(env["NATS_URL"]) == nodes, role
        assert str(env["OMOI_REPLICAS"]) == "3", role
        assert set(service["depends_on"]) >= nodes, role
        healthy = {n for n in nodes if service["depends_on"][n]["condition"] == "service_healthy"}
        assert healthy == nodes, role
        assert service.get("restart") == "unless-stopped", role
    assert services["worker"]["deploy"]["replicas"] >= 2
    # Planners share the tickets' partitions; DuckDB allows a single writer to the store.
    assert services["planner"]["deploy"]["replicas"] >= 2
    assert services["recorder"].get("deploy", {}).get("replicas", 1) == 1


def test_only_the_roles_that_call_a_model_get_its_key() -> None:
    services = omoi_services(load())
    keyed = {role for role, s in services.items() if "OMOI_LLM_API_KEY" in s["environment"]}
    assert keyed == {"planner", "validator", "worker"}


def mount_at(service: dict[str, Any], path: PurePosixPath) -> tuple[str, str, bool]:
    """(volume, target, read-only) of the mount that holds `path` in this container."""
    best: tuple[str, str, bool] | None = None
    for mount in service.get("volumes", []):
        source, target, *mode = str(mount).split(":")
        if path.is_relative_to(target) and (best is None or len(target) > len(best[1])):
            best = (source, target, mode == ["ro"])
    assert best is not None, f"nothing is mounted over {path}"
    return best


def test_gateway_reads_the_store_the_recorder_publishes_into() -> None:
    services = omoi_services(load())
    recorder, gateway = services["recorder"], services[GATEWAY]
    published = [
        PurePosixPath(Settings.from_env(s["environment"]).published_dir)
        for s in (recorder, gateway)
    ]
    assert published[0] == published[1]
    written, read = mount_at(recorder, published[0]), mount_at(gateway, published[1])
    assert written[0] == read[0], "the recorder and the gateway must share the store volume"
    assert not written[2], "the recorder writes the store"
    assert not written[0].startswith((".", "/")), "the store is a named volume"


def test_gateway_port_is_published_on_loopback_and_health_checked() -> None:
    gateway = omoi_services(load())[GATEWAY]
    f = flags(argv(gateway))
    assert f["host"] == "0.0.0.0", "inside its container the gateway must listen on all"
    ports = [str(p) for p in gateway["ports"]]
    assert [p.rsplit(":", 1)[1] for p in ports] == [f["port"]]
    assert all(p.startswith("127.0.0.1:") for p in ports), ports
    probe = " ".join(gateway["healthcheck"]["test"])
    assert f"127.0.0.1:{f['port']}/ready" in probe


def test_dockerfile_installs_the_package_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-cache-dir \.\s*$", text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user
    assert user[-1] not in {"root", "0"}


def test_image_creates_every_volume_mount_point_for_its_user() -> None:
    """A fresh named volume takes the owner of the directory it is mounted over; one the
    image does not create belongs to root, and the non-root agents cannot write it."""
    text = (ROOT / "Dockerfile").read_text()
    created = {
        PurePosixPath(d) for m in re.findall(r"mkdir -p ([^\\&\n]+)", text) for d in m.split()
    }
    assert re.search(r"chown -R \S+ /data\b", text)
    for role, service in omoi_services(load()).items():
        for mount in service.get("volumes", []):
            if isinstance(mount, dict):
                continue  # a single file out of a volume (its seed): no directory to own
            target = PurePosixPath(str(mount).split(":")[1])
            assert any(d == target or d.is_relative_to(target) for d in created), (role, target)


def test_mounted_files_exist_and_named_volumes_are_declared() -> None:
    compose = load()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount["source"] if isinstance(mount, dict) else str(mount).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_every_role_connects_as_itself_and_the_nodes_admit_only_those() -> None:
    compose = load()
    services = compose["services"]
    init = services["auth"]
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    assert argv(init) == ["omoi", "auth", "init", "/auth", "--owner", uid[1]]
    assert "omoi-auth:/auth" in init["volumes"]
    conf = (ROOT / "deploy" / "nats-cluster.conf").read_text()
    assert re.search(r'^include "auth/authorization.conf"$', conf, re.MULTILINE)
    for name, node in nats_services(compose).items():
        assert "omoi-auth:/etc/nats/auth:ro" in node["volumes"], name
        assert node["depends_on"]["auth"]["condition"] == "service_completed_successfully"
    for role, service in omoi_services(compose).items():
        seeds = [m for m in service["volumes"] if isinstance(m, dict)]
        # Exactly its own seed, read-only: a worker's container holds no other identity.
        # The monitor also holds `system`'s, to hear the connections the nodes refuse.
        extra = ["system.nk"] if role == "monitor" else []
        assert [(m["source"], m["volume"]["subpath"], m["read_only"]) for m in seeds] == [
            ("omoi-auth", name, True) for name in (f"{role}.nk", *extra)
        ], role
        env = service["environment"]
        assert env["OMOI_NATS_CREDENTIALS"] == seeds[0]["target"], role
        if extra:
            assert env["OMOI_NATS_SYSTEM_CREDENTIALS"] == seeds[1]["target"]
        assert not any("omoi-auth" in str(m) for m in service["volumes"] if m not in seeds)

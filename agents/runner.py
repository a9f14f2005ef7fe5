"""Run one agent as a process: parse arguments, connect, handle signals, shut down cleanly.

This is the only place (with the CLI) that reads the environment or installs signal
handlers; agents themselves get everything passed in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from agents.base import Agent
from agents.errors import AgentError, SettingsError
from agents.logs import configure_logging, shipped_logs
from agents.redact import Redactor, install_log_redaction
from agents.settings import DEFAULT_NATS_PORT, Settings
from agents.tracing import traced
from bus import AuthError, Bus, NotProvisioned
from bus.server_events import ServerEvents
from schemas.common import ID_RE
from schemas.registry import check_label

log = logging.getLogger(__name__)

ROLES = (
    "planner", "worker", "monitor", "validator", "delivery", "recorder", "guardian", "autoscaler",
)  # fmt: skip


def _agent_id(value: str) -> str:
    # It is a KV key and a subject token (its status endpoint's).
    if not ID_RE.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: up to 64 letters, digits, '-' and '_', starting with a letter or digit"
        )
    return value


def _label(value: str) -> str:
    try:
        return check_label(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser(role: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"omoi agent {role}")
    p.add_argument("--agent-id", type=_agent_id, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--log-level", default="INFO")
    if role == "worker":
        p.add_argument("--phase", action="append", dest="phases", help="repeatable; default all")
        p.add_argument(
            "--capability", action="append", dest="capabilities", help="default shell and agent"
        )
        p.add_argument(
            "--label",
            action="append",
            dest="labels",
            type=_label,
            help="repeatable; what `omoi agents --label` finds it by "
            "(default: OMOI_WORKER_LABELS, else none)",
        )
        p.add_argument(
            "--concurrency",
            type=int,
            choices=range(1, 257),
            metavar="N",
            help="tasks executed at once (default: OMOI_WORKER_CONCURRENCY, else 1)",
        )
    return p


def build_agent(
    role: str,
    bus: Bus,
    settings: Settings,
    args: argparse.Namespace,
    redactor: Redactor | None = None,
    server_events: ServerEvents | None = None,
) -> Agent:
    # Imported here so a process only loads the role it runs.
    if role == "planner":
        from agents.planner.agent import Planner

        return Planner(bus, settings, agent_id=args.agent_id)
    if role == "worker":
        from agents.worker.agent import Worker, default_executors
        from schemas import WORK_PHASES

        if args.concurrency:
            settings = settings.model_copy(update={"worker_concurrency": args.concurrency})
        return Worker(
            bus,
            settings,
            phases=args.phases or [p.value for p in WORK_PHASES],
            capabilities=args.capabilities or ["shell", "agent"],
            executors=default_executors(settings, dict(os.environ)),
            redactor=redactor,
            agent_id=args.agent_id,
        )
    if role == "monitor":
        from agents.monitor.agent import Monitor
        from agents.monitor.setup import alert_rules, notifier_for
        from store.reader import Reader

        # The store the recorder publishes, where this machine has it (it may not yet).
        store = Reader(settings.published_dir, refresh_s=settings.anomaly_interval_s / 2)
        rules = alert_rules(settings)
        return Monitor(
            bus,
            settings,
            agent_id=args.agent_id,
            server_events=server_events,
            store=store,
            alerts=rules,
            notifier=notifier_for(rules, settings) if rules else None,
        )
    if role == "validator":
        from agents.validator.agent import Validator

        return Validator(
            bus, settings, env=dict(os.environ), redactor=redactor, agent_id=args.agent_id
        )
    if role == "delivery":
        from agents.delivery.agent import DeliveryAgent

        return DeliveryAgent(bus, settings, redactor=redactor, agent_id=args.agent_id)
    if role == "recorder":
        from agents.recorder.agent import Recorder

        return Recorder(bus, settings, agent_id=args.agent_id)
    if role == "guardian":
        from agents.guardian.agent import Guardian
        from agents.llm.client import ModelClient, ModelConfig

        config = ModelConfig.from_settings(settings) if settings.guardian_model_review else None
        model = ModelClient(config) if config is not None else None
        return Guardian(bus, settings, agent_id=args.agent_id, model=model)
    if role == "autoscaler":
        from agents.autoscaler.agent import Autoscaler

        return Autoscaler(bus, settings, agent_id=args.agent_id)
    raise SystemExit(f"unknown agent role {role!r}; one of {', '.join(ROLES)}")


# The roles allowed to create and converge the topology; the others wait for it.
PROVISIONING_ROLES = ("planner",)
PROVISION_WAIT_S = 0.5
PROVISION_WAIT_MAX_S = 10.0
# The roles that also listen to the servers' system account.
SYSTEM_LISTENERS = ("monitor",)


async def connect(role: str, settings: Settings) -> Bus:
    """The role's bus, as the role's NATS identity. A role that may not provision waits
    until a planner (or `omoi up`) has."""
    url = settings.nats_url or f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
    credentials = settings.credentials(role)
    topology = settings.topology() if role in PROVISIONING_ROLES else None
    delay = PROVISION_WAIT_S
    while True:
        try:
            return await Bus.connect(
                url, name=f"omoi-{role}", topology=topology, credentials=credentials
            )
        except NotProvisioned as exc:
            log.info("waiting for a planner to provision the topology (%s)", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROVISION_WAIT_MAX_S)


async def connect_server_events(role: str, settings: Settings) -> ServerEvents | None:
    """The monitor's second connection, as `system`, when this machine holds that identity."""
    credentials = settings.system_credentials() if role in SYSTEM_LISTENERS else None
    if credentials is None:
        return None
    url = settings.nats_url or f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
    return await ServerEvents.connect(url, credentials, name=f"omoi-{role}-system")


async def run_agent(
    role: str, settings: Settings, args: argparse.Namespace, redactor: Redactor | None = None
) -> None:
    bus = await connect(role, settings)
    server_events = await connect_server_events(role, settings)
    agent = build_agent(role, bus, settings, args, redactor, server_events)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.request_stop)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if settings.log_ship:
                await stack.enter_async_context(shipped_logs(bus, role, agent.id, redactor))
            await stack.enter_async_context(traced(bus, settings, role, agent.id))
            await agent.run()
    finally:
        if server_events is not None:
            await server_events.close()
        await bus.close()


def main(role: str, argv: Sequence[str] | None = None) -> None:
    args = parser(role).parse_args(argv)
    try:
        settings = Settings.from_env(
            os.environ, data_dir=args.data_dir, worker_labels=getattr(args, "labels", None)
        )
    except SettingsError as exc:
        # A message, not a traceback: this is the operator's configuration.
        sys.stderr.write(f"omoi agent {role}: {exc}\n")
        raise SystemExit(2) from None
    if role == "monitor":
        from agents.monitor.setup import alert_rules

        try:
            alert_rules(settings)  # a file that cannot be used stops it here, with its line
        except AgentError as exc:
            sys.stderr.write(f"omoi agent {role}: {exc}\n")
            raise SystemExit(2) from None
    configure_logging(args.log_level, settings.log_format)
    # One redactor for the whole process: its log lines and what its agent publishes.
    redactor = Redactor.from_settings(settings)
    install_log_redaction(redactor)
    try:
        asyncio.run(run_agent(role, settings, args, redactor), loop_factory=loop_factory())
    except AuthError as exc:
        # Wrong or missing credentials: restarting will not fix them, so say what to fix.
        raise SystemExit(f"omoi agent {role}: {exc}") from None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: the agents are bound by per-message asyncio overhead,
    which uvloop roughly halves. The standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

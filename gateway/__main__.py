"""`python -m gateway --host 127.0.0.1 --port 8000`: the gateway as a process.

Settings come from the environment (`NATS_URL`, `OMOI_*`, `OMOI_GATEWAY_*`: see
`gateway.config`), parsed here once. The analytics store is read from
`<data-dir>/store/published` when the store package is there.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from agents import spans
from agents.errors import SettingsError
from agents.logs import configure_logging
from agents.redact import Redactor, install_log_redaction
from agents.settings import DEFAULT_NATS_PORT, Settings
from agents.tracing import provider_for
from cli.secret_files import session_key
from gateway.app import create_app
from gateway.config import options_from_env
from gateway.context import GatewayOptions
from gateway.serve import serve_forever
from gateway.sql import ErrorMappingReader, SqlReader, SqlResult, SqlUnavailable

log = logging.getLogger("gateway")


class PublishedStore:
    """The store's reader, created on first use: the recorder may publish after we start."""

    def __init__(self, published_dir: Path) -> None:
        self.published_dir = published_dir
        self._reader: SqlReader | None = None
        # Queries run in worker threads; one Reader, which caches the loaded data.
        self._lock = threading.Lock()

    def query(self, sql: str, params: Sequence[object] = (), *, max_rows: int) -> SqlResult:
        if not self.published_dir.is_dir():
            raise SqlUnavailable(f"no store at {self.published_dir} yet; is a recorder running?")
        with self._lock:
            if self._reader is None:
                from store.errors import ReadOnlyError, StoreError
                from store.reader import Reader

                self._reader = ErrorMappingReader(
                    Reader(self.published_dir), denied=(ReadOnlyError,), invalid=(StoreError,)
                )
            reader = self._reader
        return reader.query(sql, params, max_rows=max_rows)


def store_reader(settings: Settings) -> SqlReader | None:
    try:
        import store.reader  # noqa: F401 (only asking whether it is installed)
    except ImportError:
        log.warning("no analytics store package; /api/v1/sql and the charts are off")
        return None
    return PublishedStore(settings.published_dir)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def run(host: str, port: int, settings: Settings, options: GatewayOptions) -> None:
    url = settings.nats_url or f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
    gateway_id = f"gateway-{os.getpid()}"
    provider = provider_for("gateway", gateway_id, settings) if settings.tracing else None
    # The gateway may not provision: it waits for a planner (or `omoi up`) to.
    app = create_app(
        url,
        settings=settings,
        reader=store_reader(settings),
        options=options,
        tracer_provider=provider,
        gateway_id=gateway_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    spans.use_provider(provider)
    try:
        await serve_forever(app, host, port, stop)
    finally:
        spans.use_provider(None)
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        # A message, not a traceback: this is the operator's configuration.
        raise SystemExit(f"gateway: {exc}") from None
    configure_logging(args.log_level, settings.log_format)
    install_log_redaction(Redactor.from_settings(settings))
    options = options_from_env(os.environ, session_key=session_key(settings.data_dir))
    asyncio.run(run(args.host, args.port, settings, options))


if __name__ == "__main__":
    main()

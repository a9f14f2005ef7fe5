"""The Celery app the `celery_redis` baseline runs: Redis broker and result backend.

Workers load it with `celery -A benchmarks.scenarios.celery_app worker`; the Redis URL
comes from the environment because the benchmark starts redis-server on a free port.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

URL_ENV = "OMOI_BENCH_REDIS_URL"
TASK_NAME = "bench.noop"


def make_app(url: str, *, backend: bool = True) -> Any:
    """`backend=False` for a producer that only sends: with a Redis backend, every send
    would also subscribe to that task's result channel, which nobody there reads."""
    app = Celery("omoi_bench", broker=url, backend=url if backend else None, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Ack after the task ran, as the JetStream baseline and Omoi do: at-least-once.
        task_acks_late=True,
        # Celery's default; no-op tasks are short, so a deeper prefetch only helps.
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


def _noop(sent: float) -> dict[str, float]:
    # The start stamp is the point of the task: schedule-to-start is measured from it.
    return {"sent": sent, "started": time.time()}


app = make_app(os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"))
# Registered by call rather than as a decorator: Celery is untyped, and a decorator from
# it would make the function untyped under mypy strict.
noop = app.task(name=TASK_NAME)(_noop)

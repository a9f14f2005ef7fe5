"""The HTTP gateway (Litestar) over the bus: REST under /api/v1, live events, the dashboard.

It holds no state of its own: it publishes commands, reads the KV buckets and streams, and
asks the analytics store through `SqlReader`, so any number of instances can run side by
side. `python -m gateway --host 127.0.0.1 --port 8000` runs one.
"""

from gateway.app import API_PREFIX, create_app
from gateway.context import GatewayOptions
from gateway.serve import GatewayStartError, serving
from gateway.sql import (
    ErrorMappingReader,
    SqlDenied,
    SqlError,
    SqlInvalid,
    SqlReader,
    SqlResult,
    SqlUnavailable,
)

__all__ = [
    "API_PREFIX",
    "ErrorMappingReader",
    "GatewayOptions",
    "GatewayStartError",
    "SqlDenied",
    "SqlError",
    "SqlInvalid",
    "SqlReader",
    "SqlResult",
    "SqlUnavailable",
    "create_app",
    "serving",
]

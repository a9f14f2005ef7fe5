"""The NATS layer: names, topology, state buckets, publishing and the ack decision."""

from bus.bus import Bus
from bus.errors import Abandon, BusError, ConflictError, Reject, Retry, ServerStartError
from bus.fetch import MultiFetcher
from bus.server import EmbeddedNatsServer
from bus.settle import settle
from bus.state import Bucket, Versioned
from bus.topology import TopologyConfig, provision

__all__ = [
    "Abandon",
    "Bucket",
    "Bus",
    "BusError",
    "ConflictError",
    "EmbeddedNatsServer",
    "MultiFetcher",
    "Reject",
    "Retry",
    "ServerStartError",
    "TopologyConfig",
    "Versioned",
    "provision",
    "settle",
]

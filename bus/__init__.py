"""The NATS layer: names, topology, state buckets, publishing, consuming and settling."""

from bus.batch_consumer import BatchConsumer
from bus.bus import Bus, Pending, Request
from bus.consumer import Consumer, Source
from bus.delivery import Delivery
from bus.errors import (
    Abandon,
    AuthError,
    BusError,
    ConflictError,
    NoAnswer,
    NotProvisioned,
    Reject,
    Retry,
    ServerStartError,
    Unavailable,
)
from bus.objects import ObjectBucket, ObjectCorrupt, ObjectError, ObjectMissing, StoredObject
from bus.server import EmbeddedNatsServer
from bus.state import Bucket, Versioned
from bus.topology import TopologyConfig, provision

__all__ = [
    "Abandon",
    "AuthError",
    "BatchConsumer",
    "Bucket",
    "Bus",
    "BusError",
    "ConflictError",
    "Consumer",
    "Delivery",
    "EmbeddedNatsServer",
    "NoAnswer",
    "NotProvisioned",
    "ObjectBucket",
    "ObjectCorrupt",
    "ObjectError",
    "ObjectMissing",
    "Pending",
    "Reject",
    "Request",
    "Retry",
    "ServerStartError",
    "Source",
    "StoredObject",
    "TopologyConfig",
    "Unavailable",
    "Versioned",
    "provision",
]

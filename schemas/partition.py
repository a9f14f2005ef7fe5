"""Leases of the partitions bucket (`omoi_partitions`): a partition's owner, and a member
of the group that shares the partitions out. Each lives as long as the bucket's TTL
unless its holder writes it again."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.common import WireModel, utcnow


class PartitionLease(WireModel):
    holder: str  # the agent id
    # When it was last written: a renewal changes the stored bytes, so a write whose answer
    # was lost is recognised as its own (bus.state.Bucket).
    at: datetime = Field(default_factory=utcnow)

"""Declare Omoi's streams, consumers and KV buckets, idempotently.

Running `provision` against an existing deployment converges it to the declared
configuration: missing pieces are created, changed settings are updated in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)
from nats.js.errors import BadRequestError, NotFoundError, ServerError

from bus import constants as c
from bus.errors import is_transient

log = logging.getLogger(__name__)

# A log line longer than this is cut by its writer (a traceback fits many times over).
LOG_LINE_MAX_BYTES = 64 * 1024

WORK_PHASE_NAMES = ("requirements", "design", "implementation", "testing", "deployment")


@dataclass(frozen=True)
class TopologyConfig:
    replicas: int = 1
    ack_wait_s: float = 30.0
    events_max_age_s: float = 7 * 24 * 3600
    dlq_max_age_s: float = 30 * 24 * 3600
    heartbeat_ttl_s: float = 150.0
    duplicate_window_s: float = 120.0
    max_msg_size: int = 16 * 1024 * 1024
    capabilities: tuple[str, ...] = ("shell", "agent")
    # A gate runs a test suite and maybe a model review: give it longer than a task tick.
    gate_ack_wait_s: float = 120.0
    audit_max_age_s: float = 365 * 24 * 3600
    # Log lines (and spans, in their own stream) wait here for the recorder, and for
    # `omoi logs --follow`; the store keeps them for its own retention. The byte cap keeps
    # a chatty fleet from filling the disk.
    logs_max_age_s: float = 3 * 24 * 3600
    logs_max_bytes: int = 1024 * 1024 * 1024
    # A planner partition whose owner stopped renewing its lease is free after this long.
    partition_lease_s: float = 6.0
    # The planners' copy of the outcomes keeps the newest this many: a limits stream, not a
    # work queue, because a source finds where it left off in the last message it copied,
    # and a work queue emptied by acks forgets it (after a kill -9 the server then copied
    # the whole source again). Planners read it long before the cap.
    planner_max_msgs: int = 1_000_000


def stream_configs(cfg: TopologyConfig) -> list[StreamConfig]:
    streams = [
        StreamConfig(
            name=c.INTAKE_STREAM,
            subjects=list(c.INTAKE_SUBJECTS),
            retention=RetentionPolicy.WORK_QUEUE,
            # The planner replies to intake requests itself; a stream PubAck would
            # reach the requester first and hide the real answer.
            no_ack=True,
            max_msg_size=cfg.max_msg_size,
            duplicate_window=cfg.duplicate_window_s,
        ),
        StreamConfig(
            name=c.TASKS_STREAM,
            subjects=[c.TASKS_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=cfg.duplicate_window_s,
        ),
        *(
            StreamConfig(
                name=name,
                subjects=[subjects],
                retention=RetentionPolicy.WORK_QUEUE,
                duplicate_window=cfg.duplicate_window_s,
            )
            for name, subjects in (
                (c.GATES_STREAM, c.GATES_SUBJECTS),
                (c.DELIVERIES_STREAM, c.DELIVERIES_SUBJECTS),
            )
        ),
        StreamConfig(
            name=c.EVENTS_STREAM,
            subjects=[c.EVENTS_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            max_age=cfg.events_max_age_s,
            duplicate_window=cfg.duplicate_window_s,
        ),
        StreamConfig(
            name=c.DLQ_STREAM,
            subjects=[c.DLQ_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            max_age=cfg.dlq_max_age_s,
            max_msg_size=cfg.max_msg_size,
            duplicate_window=cfg.duplicate_window_s,
        ),
        StreamConfig(
            name=c.AUDIT_STREAM,
            subjects=[c.AUDIT_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            max_age=cfg.audit_max_age_s,
            duplicate_window=cfg.duplicate_window_s,
            # Append-only: entries leave only by age, never by an API call.
            deny_delete=True,
            deny_purge=True,
        ),
        # Telemetry: log lines and spans, kept alike (a few days, capped, oldest out).
        *(
            StreamConfig(
                name=name,
                subjects=[subjects],
                retention=RetentionPolicy.LIMITS,
                max_age=cfg.logs_max_age_s,
                max_bytes=cfg.logs_max_bytes,
                discard=DiscardPolicy.OLD,
                max_msg_size=LOG_LINE_MAX_BYTES,
            )
            for name, subjects in (
                (c.LOGS_STREAM, c.LOGS_SUBJECTS),
                (c.SPANS_STREAM, c.SPANS_SUBJECTS),
            )
        ),
    ]
    for stream in streams:
        stream.storage = StorageType.FILE
        stream.num_replicas = cfg.replicas
    return streams


def planner_stream_config(cfg: TopologyConfig, start_seq: int | None = None) -> StreamConfig:
    """OMOI_PLANNER: the planner-bound outcomes of OMOI_EVENTS, copied by the server into
    their ticket's partition (bus/constants.py). It has no subjects of its own, so nothing
    can be published into it but the copy."""
    return StreamConfig(
        name=c.PLANNER_STREAM,
        subjects=[],
        sources=[
            StreamSource(
                name=c.EVENTS_STREAM,
                opt_start_seq=start_seq,
                subject_transforms=[
                    SubjectTransform(*c.planner_subject_transform(f))
                    for f in c.PLANNER_EVENT_FILTERS
                ],
            )
        ],
        retention=RetentionPolicy.LIMITS,
        max_msgs=cfg.planner_max_msgs,
        discard=DiscardPolicy.OLD,
        max_age=cfg.events_max_age_s,
    )


def object_store_configs(cfg: TopologyConfig) -> list[StreamConfig]:
    """The streams behind Omoi's object stores, laid out as nats-py and the nats CLI make
    them (so `nats object` works on them), on the topology's replicas."""
    return [
        StreamConfig(
            name=c.obj_stream(bucket),
            subjects=[f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"],
            storage=StorageType.FILE,
            num_replicas=cfg.replicas,
            discard=DiscardPolicy.NEW,
            allow_rollup_hdrs=True,
            allow_direct=True,
            duplicate_window=cfg.duplicate_window_s,
        )
        for bucket in (c.WORKSPACES_BUCKET,)
    ]


def task_consumer_config(
    phase: str, capability: str, cfg: TopologyConfig, lane: str = c.NORMAL_LANE
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=c.task_consumer(phase, capability, lane),
        filter_subjects=c.task_filters(phase, capability, lane),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=cfg.ack_wait_s,
        # Retries are counted on the task itself, so the server must never give up.
        max_deliver=-1,
        max_ack_pending=-1,
    )


def consumer_configs(cfg: TopologyConfig) -> list[tuple[str, ConsumerConfig]]:
    out: list[tuple[str, ConsumerConfig]] = [
        (
            c.INTAKE_STREAM,
            ConsumerConfig(
                durable_name=c.INTAKE_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=cfg.ack_wait_s,
                max_deliver=-1,
            ),
        ),
        *(
            (
                c.PLANNER_STREAM,
                ConsumerConfig(
                    durable_name=c.planner_events_consumer(p),
                    filter_subject=c.planner_partition_filter(p),
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=cfg.ack_wait_s,
                    deliver_policy=DeliverPolicy.ALL,
                    max_deliver=-1,
                ),
            )
            for p in range(c.PLANNER_PARTITIONS)
        ),
        (
            c.EVENTS_STREAM,
            ConsumerConfig(
                durable_name=c.GUARDIAN_CONSUMER,
                filter_subjects=list(c.GUARDIAN_EVENT_FILTERS),
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=cfg.ack_wait_s,
                # What happened before the guardian first ran is history, not its case.
                deliver_policy=DeliverPolicy.NEW,
                max_deliver=-1,
            ),
        ),
        *[
            (
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    # The recorder commits a batch, then acks its last message, which acks
                    # the whole batch: one ack instead of thousands (a third of its time).
                    ack_policy=AckPolicy.ALL,
                    ack_wait=cfg.ack_wait_s,
                    deliver_policy=DeliverPolicy.ALL,
                    max_deliver=-1,
                    # Batches of thousands are in flight between fetch and commit.
                    max_ack_pending=100_000,
                ),
            )
            for stream, durable in (
                (c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER),
                (c.DLQ_STREAM, c.RECORDER_DLQ_CONSUMER),
                (c.AUDIT_STREAM, c.RECORDER_AUDIT_CONSUMER),
                (c.LOGS_STREAM, c.RECORDER_LOGS_CONSUMER),
                (c.SPANS_STREAM, c.RECORDER_SPANS_CONSUMER),
            )
        ],
        *(
            (
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=cfg.gate_ack_wait_s,
                    max_deliver=-1,
                ),
            )
            for stream, durable in (
                (c.GATES_STREAM, c.VALIDATOR_CONSUMER),
                # A push of a large history, and a pull request call or two.
                (c.DELIVERIES_STREAM, c.DELIVERY_CONSUMER),
            )
        ),
    ]
    for phase in WORK_PHASE_NAMES:
        for capability in cfg.capabilities:
            for lane in c.LANES:
                out.append((c.TASKS_STREAM, task_consumer_config(phase, capability, cfg, lane)))
    return out


def tracker_consumer_config(cfg: TopologyConfig) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=c.TRACKER_CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=cfg.ack_wait_s,
        deliver_policy=DeliverPolicy.NEW,
        max_deliver=-1,
        filter_subjects=list(c.TRACKER_EVENT_FILTERS),
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if is_transient(exc):  # no peers for it yet: the caller retries
            raise
        # Exists with another configuration: converge it.
        await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    durable = config.durable_name
    assert durable is not None
    try:
        existing: ConsumerInfo | None = await js.consumer_info(stream, durable)
    except NotFoundError:
        existing = None
    if existing is not None:
        config = _resumed(config, existing.config)
    try:
        await js.add_consumer(stream, config)
    except (BadRequestError, ServerError) as exc:
        if is_transient(exc) or existing is None:
            raise
        # Not every consumer setting can be updated in place (the ack policy, say);
        # recreate it, starting after what the old one had acked. Messages stay in the
        # stream, so nothing is lost: unacked deliveries are delivered again.
        floor = existing.ack_floor.stream_seq if existing.ack_floor is not None else 0
        if floor and config.deliver_policy in (None, DeliverPolicy.ALL):
            config = dataclasses.replace(
                config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1
            )
        await js.delete_consumer(stream, durable)
        await js.add_consumer(stream, config)


async def reset_to_ack_floor(js: JetStreamContext, stream: str, config: ConsumerConfig) -> bool:
    """Recreate a consumer just after its ack floor if deliveries are pending; True if so.

    For a single reader of an ack-all consumer: its first ack covers everything delivered
    before, including what a crashed predecessor received and never stored. Starting over
    at the floor makes those deliveries new, so they are read again, not acked unseen.
    """
    durable = config.durable_name
    assert durable is not None
    info = await js.consumer_info(stream, durable)
    if not info.num_ack_pending:
        return False
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    fresh = dataclasses.replace(
        config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1
    )
    await js.delete_consumer(stream, durable)
    await js.add_consumer(stream, fresh)
    return True


def find_consumer(cfg: TopologyConfig, stream: str, durable: str) -> ConsumerConfig:
    for name, config in consumer_configs(cfg):
        if name == stream and config.durable_name == durable:
            return config
    raise KeyError(f"no consumer {durable!r} on {stream!r} in the topology")


def _resumed(config: ConsumerConfig, existing: ConsumerConfig) -> ConsumerConfig:
    """`config`, keeping the start point of a consumer that was recreated mid-stream
    (where it starts is fixed at creation; asking for the start again would recreate it)."""
    if existing.deliver_policy == DeliverPolicy.BY_START_SEQUENCE and config.deliver_policy in (
        None,
        DeliverPolicy.ALL,
    ):
        return dataclasses.replace(
            config,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=existing.opt_start_seq,
        )
    return config


async def ensure_buckets(js: JetStreamContext, cfg: TopologyConfig) -> None:
    buckets = [
        KeyValueConfig(bucket=c.TICKETS_BUCKET, history=5, replicas=cfg.replicas),
        KeyValueConfig(bucket=c.TASKS_BUCKET, history=5, replicas=cfg.replicas),
        KeyValueConfig(
            bucket=c.HEARTBEATS_BUCKET, history=1, ttl=cfg.heartbeat_ttl_s, replicas=cfg.replicas
        ),
        KeyValueConfig(bucket=c.LOCKS_BUCKET, history=1, replicas=cfg.replicas),
        KeyValueConfig(bucket=c.TOKENS_BUCKET, history=1, replicas=cfg.replicas),
        KeyValueConfig(bucket=c.INTERVENTIONS_BUCKET, history=5, replicas=cfg.replicas),
        KeyValueConfig(bucket=c.QUARANTINE_BUCKET, history=1, replicas=cfg.replicas),
        KeyValueConfig(
            bucket=c.PARTITIONS_BUCKET,
            history=1,
            ttl=cfg.partition_lease_s,
            replicas=cfg.replicas,
        ),
    ]
    for bucket in buckets:
        try:
            await js.create_key_value(bucket)
        except BadRequestError as exc:
            if is_transient(exc):
                raise
            await _raise_ttl(js, bucket)


async def _raise_ttl(js: JetStreamContext, bucket: KeyValueConfig) -> None:
    """Converge an existing bucket's TTL upwards only.

    Agents with different heartbeat intervals share the heartbeat bucket; lowering its TTL
    for a fast-beating agent would expire a slow one's entries. The update must carry the
    whole current config: a partial one would reset the KV stream's other settings.
    """
    if not bucket.ttl:
        return
    info = await js.stream_info(f"KV_{bucket.bucket}")
    config = info.config
    if config.max_age is not None and 0 < bucket.ttl <= config.max_age:
        return
    config.max_age = bucket.ttl
    await js.update_stream(config)


async def ensure_planner_stream(js: JetStreamContext, cfg: TopologyConfig) -> None:
    """Make OMOI_PLANNER, copying from OMOI_EVENTS from now on (an upgrade must not copy a
    week of old outcomes), or converge it keeping where its copy started."""

    def config(start: int | None) -> StreamConfig:
        made = planner_stream_config(cfg, start)
        made.storage = StorageType.FILE
        made.num_replicas = cfg.replicas
        return made

    try:
        info = await js.stream_info(c.PLANNER_STREAM)
    except NotFoundError:
        events = await js.stream_info(c.EVENTS_STREAM)
        try:
            await js.add_stream(
                config(events.state.last_seq + 1 if events.state.last_seq else None)
            )
            return
        except BadRequestError as exc:
            if is_transient(exc):
                raise
            # Another provisioner made it meanwhile: converge to its start, not ours.
            info = await js.stream_info(c.PLANNER_STREAM)
    sources = info.config.sources or []
    await ensure_stream(js, config(sources[0].opt_start_seq if sources else None))


async def retire_consumers(js: JetStreamContext) -> None:
    for stream, durable in c.RETIRED_CONSUMERS:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, durable)
            log.info("deleted consumer %s of %s (retired)", durable, stream)


async def provision(js: JetStreamContext, cfg: TopologyConfig) -> None:
    for stream in stream_configs(cfg):
        await ensure_stream(js, stream)
    await ensure_planner_stream(js, cfg)
    for stream in object_store_configs(cfg):
        await ensure_stream(js, stream)
    for stream_name, consumer in consumer_configs(cfg):
        await ensure_consumer(js, stream_name, consumer)
    await retire_consumers(js)
    # Last: the roles that may not provision wait until they can bind the buckets, and
    # then find every stream and consumer in place.
    await ensure_buckets(js, cfg)
    log.info("topology provisioned (replicas=%d)", cfg.replicas)


async def is_provisioned(js: JetStreamContext) -> bool:
    try:
        await js.stream_info(c.TASKS_STREAM)
    except NotFoundError:
        return False
    return True

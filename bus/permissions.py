"""Who may publish and subscribe what: one identity per role, as tight as its job.

This table is the trust boundary on the bus. nats-server enforces it (it refuses a
denied publish or subscription outright), so a verdict, an outcome or a command that
changes state can only come from a role allowed to send it. A new subject, stream or
bucket goes in here, with a line in `tests/integration/test_permissions.py`.

JetStream is reached through subjects too: reading a bucket is a request on
`$JS.API.STREAM.MSG.GET.<stream>`, writing one a publish on `$KV.<bucket>.<key>`,
pulling from a consumer a request on `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
Nobody but `admin` may delete or purge a stream, or touch another role's consumers.

Replies: every Omoi process takes its inboxes under its role's own prefix (`inbox_prefix`),
so no role can read another's replies. The external clients a person drives (the nats
CLI, nats.js) use `_INBOX.`, which the submitter and viewer may subscribe to.

The service API (`bus/registry.py`): each agent role may subscribe to the `$SRV` control
subjects of its own service name only (`omoi-<role>`) and to its own role's status
endpoints, so a request by name or id reaches only that role. Operator, viewer and gateway
(and admin) ask.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from bus import constants as c
from schemas.audit import AuditAction

ROLES = (
    "planner",
    "worker",
    "validator",
    "delivery",
    "recorder",
    "monitor",
    "guardian",
    "autoscaler",
    "gateway",
    "operator",
    "submitter",
    "viewer",
    "admin",
    "system",
)
# The role in the servers' system account, not Omoi's: it sees what the servers say about
# themselves (a refused connection, on any node), and nothing of Omoi's traffic.
SYSTEM_ROLE = "system"
SYSTEM_ACCOUNT = "SYS"
# The agent processes, each running as its own role.
AGENT_ROLES = (
    "planner", "worker", "validator", "delivery", "recorder", "monitor", "guardian", "autoscaler",
)  # fmt: skip

# Every stream Omoi owns, for the roles that provision and administer them.
STREAMS = (
    *c.MESSAGE_STREAMS,
    c.kv_stream(c.TICKETS_BUCKET),
    c.kv_stream(c.TASKS_BUCKET),
    c.kv_stream(c.HEARTBEATS_BUCKET),
    c.kv_stream(c.LOCKS_BUCKET),
    c.kv_stream(c.TOKENS_BUCKET),
    c.kv_stream(c.INTERVENTIONS_BUCKET),
    c.kv_stream(c.QUARANTINE_BUCKET),
    c.kv_stream(c.PARTITIONS_BUCKET),
    c.obj_stream(c.WORKSPACES_BUCKET),
)
STATE_BUCKETS = (c.TICKETS_BUCKET, c.TASKS_BUCKET, c.HEARTBEATS_BUCKET)
_API = "$JS.API"
# Flow-control replies of ordered consumers (KV watches, event follows, object reads).
_FLOW_CONTROL = "$JS.FC.>"
_EXTERNAL_INBOX = "_INBOX.>"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()
    # Whether the role answers requests (may publish to the reply subject it was given,
    # once, within `RESPONSE_WINDOW`: nats-server's `allow_responses`).
    responds: bool = False
    # The roles whose requests it answers: it may publish into their inboxes (and into
    # `_INBOX.`, where people's tools take theirs).
    replies_to: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)


# How long a role that `responds` may answer a request it received. nats-server keeps the
# reply subject of every message delivered to such a client (a JetStream delivery has one,
# its ack subject) and, past 4096 kept, sweeps them all on every delivery until some have
# expired: at its default of two minutes that cost the planner 5-10 % of its throughput.
# One second keeps a worker's few hundred deliveries a second far below that; roles taking
# thousands (planner, recorder) publish into the requesters' inboxes instead (`replies_to`).
RESPONSE_WINDOW = "1s"


def inbox_prefix(role: str) -> str:
    """Where a role's processes take their reply inboxes."""
    return f"_INBOX_{role}"


def _reads(*buckets: str) -> tuple[str, ...]:
    out: list[str] = []
    for bucket in buckets:
        stream = c.kv_stream(bucket)
        out += [
            f"{_API}.STREAM.INFO.{stream}",
            f"{_API}.STREAM.MSG.GET.{stream}",
            f"{_API}.DIRECT.GET.{stream}",
            f"{_API}.DIRECT.GET.{stream}.>",
        ]
    return tuple(out)


def _writes(*buckets: str) -> tuple[str, ...]:
    return tuple(f"$KV.{bucket}.>" for bucket in buckets)


def _watches(*streams: str) -> tuple[str, ...]:
    # Ordered consumers are ephemeral: the bare create subject admits no durable name,
    # so a watcher cannot take over or reconfigure a durable consumer through it.
    return (*(f"{_API}.CONSUMER.CREATE.{s}" for s in streams), _FLOW_CONTROL)


def _pulls(stream: str, *durables: str, create: bool = False) -> tuple[str, ...]:
    out: list[str] = []
    for durable in durables:
        out += [
            f"{_API}.CONSUMER.INFO.{stream}.{durable}",
            f"{_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
        if create:
            out += [
                f"{_API}.CONSUMER.CREATE.{stream}.{durable}",
                f"{_API}.CONSUMER.CREATE.{stream}.{durable}.>",
                f"{_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
                f"{_API}.CONSUMER.DELETE.{stream}.{durable}",
            ]
    return tuple(out)


def _provisions() -> tuple[str, ...]:
    out: list[str] = []
    for stream in STREAMS:
        out += [
            f"{_API}.STREAM.CREATE.{stream}",
            f"{_API}.STREAM.UPDATE.{stream}",
            f"{_API}.STREAM.INFO.{stream}",
            f"{_API}.CONSUMER.INFO.{stream}.*",
            f"{_API}.CONSUMER.CREATE.{stream}.*",
            f"{_API}.CONSUMER.CREATE.{stream}.*.>",
            f"{_API}.CONSUMER.DURABLE.CREATE.{stream}.*",
        ]
    # Consumers of earlier versions are deleted by whoever provisions (and only those).
    out += [f"{_API}.CONSUMER.DELETE.{s}.{d}" for s, d in c.RETIRED_CONSUMERS]
    return tuple(out)


def _events(*types: str) -> tuple[str, ...]:
    return tuple(c.event_subject("*", t) for t in types)


def _workspaces(*, write: bool) -> tuple[str, ...]:
    stream = c.obj_stream(c.WORKSPACES_BUCKET)
    out = [
        f"{_API}.STREAM.INFO.{stream}",
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
        *_watches(stream),
    ]
    if write:
        # A new bundle replaces the old one: its chunks are purged after the new meta.
        out += [f"$O.{c.WORKSPACES_BUCKET}.>", f"{_API}.STREAM.PURGE.{stream}"]
    return tuple(out)


_AGENT_EVENTS = (c.event_subject("_agents", "agent.>"),)
# The monitor's findings and alerts, and what it samples for them: every durable
# consumer's backlog.
_FINDINGS = (
    c.event_subject("_agents", "anomaly.>"),
    c.event_subject("_agents", "alert.>"),
    *(f"{_API}.CONSUMER.LIST.{stream}" for stream in c.MESSAGE_STREAMS),
)


def _telemetry(role: str) -> tuple[str, ...]:
    """Shipping its log lines and spans, under its own role only: a line's or span's role
    is who wrote it."""
    return (c.log_subject(role, ">"), c.span_subject(role, ">"))


def _serves(role: str) -> tuple[str, ...]:
    """Serving the service API as `omoi-<role>`: the control subjects in all three forms
    (every service, by name, by name and id) and the role's status endpoints."""
    name = c.service_name(role)
    forms = ((), (name,), (name, "*"))
    control = (c.service_subject(verb, *form) for verb in c.SERVICE_VERBS for form in forms)
    return (*control, c.agent_status_subject(role, "*"))


# Asking it: any service's control subjects, and any agent's status.
_DISCOVERS = (
    *(c.service_subject(verb) for verb in c.SERVICE_VERBS),
    *(c.service_subject(verb, ">") for verb in c.SERVICE_VERBS),
    c.agent_status_subject("*", "*"),
)
# Whom the roles that answer into inboxes (`replies_to`) answer service requests from: the
# roles that discover agents, and admin.
_DISCOVERERS = ("gateway", "operator", "viewer", "admin")
# Every `Bus` binds the state buckets on connect, which reads their configuration only.
_BIND = tuple(f"{_API}.STREAM.INFO.{c.kv_stream(b)}" for b in STATE_BUCKETS)
_TEAM = (c.AGENT_INBOXES, c.TICKET_CHANNELS, c.CAPABILITY_QUESTIONS)
_HEARTBEAT = (*_reads(c.HEARTBEATS_BUCKET), *_writes(c.HEARTBEATS_BUCKET))
# Plain submissions, and trusted ones, which may carry commands and local repositories
# (docs/security.md, "Rights"): the subject a ticket arrives on is its rights.
_SUBMIT = (c.SUBMIT_SUBJECT,)
_SUBMIT_TRUSTED = (c.SUBMIT_SUBJECT, c.TRUSTED_SUBMIT_SUBJECT)
_COMMANDS = ("omoi.commands.>",)
# The guardian's book, which operators read (`omoi guardian list`) and ask it to change.
_GUARDIAN_BOOK = _reads(c.INTERVENTIONS_BUCKET, c.QUARANTINE_BUCKET)
_GUARDIAN_ASK = (*_GUARDIAN_BOOK, *c.GUARDIAN_SUBJECTS)
# Audit entries: appended by who decides an outcome (docs/security.md, "Audit"). The
# stream denies deletes and purges, so none of these can take one back.
_AUDIT = (c.AUDIT_SUBJECTS,)
# The gateway's API tokens: read (a watched copy) and written (sign-in links are used up,
# admins make and revoke tokens over HTTP); the operator makes and revokes them (CLI).
_TOKENS = (
    *_reads(c.TOKENS_BUCKET),
    *_writes(c.TOKENS_BUCKET),
    *_watches(c.kv_stream(c.TOKENS_BUCKET)),
)
_READ_ONLY_API = (
    f"{_API}.INFO",
    f"{_API}.STREAM.NAMES",
    f"{_API}.STREAM.LIST",
    f"{_API}.STREAM.INFO.*",
    f"{_API}.CONSUMER.NAMES.*",
    f"{_API}.CONSUMER.LIST.*",
    f"{_API}.CONSUMER.INFO.*.*",
)


def _table() -> dict[str, Permissions]:
    def own(role: str, *more: str) -> tuple[str, ...]:
        return (f"{inbox_prefix(role)}.>", *more)

    table = {
        "planner": Permissions(
            publish=(
                *_provisions(),
                *_reads(*STATE_BUCKETS),
                *_writes(c.TICKETS_BUCKET, c.TASKS_BUCKET, c.HEARTBEATS_BUCKET),
                *_watches(c.kv_stream(c.TICKETS_BUCKET), c.kv_stream(c.TASKS_BUCKET)),
                *_pulls(c.INTAKE_STREAM, c.INTAKE_CONSUMER),
                *_pulls(c.PLANNER_STREAM, *c.PLANNER_EVENTS_CONSUMERS),
                # Which partitions it owns (bus/ownership.py).
                *_reads(c.PARTITIONS_BUCKET),
                *_writes(c.PARTITIONS_BUCKET),
                c.TASKS_SUBJECTS,
                c.GATES_SUBJECTS,
                c.DELIVERIES_SUBJECTS,
                *_events(
                    "ticket.>",
                    "task.queued",
                    "task.assigned",
                    "task.requeued",
                    "task.cancelled",
                    "task.skipped",
                    # A split over something that is no list fails without running.
                    "task.failed",
                    "gate.requested",
                    "delivery.requested",
                    "discovery.accepted",
                    "discovery.rejected",
                    "discovery.held",
                ),
                *_AGENT_EVENTS,
                *_telemetry("planner"),
                c.dlq_subject("intake"),
                c.dlq_subject("events"),
                f"{c.CONTROL_CANCEL_PREFIX}.>",
                *_AUDIT,
            ),
            subscribe=own("planner", *c.INTAKE_SUBJECTS, *_COMMANDS, *_serves("planner")),
            # Its answers to intake requests, commands and service requests. Not
            # `allow_responses`: see RESPONSE_WINDOW.
            replies_to=("gateway", "operator", "submitter", *_DISCOVERERS),
            notes="the only writer of omoi_tickets; dispatches tasks and gate requests",
        ),
        "worker": Permissions(
            publish=(
                *_reads(c.TICKETS_BUCKET, c.TASKS_BUCKET),
                *_HEARTBEAT,
                # Claims: a worker marks the task it runs as running, and its outcome.
                *_writes(c.TASKS_BUCKET),
                # Whether the guardian quarantined it (it then takes no new task).
                *_reads(c.QUARANTINE_BUCKET),
                # Resource locks of the tasks it runs (leases, fencing tokens).
                *_reads(c.LOCKS_BUCKET),
                *_writes(c.LOCKS_BUCKET),
                f"{_API}.STREAM.INFO.{c.TASKS_STREAM}",
                f"{_API}.CONSUMER.INFO.{c.TASKS_STREAM}.*",
                f"{_API}.CONSUMER.CREATE.{c.TASKS_STREAM}.*.>",
                f"{_API}.CONSUMER.DURABLE.CREATE.{c.TASKS_STREAM}.*",
                f"{_API}.CONSUMER.MSG.NEXT.{c.TASKS_STREAM}.*",
                f"$JS.ACK.{c.TASKS_STREAM}.>",
                *_events(
                    "task.started",
                    "task.progress",
                    "task.retrying",
                    "task.succeeded",
                    "task.failed",
                    "task.handed_off",
                    "merge.conflicted",
                    "message.sent",
                    "memory.recorded",
                    "discovery.reported",
                ),
                # What similar past tasks taught, before a coding task starts.
                c.MEMORY_SEARCH,
                # Its coding agents' GitHub, Jira and Supabase tools, made by delivery.
                c.INTEGRATIONS,
                *_AGENT_EVENTS,
                *_telemetry("worker"),
                *_workspaces(write=True),
                c.dlq_subject("tasks"),
                # Agents' messages and questions (answered as responses, below).
                *_TEAM,
            ),
            subscribe=own("worker", f"{c.CONTROL_CANCEL_PREFIX}.>", *_TEAM, *_serves("worker")),
            # Answers to what it was asked: service requests, other workers' questions.
            responds=True,
            notes="publishes only task outcomes, its claims and its heartbeat",
        ),
        "validator": Permissions(
            publish=(
                *_reads(c.TICKETS_BUCKET, c.TASKS_BUCKET),
                *_HEARTBEAT,
                *_pulls(c.GATES_STREAM, c.VALIDATOR_CONSUMER),
                *_events("gate.passed", "gate.failed"),
                *_AGENT_EVENTS,
                *_telemetry("validator"),
                *_workspaces(write=False),
                c.dlq_subject("gates"),
            ),
            subscribe=own("validator", *_serves("validator")),
            responds=True,
            notes="the only role that publishes gate verdicts",
        ),
        "delivery": Permissions(
            publish=(
                *_reads(c.TICKETS_BUCKET, c.TASKS_BUCKET),
                *_HEARTBEAT,
                *_pulls(c.DELIVERIES_STREAM, c.DELIVERY_CONSUMER),
                # Its tracker's own event consumer (Jira comments and transitions).
                *_pulls(c.EVENTS_STREAM, c.TRACKER_CONSUMER, create=True),
                c.dlq_subject("events"),
                *_events("delivery.succeeded", "delivery.failed", "integration.called"),
                *_AGENT_EVENTS,
                *_telemetry("delivery"),
                *_workspaces(write=False),
                c.dlq_subject("deliveries"),
            ),
            subscribe=own("delivery", c.INTEGRATIONS, *_serves("delivery")),
            responds=True,
            # Integration calls take longer than RESPONSE_WINDOW: answered into the
            # workers' inboxes.
            replies_to=("worker",),
            notes="the only role that reports deliveries; holds the credentials that push "
            "to repositories and open pull requests",
        ),
        "recorder": Permissions(
            publish=(
                *_HEARTBEAT,
                f"{_API}.STREAM.INFO.{c.EVENTS_STREAM}",
                f"{_API}.STREAM.INFO.{c.DLQ_STREAM}",
                f"{_API}.STREAM.INFO.{c.AUDIT_STREAM}",
                # It recreates its own consumers at their ack floor after a crash.
                *_pulls(c.EVENTS_STREAM, c.RECORDER_EVENTS_CONSUMER, create=True),
                *_pulls(c.DLQ_STREAM, c.RECORDER_DLQ_CONSUMER, create=True),
                *_pulls(c.AUDIT_STREAM, c.RECORDER_AUDIT_CONSUMER, create=True),
                f"{_API}.STREAM.INFO.{c.LOGS_STREAM}",
                *_pulls(c.LOGS_STREAM, c.RECORDER_LOGS_CONSUMER, create=True),
                f"{_API}.STREAM.INFO.{c.SPANS_STREAM}",
                *_pulls(c.SPANS_STREAM, c.RECORDER_SPANS_CONSUMER, create=True),
                # What it cannot record is kept as a dead letter.
                c.dlq_subject("events"),
                c.dlq_subject("audit"),
                c.dlq_subject("logs"),
                c.dlq_subject("spans"),
                *_AGENT_EVENTS,
                *_telemetry("recorder"),
                # Memory: forgetting is audited and announced.
                c.audit_subject(AuditAction.MEMORY_FORGET),
                c.event_subject("_agents", "memory.forgotten"),
            ),
            subscribe=own("recorder", c.MEMORY_SEARCH, c.MEMORY_FORGET, *_serves("recorder")),
            # Its answers to service requests and memory searches. It takes every event,
            # far too many for `allow_responses` (see RESPONSE_WINDOW).
            replies_to=(*_DISCOVERERS, "worker"),
            notes="reads every event, dead letter, audit entry, log line and span into the "
            "store; changes no state",
        ),
        "monitor": Permissions(
            publish=(
                *_HEARTBEAT,
                *_reads(c.TICKETS_BUCKET, c.TASKS_BUCKET),
                *_AGENT_EVENTS,
                *_FINDINGS,
                # What waits longest in each task lane (starved tasks).
                f"{_API}.STREAM.MSG.GET.{c.TASKS_STREAM}",
                # The watchdog: asking each host's supervisor for its children, and
                # for a wedged one's restart.
                *(c.supervisor_subject("*", verb) for verb in c.WATCHDOG_VERBS),
                *_telemetry("monitor"),
                # The connections the servers refused, which it hears as `system`.
                c.audit_subject(AuditAction.AUTH_FAILURE),
            ),
            subscribe=own("monitor", *_serves("monitor")),
            responds=True,
            notes="reads heartbeats and backlogs, reports stale agents, anomalies and refused "
            "connections",
        ),
        "guardian": Permissions(
            publish=(
                *_HEARTBEAT,
                *_reads(c.TICKETS_BUCKET, c.TASKS_BUCKET),
                *_pulls(c.EVENTS_STREAM, c.GUARDIAN_CONSUMER),
                *_reads(c.INTERVENTIONS_BUCKET, c.QUARANTINE_BUCKET),
                *_writes(c.INTERVENTIONS_BUCKET, c.QUARANTINE_BUCKET),
                # Holding a crash-looping child, and releasing it, on any host.
                *(c.supervisor_subject("*", verb) for verb in c.HOLD_VERBS),
                # Its interventions through the planner, like an operator's.
                c.CMD_TICKET_PAUSE,
                c.CMD_TICKET_RESUME,
                c.CMD_TICKET_PRIORITY,
                c.CMD_TASK_CANCEL,
                # Approving a held discovery within its limit.
                c.CMD_TICKET_DISCOVERY,
                c.event_subject("_agents", "guardian.>"),
                # Steering a stuck agent: a message into its worker's inbox.
                c.AGENT_INBOXES,
                *_AGENT_EVENTS,
                *_telemetry("guardian"),
                c.dlq_subject("events"),
                c.audit_subject(AuditAction.INTERVENTION),
                c.audit_subject(AuditAction.INTERVENTION_APPROVE),
                c.audit_subject(AuditAction.INTERVENTION_UNDO),
            ),
            subscribe=own("guardian", *c.GUARDIAN_SUBJECTS, *_serves("guardian")),
            responds=True,
            notes="quarantines workers, pauses tickets, cancels poison tasks; records each "
            "intervention and proposes what exceeds its authority",
        ),
        "autoscaler": Permissions(
            publish=(
                *_HEARTBEAT,
                *_AGENT_EVENTS,
                c.event_subject("_agents", "autoscaler.>"),
                # The task consumers' backlogs, and the oldest task each has waiting.
                f"{_API}.CONSUMER.LIST.{c.TASKS_STREAM}",
                f"{_API}.STREAM.MSG.GET.{c.TASKS_STREAM}",
                # More or fewer of a pool's workers, from the host's supervisor.
                c.supervisor_subject("*", c.SCALE_VERB),
                *_telemetry("autoscaler"),
            ),
            subscribe=own("autoscaler", *_serves("autoscaler")),
            responds=True,
            notes="reads the task consumers' backlogs; asks supervisors to run more or fewer "
            "workers of a pool",
        ),
        "gateway": Permissions(
            publish=(
                *_reads(*STATE_BUCKETS, c.LOCKS_BUCKET),
                *_READ_ONLY_API,
                *_watches(
                    c.EVENTS_STREAM, c.DLQ_STREAM, c.LOGS_STREAM, *map(c.kv_stream, STATE_BUCKETS)
                ),
                *_SUBMIT_TRUSTED,
                *_COMMANDS,
                *_TOKENS,
                *_AUDIT,
                *_DISCOVERS,
                # Its spans (HTTP requests, submissions); it ships no log lines.
                c.span_subject("gateway", ">"),
                # Webhook deliveries it cannot read, kept with the reason.
                c.dlq_subject("webhooks"),
            ),
            subscribe=own("gateway"),
            notes="HTTP in front of the bus: its tokens' roles limit what each caller does",
        ),
        "operator": Permissions(
            publish=(
                *_reads(*STATE_BUCKETS, c.LOCKS_BUCKET),
                *_READ_ONLY_API,
                *_watches(
                    c.EVENTS_STREAM, c.DLQ_STREAM, c.LOGS_STREAM, *map(c.kv_stream, STATE_BUCKETS)
                ),
                *_SUBMIT_TRUSTED,
                *_COMMANDS,
                *_TOKENS,
                *_AUDIT,
                *_DISCOVERS,
                *_GUARDIAN_ASK,
                # `omoi memory search` and `forget`.
                c.MEMORY_SEARCH,
                c.MEMORY_FORGET,
                # `omoi profile` of an agent on another host, through its supervisor.
                c.supervisor_subject("*", "profile"),
            ),
            subscribe=own("operator", _EXTERNAL_INBOX),
            notes="the CLI: submits, steers, reads and makes API tokens; changes no state itself",
        ),
        "submitter": Permissions(
            publish=_SUBMIT,
            subscribe=own("submitter", _EXTERNAL_INBOX),
            notes="publishes only on intake and reads its replies",
        ),
        "viewer": Permissions(
            publish=(
                *_reads(*STATE_BUCKETS, c.LOCKS_BUCKET),
                *_READ_ONLY_API,
                *_watches(
                    c.EVENTS_STREAM, c.DLQ_STREAM, c.LOGS_STREAM, *map(c.kv_stream, STATE_BUCKETS)
                ),
                *_DISCOVERS,
                *_GUARDIAN_BOOK,
                c.MEMORY_SEARCH,
            ),
            subscribe=own("viewer", _EXTERNAL_INBOX, c.EVENTS_SUBJECTS, c.LOGS_SUBJECTS),
            notes="reads state and follows events and logs",
        ),
        "admin": Permissions(
            publish=(">",),
            subscribe=(">",),
            responds=True,
            notes="break glass: provisioning, backup and restore, repairs by hand",
        ),
        "system": Permissions(
            publish=(),
            deny_publish=(">",),
            subscribe=own("system", c.SERVER_AUTH_ERRORS),
            notes="the servers' own account: hears the connections any node refused, nothing else",
        ),
    }
    return {
        role: dataclasses.replace(
            p, publish=_unique((*(() if role == SYSTEM_ROLE else _BIND), *p.publish, *_inboxes(p)))
        )
        for role, p in table.items()
    }


def _inboxes(p: Permissions) -> tuple[str, ...]:
    if not p.replies_to:
        return ()
    return (*(f"{inbox_prefix(r)}.>" for r in p.replies_to), _EXTERNAL_INBOX)


def _unique(subjects: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))


PERMISSIONS: dict[str, Permissions] = _table()

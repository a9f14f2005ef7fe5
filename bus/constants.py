"""Every subject, stream, consumer, bucket and header name Omoi uses, in one place.

These names are the public debugging surface (`nats sub`, `nats kv get`), so they are
documented in the README and must not change casually.
"""

from __future__ import annotations

# Intake: a core publish here is captured by the intake stream, so it is durable even
# when no planner is running. A request also gets a JSON reply from the planner.
SUBMIT_SUBJECT = "omoi.tickets.submit"
# The same, with the rights a plain submission lacks: shell commands, gate commands, a
# local repository (agents/planner/rights.py). The CLI uses it; who else may publish on
# it is a matter of NATS permissions.
TRUSTED_SUBMIT_SUBJECT = "omoi.tickets.submit.trusted"
INTAKE_SUBJECTS = (SUBMIT_SUBJECT, TRUSTED_SUBMIT_SUBJECT)
INTAKE_STREAM = "OMOI_INTAKE"
INTAKE_CONSUMER = "planner-intake"
# Planners answer intake requests in this queue group, so exactly one replies.
PLANNER_QUEUE = "omoi-planner"

# Work: one work-queue stream, one durable pull consumer per (phase, capability). Each
# dispatch is on its task's own subject, `omoi.tasks.<phase>.<capability>.<ticket>.<task>`,
# so whether a task's message is in the stream is one look at the stream's subjects.
TASKS_STREAM = "OMOI_TASKS"
TASKS_SUBJECTS = "omoi.tasks.>"

# Events: `omoi.events.<ticket_id>.<type>`, retained by age.
EVENTS_STREAM = "OMOI_EVENTS"
EVENTS_SUBJECTS = "omoi.events.>"
# The outcomes the planner reacts to.
PLANNER_EVENT_FILTERS = (
    "omoi.events.*.task.succeeded",
    "omoi.events.*.task.failed",
    "omoi.events.*.task.cancelled",
    "omoi.events.*.task.handed_off",
    "omoi.events.*.task.retrying",
    "omoi.events.*.gate.passed",
    "omoi.events.*.gate.failed",
    "omoi.events.*.delivery.succeeded",
    "omoi.events.*.delivery.failed",
    "omoi.events.*.discovery.reported",
)

# Planner partitions. The server copies the outcomes above from OMOI_EVENTS into
# OMOI_PLANNER as `omoi.planner.<partition>.<ticket>.<type>` (a stream source with a subject
# transform), so each ticket's outcomes land in one of PLANNER_PARTITIONS partitions, each
# read by its own durable consumer. A partition is owned by one planner at a time (leases
# in the partitions bucket, bus/ownership.py); OMOI_EVENTS' own subjects stay as they are.
PLANNER_STREAM = "OMOI_PLANNER"
PLANNER_SUBJECTS_PREFIX = "omoi.planner"
# More planners than partitions add no throughput. Changing it re-partitions the copy.
PLANNER_PARTITIONS = 8
PLANNER_GROUP = "planner"


def planner_partition(ticket_id: str) -> int:
    """The partition of a ticket: what the server's `partition(n, 1)` transform gives its
    subject (FNV-1a, 32 bits, of the ticket id token, modulo the partition count)."""
    h = 0x811C9DC5
    for byte in ticket_id.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % PLANNER_PARTITIONS


def planner_events_consumer(partition: int) -> str:
    return f"planner-events-{partition}"


PLANNER_EVENTS_CONSUMERS = tuple(planner_events_consumer(p) for p in range(PLANNER_PARTITIONS))


def planner_partition_filter(partition: int) -> str:
    return f"{PLANNER_SUBJECTS_PREFIX}.{partition}.>"


def planner_subject_transform(event_filter: str) -> tuple[str, str]:
    """(src, dest) of the transform copying `omoi.events.*.<type>` into its partition."""
    kind = event_filter.removeprefix("omoi.events.*.")
    dest = (
        f"{PLANNER_SUBJECTS_PREFIX}.{{{{partition({PLANNER_PARTITIONS},1)}}}}"
        f".{{{{wildcard(1)}}}}.{kind}"
    )
    return event_filter, dest


# Consumers of earlier versions, deleted when provisioning finds them: (stream, durable).
RETIRED_CONSUMERS = (
    # Every planner's one consumer, before planners shared the work by partition.
    (EVENTS_STREAM, "planner-events"),
)

# Phase gates: `omoi.gates.<phase>.<ticket>` requests, a work queue consumed by validators.
GATES_STREAM = "OMOI_GATES"
GATES_SUBJECTS = "omoi.gates.>"
VALIDATOR_CONSUMER = "validator"

# Delivery: `omoi.deliveries.<ticket>` requests to push a finished ticket's branch (and
# open its pull request), a work queue consumed by the delivery agent.
DELIVERIES_STREAM = "OMOI_DELIVERIES"
DELIVERIES_SUBJECTS = "omoi.deliveries.>"
DELIVERY_CONSUMER = "delivery"
# What the delivery agent tells an issue tracker (Jira) about the tickets from it: made by
# the agent itself when a tracker is configured, reading only new events.
TRACKER_CONSUMER = "delivery-tracker"
TRACKER_EVENT_FILTERS = tuple(
    f"omoi.events.*.{kind}"
    for kind in (
        "ticket.created", "ticket.phase_changed", "delivery.succeeded", "delivery.failed",
        "ticket.blocked", "ticket.done", "ticket.failed", "ticket.cancelled",
    )
)  # fmt: skip

# The recorder copies every event, and every dead letter, into the analytics store.
RECORDER_EVENTS_CONSUMER = "recorder"
RECORDER_DLQ_CONSUMER = "recorder-dlq"

# Dead letters: `omoi.dlq.<origin>`, original bytes plus the reason in headers.
DLQ_STREAM = "OMOI_DLQ"
DLQ_SUBJECTS = "omoi.dlq.>"

# Audit: `omoi.audit.<action>`, append-only (no message may be deleted or purged).
AUDIT_STREAM = "OMOI_AUDIT"
AUDIT_SUBJECTS = "omoi.audit.>"
# Where every server of a cluster announces a connection it refused (its system account).
SERVER_AUTH_ERRORS = "$SYS.SERVER.*.CLIENT.AUTH.ERR"
RECORDER_AUDIT_CONSUMER = "recorder-audit"

# Agents' log lines: `omoi.logs.<role>.<agent-id>`, one JSON object each, kept a few days
# (the store keeps them longer, as the `logs` view).
LOGS_STREAM = "OMOI_LOGS"
LOGS_SUBJECTS = "omoi.logs.>"
RECORDER_LOGS_CONSUMER = "recorder-logs"

# Agents' finished spans: `omoi.spans.<role>.<agent-id>`, one JSON object each
# (schemas.span.SpanLine), kept like log lines and stored as the `spans` view.
SPANS_STREAM = "OMOI_SPANS"
SPANS_SUBJECTS = "omoi.spans.>"
RECORDER_SPANS_CONSUMER = "recorder-spans"


# Omoi's message streams (its buckets and object stores are streams too, named apart).
MESSAGE_STREAMS = (
    INTAKE_STREAM,
    TASKS_STREAM,
    GATES_STREAM,
    DELIVERIES_STREAM,
    EVENTS_STREAM,
    PLANNER_STREAM,
    DLQ_STREAM,
    AUDIT_STREAM,
    LOGS_STREAM,
    SPANS_STREAM,
)


def log_subject(role: str, agent_id: str) -> str:
    return f"omoi.logs.{role}.{agent_id}"


def span_subject(role: str, agent_id: str) -> str:
    return f"omoi.spans.{role}.{agent_id}"


# Operator commands, request/reply, answered by a planner.
CMD_TICKET_CANCEL = "omoi.commands.ticket.cancel"
CMD_TICKET_MOVE = "omoi.commands.ticket.move"
CMD_TASK_CANCEL = "omoi.commands.task.cancel"
# Pausing a ticket stops it moving on (nothing new is dispatched) until it is resumed.
CMD_TICKET_PAUSE = "omoi.commands.ticket.pause"
CMD_TICKET_RESUME = "omoi.commands.ticket.resume"
# A ticket's priority: the lane its tasks wait in from then on (queued ones move).
CMD_TICKET_PRIORITY = "omoi.commands.ticket.priority"
# Deliver a ticket again (its push or pull request failed).
CMD_TICKET_DELIVER = "omoi.commands.ticket.deliver"
# What happened to a ticket's pull request (the gateway, from GitHub's webhooks).
CMD_TICKET_PULL_REQUEST = "omoi.commands.ticket.pull_request"
# An operator's answer to a held discovery (approve: it becomes a task).
CMD_TICKET_DISCOVERY = "omoi.commands.ticket.discovery"

# The guardian (agents/guardian): it reads findings and outcomes from the events stream
# and answers operators approving its proposals or undoing what it did (request/reply).
GUARDIAN_CONSUMER = "guardian"
GUARDIAN_EVENT_FILTERS = (
    "omoi.events._agents.anomaly.detected",
    "omoi.events._agents.agent.crash_looping",
    "omoi.events.*.task.retrying",
    "omoi.events.*.task.failed",
    "omoi.events.*.task.progress",
    "omoi.events.*.discovery.held",
)
GUARDIAN_APPROVE = "omoi.guardian.approve"
GUARDIAN_UNDO = "omoi.guardian.undo"
GUARDIAN_SUBJECTS = (GUARDIAN_APPROVE, GUARDIAN_UNDO)

# Core (non-persisted) broadcast telling whichever worker runs a task to stop it now.
CONTROL_CANCEL_PREFIX = "omoi.control.cancel"
# Agents' messages: an inbox per agent, a channel per ticket, questions per capability
# (answered by one agent of it: a queue group).
AGENT_INBOXES = "omoi.agents.*.inbox"
TICKET_CHANNELS = "omoi.channels.*"
CAPABILITY_QUESTIONS = "omoi.ask.*"


# Memory: past tasks' lessons, searched (workers before a coding task, people) and
# forgotten (operators), request/reply, answered by a recorder.
MEMORY_SEARCH = "omoi.memory.search"
MEMORY_FORGET = "omoi.memory.forget"
MEMORY_QUEUE = "omoi-memory"

# Integration calls (schemas/integration.py): a coding agent's GitHub, Jira and Supabase
# tools, through its worker, answered by a delivery agent (which holds the credentials).
INTEGRATIONS = "omoi.integrations.>"
INTEGRATIONS_QUEUE = "omoi-integrations"


def integration_subject(tool: str, op: str) -> str:
    return f"omoi.integrations.{tool}.{op}"


def agent_inbox(agent_id: str) -> str:
    return f"omoi.agents.{agent_id}.inbox"


def ticket_channel(ticket_id: str) -> str:
    return f"omoi.channels.{ticket_id}"


def capability_questions(capability: str) -> str:
    return f"omoi.ask.{capability}"


# The NATS service API (`nats micro ls`): every agent is the micro service `omoi-<role>`,
# answering `$SRV.<verb>`, `$SRV.<verb>.omoi-<role>` and `$SRV.<verb>.omoi-<role>.<id>`, with
# one endpoint, `status`, on `omoi.agents.<role>.<agent_id>.status`.
SERVICE_API_PREFIX = "$SRV"
SERVICE_VERBS = ("PING", "INFO", "STATS")
SERVICE_NAME_PREFIX = "omoi-"
AGENT_STATUS_PREFIX = "omoi.agents"
# Each host's supervisor (`omoi up`) answers on omoi.supervisors.<host>.<verb>: the
# monitor's watchdog asks for its children's status and for restarts.
SUPERVISORS_PREFIX = "omoi.supervisors"
SUPERVISOR_VERBS = ("status", "restart", "hold", "release", "profile")
# What the watchdog asks; holding and releasing a child is the guardian's.
WATCHDOG_VERBS = ("status", "restart")
HOLD_VERBS = ("hold", "release")
# The autoscaler asking a supervisor how many of a pool's workers it runs, and to run more
# or fewer.
SCALE_VERB = "scale"

# KV buckets.
TICKETS_BUCKET = "omoi_tickets"
TASKS_BUCKET = "omoi_tasks"
HEARTBEATS_BUCKET = "omoi_heartbeats"
LOCKS_BUCKET = "omoi_locks"
# The guardian's interventions by id (proposed, applied, undone), and the workers it
# quarantined by agent id: a quarantined worker takes no new task until the key is gone.
INTERVENTIONS_BUCKET = "omoi_interventions"
QUARANTINE_BUCKET = "omoi_quarantine"
# HTTP API tokens by id (their hashes, never the tokens); revoking deletes the key.
TOKENS_BUCKET = "omoi_tokens"
# Who owns which partition of a group (the planners'): `<group>.owners.<partition>` and
# `<group>.members.<agent_id>`, each holding a PartitionLease that lives as long as the
# bucket's TTL unless renewed.
PARTITIONS_BUCKET = "omoi_partitions"

# Object stores. A ticket's git workspace travels between machines as a bundle of its
# history, `<ticket_id>.bundle` in `omoi_workspaces`, with its head commit and branch in
# the object's headers (`nats object info omoi_workspaces T-1.bundle` shows them).
WORKSPACES_BUCKET = "omoi_workspaces"
HDR_WORKSPACE_HEAD = "Omoi-Head"
HDR_WORKSPACE_BRANCH = "Omoi-Branch"


def consumer_next_subject(stream: str, durable: str) -> str:
    """Where a pull request for the next messages of a durable consumer goes."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"


KV_STREAM_PREFIX = "KV_"
OBJ_STREAM_PREFIX = "OBJ_"
# Every stream Omoi owns starts with one of these: its own, its KV buckets' and its object
# stores'. Backups take all of them, so a new stream or bucket is covered without a change.
OMOI_STREAM_PREFIXES = ("OMOI_", f"{KV_STREAM_PREFIX}omoi_", f"{OBJ_STREAM_PREFIX}omoi_")


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket (what `nats stream ls` shows)."""
    return f"{KV_STREAM_PREFIX}{bucket}"


def obj_stream(bucket: str) -> str:
    """The stream behind an object store."""
    return f"{OBJ_STREAM_PREFIX}{bucket}"


def workspace_object(ticket_id: str) -> str:
    """The object holding a ticket's workspace (ticket ids are safe object names)."""
    return f"{ticket_id}.bundle"


# Headers.
HDR_MSG_ID = "Nats-Msg-Id"
HDR_REASON = "Omoi-Reason"
HDR_ERROR_CATEGORY = "Omoi-Error-Category"
HDR_ORIGIN_SUBJECT = "Omoi-Origin-Subject"
HDR_ORIGIN_SEQ = "Omoi-Origin-Seq"


# Task lanes. A dispatch's subject names its ticket's priority; each (phase, capability)
# has two consumers, and a worker takes from the urgent one first. Within a lane it is
# first come, first served. Two lanes, not four: every durable consumer is a replicated
# group on a cluster, and "ahead of the rest" is what priority is asked for.
URGENT_LANE = "urgent"
NORMAL_LANE = "normal"
# Made in this order: a consumer from before lanes read every lane, and a work queue takes
# no overlapping consumers, so the normal one is narrowed before the urgent one is made.
LANES = (NORMAL_LANE, URGENT_LANE)
LANE_PRIORITIES = {URGENT_LANE: ("critical", "high"), NORMAL_LANE: ("normal", "low")}


def lane_of(priority: str) -> str:
    return URGENT_LANE if priority in LANE_PRIORITIES[URGENT_LANE] else NORMAL_LANE


def lane_rank(lane: str) -> int:
    """Workers take from the highest rank first (`bus.consumer.Source.rank`)."""
    return LANES.index(lane)


def task_subject(
    phase: str, capability: str, ticket_id: str, task: str, priority: str = "normal"
) -> str:
    return f"omoi.tasks.{phase}.{capability}.{priority}.{ticket_id}.{task}"


def task_filters(phase: str, capability: str, lane: str = NORMAL_LANE) -> list[str]:
    """What the (phase, capability) consumer of `lane` reads."""
    return [f"omoi.tasks.{phase}.{capability}.{p}.>" for p in LANE_PRIORITIES[lane]]


def task_consumer(phase: str, capability: str, lane: str = NORMAL_LANE) -> str:
    suffix = "" if lane == NORMAL_LANE else f"-{lane}"
    return f"tasks-{phase}-{capability}{suffix}"


def event_subject(ticket_id: str, event_type: str) -> str:
    return f"omoi.events.{ticket_id}.{event_type}"


def ticket_events_filter(ticket_id: str) -> str:
    return f"omoi.events.{ticket_id}.>"


def gate_subject(phase: str, ticket_id: str) -> str:
    return f"omoi.gates.{phase}.{ticket_id}"


def delivery_subject(ticket_id: str) -> str:
    return f"omoi.deliveries.{ticket_id}"


def dlq_subject(origin: str) -> str:
    return f"omoi.dlq.{origin}"


def audit_subject(action: str) -> str:
    return f"omoi.audit.{action}"


def control_cancel_subject(ticket_id: str, task: str) -> str:
    return f"{CONTROL_CANCEL_PREFIX}.{ticket_id}.{task}"


def service_name(role: str) -> str:
    return f"{SERVICE_NAME_PREFIX}{role}"


def service_subject(verb: str, name: str | None = None, service_id: str | None = None) -> str:
    """A control subject of the service API: all services, those named `name`, or one."""
    tokens = [SERVICE_API_PREFIX, verb, *(t for t in (name, service_id) if t is not None)]
    return ".".join(tokens)


def host_token(hostname: str) -> str:
    """A host name as one subject token (dots and wildcards are not allowed in one)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in hostname)
    return cleaned[:63] or "host"


def supervisor_subject(host: str, verb: str) -> str:
    return f"{SUPERVISORS_PREFIX}.{host}.{verb}"


def agent_status_subject(role: str, agent_id: str) -> str:
    return f"{AGENT_STATUS_PREFIX}.{role}.{agent_id}.status"

-- Views over `events`, `dead_letters` and `audit_events` only, so the same script works in
-- the writer's database, in a Reader and in the stock duckdb CLI over the published Parquet
-- files.
--
-- AT is a reserved word in DuckDB 2.0: write "at" (quoted) or qualify it (e.at).
-- Timestamps are TIMESTAMPTZ; durations are DOUBLE milliseconds or seconds, as named.
-- Numbers are pulled out of `data` with TRY_CAST so one malformed event yields NULLs in its
-- row instead of making the whole view fail.

-- Task state changes with their attempt coordinates; progress reports are not changes.
CREATE OR REPLACE VIEW task_events AS
SELECT
    id,
    type,
    ticket_id,
    task,
    agent,
    "at",
    data,
    data->>'phase' AS phase,
    data->>'capability' AS capability,
    coalesce(TRY_CAST(data->>'generation' AS INTEGER), 0) AS generation,
    coalesce(TRY_CAST(data->>'attempt' AS INTEGER), 0) AS attempt
FROM events
WHERE type LIKE 'task.%' AND type <> 'task.progress' AND task IS NOT NULL;

-- One row per ticket. status is the ticket's final status (done, failed, cancelled), else
-- 'running' once created, else 'rejected' for a submission that never became a ticket.
-- phase is where it ended, or where it is now.
CREATE OR REPLACE VIEW tickets AS
WITH created AS (
    SELECT
        ticket_id,
        data->>'title' AS title,
        data->>'workflow' AS workflow,
        data->>'priority' AS priority,
        "at" AS created_at,
        json_array_length(data->'tasks') AS tasks
    FROM events
    WHERE type = 'ticket.created'
    QUALIFY row_number() OVER (PARTITION BY ticket_id ORDER BY "at", id) = 1
),
ended AS (
    SELECT ticket_id, "at" AS finished_at, data->>'status' AS status, data->>'phase' AS phase,
        data->>'reason' AS reason
    FROM events
    WHERE type IN ('ticket.done', 'ticket.failed', 'ticket.cancelled')
    QUALIFY row_number() OVER (PARTITION BY ticket_id ORDER BY "at" DESC, id DESC) = 1
),
moved AS (
    SELECT ticket_id, data->>'to' AS phase
    FROM events
    WHERE type = 'ticket.phase_changed'
    QUALIFY row_number() OVER (PARTITION BY ticket_id ORDER BY "at" DESC, id DESC) = 1
),
ids AS (
    SELECT DISTINCT ticket_id, type = 'ticket.rejected' AS rejected
    FROM events
    WHERE type LIKE 'ticket.%'
),
known AS (
    SELECT ticket_id, bool_and(rejected) AS only_rejected FROM ids GROUP BY ticket_id
)
SELECT
    k.ticket_id AS id,
    c.title,
    c.workflow,
    c.priority,
    c.created_at,
    e.finished_at,
    CASE
        WHEN e.status IS NOT NULL THEN e.status
        WHEN k.only_rejected THEN 'rejected'
        ELSE 'running'
    END AS status,
    coalesce(e.phase, m.phase) AS phase,
    c.tasks,
    e.reason
FROM known k
LEFT JOIN created c USING (ticket_id)
LEFT JOIN ended e USING (ticket_id)
LEFT JOIN moved m USING (ticket_id);

-- The latest state of every task, as the omoi_tasks bucket would show it: a new generation
-- (the ticket moved back to the task's phase) starts over, so attempts, the last error and
-- the worker are those of the latest generation.
CREATE OR REPLACE VIEW tasks AS
WITH latest AS (
    SELECT *
    FROM task_events
    QUALIFY row_number() OVER (
        PARTITION BY ticket_id, task ORDER BY generation DESC, "at" DESC, id DESC
    ) = 1
),
per_generation AS (
    SELECT ticket_id, task, generation, max(attempt) AS attempts
    FROM task_events
    GROUP BY ALL
),
last_error AS (
    SELECT ticket_id, task, generation, data->'error'->>'category' AS error_category,
        data->'error'->>'message' AS error_message
    FROM task_events
    WHERE type IN ('task.retrying', 'task.failed') AND data->'error'->>'category' IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY ticket_id, task, generation ORDER BY "at" DESC, id DESC
    ) = 1
),
last_start AS (
    SELECT ticket_id, task, generation, coalesce(data->>'worker', agent) AS worker
    FROM task_events
    WHERE type = 'task.started'
    QUALIFY row_number() OVER (
        PARTITION BY ticket_id, task, generation ORDER BY "at" DESC, id DESC
    ) = 1
)
SELECT
    l.ticket_id,
    l.task,
    l.phase,
    l.capability,
    CASE l.type
        WHEN 'task.queued' THEN 'queued'
        WHEN 'task.started' THEN 'running'
        WHEN 'task.retrying' THEN 'queued'
        WHEN 'task.requeued' THEN 'queued'
        ELSE replace(l.type, 'task.', '')
    END AS status,
    g.attempts,
    l.generation,
    e.error_category,
    e.error_message,
    s.worker,
    l."at" AS updated_at
FROM latest l
JOIN per_generation g USING (ticket_id, task, generation)
LEFT JOIN last_error e USING (ticket_id, task, generation)
LEFT JOIN last_start s USING (ticket_id, task, generation);

-- One row per attempt: (ticket_id, task, generation, attempt), attempt >= 1.
--
-- queued_at is when the attempt last became ready to run:
--   * attempt 1: the task.queued event. It carries attempt 0, because a task is queued
--     before a worker claims it and the claim is what counts the attempt.
--   * attempt N+1 after a retry: the task.retrying event of attempt N plus its delay_s,
--     i.e. the end of the backoff, when the message is redelivered.
--   * NULL otherwise, e.g. a redelivery after a worker was lost, which has no event.
-- schedule_to_start_ms = started_at - queued_at; run_ms = finished_at - started_at, where
-- finished_at is the time of the attempt's outcome event.
--
-- outcome is the attempt's own result. When it has several outcome events, the attempt's
-- result wins over a later cancel: succeeded > failed > retrying > cancelled (a task
-- cancelled while waiting for its retry keeps outcome 'retrying' on the failed attempt).
-- NULL means still running, or lost with its worker. Tokens and cost are what the attempt
-- reported in its outcome event (data.usage); a cancelled attempt reports none.
CREATE OR REPLACE VIEW task_attempts AS
WITH attempts AS (
    SELECT DISTINCT ticket_id, task, generation, attempt
    FROM task_events
    WHERE attempt >= 1
        AND type IN (
            'task.started', 'task.succeeded', 'task.failed', 'task.retrying', 'task.cancelled'
        )
),
started AS (
    SELECT ticket_id, task, generation, attempt, "at" AS started_at, phase, capability,
        coalesce(data->>'worker', agent) AS worker
    FROM task_events
    WHERE type = 'task.started'
    QUALIFY row_number() OVER (
        PARTITION BY ticket_id, task, generation, attempt ORDER BY "at", id
    ) = 1
),
outcome AS (
    SELECT ticket_id, task, generation, attempt, "at" AS finished_at, phase, capability,
        replace(type, 'task.', '') AS outcome,
        data->'error'->>'category' AS error_category,
        data->'error'->>'message' AS error_message,
        TRY_CAST(data->'usage'->>'prompt_tokens' AS BIGINT) AS prompt_tokens,
        TRY_CAST(data->'usage'->>'completion_tokens' AS BIGINT) AS completion_tokens,
        TRY_CAST(data->'usage'->>'cost_usd' AS DOUBLE) AS cost_usd
    FROM task_events
    WHERE type IN ('task.succeeded', 'task.failed', 'task.retrying', 'task.cancelled')
    QUALIFY row_number() OVER (
        PARTITION BY ticket_id, task, generation, attempt
        ORDER BY CASE type
            WHEN 'task.succeeded' THEN 1
            WHEN 'task.failed' THEN 2
            WHEN 'task.retrying' THEN 3
            ELSE 4
        END, "at"
    ) = 1
),
ready AS (
    SELECT ticket_id, task, generation, attempt + 1 AS attempt, max(ready_at) AS queued_at
    FROM (
        SELECT ticket_id, task, generation, attempt, "at" AS ready_at
        FROM task_events
        WHERE type = 'task.queued'
        UNION ALL
        SELECT ticket_id, task, generation, attempt,
            "at" + to_microseconds(
                CAST(round(coalesce(TRY_CAST(data->>'delay_s' AS DOUBLE), 0) * 1e6) AS BIGINT)
            )
        FROM task_events
        WHERE type = 'task.retrying'
    )
    GROUP BY ALL
)
SELECT
    a.ticket_id,
    a.task,
    a.generation,
    a.attempt,
    coalesce(s.phase, o.phase) AS phase,
    coalesce(s.capability, o.capability) AS capability,
    r.queued_at,
    s.started_at,
    o.finished_at,
    s.worker,
    o.outcome,
    o.error_category,
    o.error_message,
    o.prompt_tokens,
    o.completion_tokens,
    o.cost_usd,
    (epoch_us(s.started_at) - epoch_us(r.queued_at)) / 1000.0 AS schedule_to_start_ms,
    (epoch_us(o.finished_at) - epoch_us(s.started_at)) / 1000.0 AS run_ms
FROM attempts a
LEFT JOIN started s USING (ticket_id, task, generation, attempt)
LEFT JOIN outcome o USING (ticket_id, task, generation, attempt)
LEFT JOIN ready r USING (ticket_id, task, generation, attempt);

CREATE OR REPLACE VIEW phase_transitions AS
SELECT
    ticket_id,
    data->>'from' AS from_phase,
    data->>'to' AS to_phase,
    "at",
    data->>'reason' AS reason
FROM events
WHERE type = 'ticket.phase_changed';

-- One row per gate verdict; the checks are counted from the verdict's evidence.
CREATE OR REPLACE VIEW gate_verdicts AS
SELECT
    ticket_id,
    data->>'phase' AS phase,
    TRY_CAST(data->>'attempt' AS INTEGER) AS attempt,
    coalesce(TRY_CAST(data->>'passed' AS BOOLEAN), type = 'gate.passed') AS passed,
    data->>'commit' AS commit,
    -- Booleans summed as integers: no lambda, whose syntax changed in DuckDB 2.0.
    coalesce(
        list_sum(CAST(TRY_CAST(data->'$.checks[*].passed' AS BOOLEAN[]) AS INTEGER[])), 0
    ) AS checks_passed,
    coalesce(json_array_length(data->'checks'), 0) AS checks_total,
    data->>'feedback' AS feedback,
    data->>'review' AS review,
    "at"
FROM events
WHERE type IN ('gate.passed', 'gate.failed');

-- Agent lifecycle and liveness events, with the time since the agent's previous event.
CREATE OR REPLACE VIEW agent_health AS
SELECT
    agent,
    type,
    data->>'role' AS role,
    "at",
    TRY_CAST(data->>'last_beat' AS TIMESTAMPTZ) AS last_beat,
    data->>'current_task' AS current_task,
    (epoch_us("at") - epoch_us(lag("at") OVER (PARTITION BY agent ORDER BY "at", id))) / 1e6
        AS gap_s
FROM events
WHERE type LIKE 'agent.%';

-- Latency percentiles per (phase, capability) over attempts; NULLs (unknown ready time,
-- unfinished attempts) are left out of each percentile.
CREATE OR REPLACE VIEW latency_by_phase_capability AS
SELECT
    phase,
    capability,
    count(*) AS attempts,
    quantile_cont(schedule_to_start_ms, 0.5) AS schedule_to_start_p50_ms,
    quantile_cont(schedule_to_start_ms, 0.95) AS schedule_to_start_p95_ms,
    quantile_cont(schedule_to_start_ms, 0.99) AS schedule_to_start_p99_ms,
    quantile_cont(run_ms, 0.5) AS run_p50_ms,
    quantile_cont(run_ms, 0.95) AS run_p95_ms,
    quantile_cont(run_ms, 0.99) AS run_p99_ms
FROM task_attempts
GROUP BY ALL;

-- Why attempts were retried.
CREATE OR REPLACE VIEW retry_causes AS
SELECT coalesce(error_category, 'unknown') AS error_category, count(*) AS count
FROM task_attempts
WHERE outcome = 'retrying'
GROUP BY ALL;

-- Attempts that ended (succeeded, retrying or failed; cancels and unfinished attempts are
-- not counted) and how many of them failed, whether or not they were retried.
CREATE OR REPLACE VIEW failure_rate_by_capability AS
SELECT
    capability,
    count(*) AS attempts,
    count(*) FILTER (WHERE outcome IN ('failed', 'retrying')) AS failures,
    count(*) FILTER (WHERE outcome IN ('failed', 'retrying')) / count(*) AS rate
FROM task_attempts
WHERE outcome IN ('succeeded', 'failed', 'retrying')
GROUP BY ALL;

-- Tasks that finished per minute (by the time of the outcome); minutes with no finished
-- task have no row. 'failed' counts final failures only, not retried attempts.
CREATE OR REPLACE VIEW throughput_per_minute AS
SELECT
    date_trunc('minute', finished_at) AS minute,
    count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE outcome = 'failed') AS failed
FROM task_attempts
WHERE outcome IN ('succeeded', 'failed')
GROUP BY ALL;

-- What every attempt of a ticket's tasks spent, per phase.
CREATE OR REPLACE VIEW cost_by_ticket_phase AS
SELECT
    ticket_id,
    phase,
    count(*) AS attempts,
    coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
    coalesce(sum(completion_tokens), 0) AS completion_tokens,
    coalesce(sum(prompt_tokens), 0) + coalesce(sum(completion_tokens), 0) AS tokens,
    coalesce(sum(cost_usd), 0) AS cost_usd
FROM task_attempts
GROUP BY ALL;

-- Every audit entry: who (actor, role) did or tried what (action) to what
-- (target), from where (source, client, via), and how it ended (outcome, HTTP status).
-- `count` > 1 stands for that many identical entries within a second (a flood folded).
CREATE OR REPLACE VIEW audit_log AS
SELECT
    "at",
    action,
    outcome,
    actor,
    role,
    via,
    source,
    client,
    target,
    status,
    detail,
    count,
    id,
    stream_seq
FROM audit_events;

-- The monitor's findings (anomaly.detected, anomaly.resolved): one row per stretch a
-- finding lasted, resolved_at NULL while it lasts.
CREATE OR REPLACE VIEW anomalies AS
WITH told AS (
    SELECT type, "at", agent, data, data->>'key' AS key,
        TRY_CAST(data->>'since' AS TIMESTAMPTZ) AS since
    FROM events
    WHERE type IN ('anomaly.detected', 'anomaly.resolved')
),
ended AS (
    SELECT key, since, min("at") AS resolved_at FROM told WHERE type = 'anomaly.resolved'
    GROUP BY ALL
)
SELECT
    d.key,
    d.data->>'kind' AS kind,
    d.agent,
    d.data->>'phase' AS phase,
    d.data->>'capability' AS capability,
    d.data->>'consumer' AS consumer,
    d.since AS detected_at,
    e.resolved_at,
    d.data->>'summary' AS summary,
    TRY_CAST(d.data->>'observed' AS DOUBLE) AS observed,
    TRY_CAST(d.data->>'baseline' AS DOUBLE) AS baseline,
    TRY_CAST(d.data->>'score' AS DOUBLE) AS score,
    TRY_CAST(d.data->>'samples' AS INTEGER) AS samples,
    d.data->'evidence' AS evidence
FROM told d
LEFT JOIN ended e USING (key, since)
WHERE d.type = 'anomaly.detected';

-- Alert history (alert.firing, alert.resolved notices): one row per alert, status
-- 'firing' until its resolution is recorded. `notice` is the notice it was sent in.
CREATE OR REPLACE VIEW alerts AS
WITH told AS (
    SELECT type, "at", data->>'id' AS notice, unnest(CAST(data->'alerts' AS JSON[])) AS alert
    FROM events
    WHERE type IN ('alert.firing', 'alert.resolved')
),
keyed AS (
    SELECT type, "at", notice, alert, alert->>'key' AS key,
        TRY_CAST(alert->>'started_at' AS TIMESTAMPTZ) AS started_at
    FROM told
),
ended AS (
    SELECT key, started_at, min("at") AS resolved_at FROM keyed WHERE type = 'alert.resolved'
    GROUP BY ALL
)
SELECT
    f.alert->>'rule' AS rule,
    f.alert->>'severity' AS severity,
    CASE WHEN e.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END AS status,
    f.key,
    f.alert->>'summary' AS summary,
    f.alert->'labels' AS labels,
    TRY_CAST(f.alert->>'value' AS DOUBLE) AS value,
    TRY_CAST(f.alert->>'threshold' AS DOUBLE) AS threshold,
    f.started_at,
    f."at" AS fired_at,
    e.resolved_at,
    f.notice,
    f.alert->'evidence' AS evidence
FROM keyed f
LEFT JOIN ended e USING (key, started_at)
WHERE f.type = 'alert.firing';

-- Every attempt to send an alert notice to a webhook or a mailbox.
CREATE OR REPLACE VIEW alert_deliveries AS
SELECT
    "at",
    data->>'notice' AS notice,
    data->>'channel' AS channel,
    data->>'target' AS target,
    TRY_CAST(data->>'attempt' AS INTEGER) AS attempt,
    TRY_CAST(data->>'ok' AS BOOLEAN) AS ok,
    TRY_CAST(data->>'final' AS BOOLEAN) AS final,
    TRY_CAST(data->>'status' AS INTEGER) AS status,
    data->>'error' AS error,
    TRY_CAST(data->>'duration_ms' AS DOUBLE) AS duration_ms
FROM events
WHERE type = 'alert.delivery';

-- The guardian's interventions (guardian.proposed, .applied, .undone, .failed events):
-- one row per intervention, as it stands after its latest step.
CREATE OR REPLACE VIEW interventions AS
SELECT
    data->>'id' AS id,
    data->>'kind' AS kind,
    data->>'target' AS target,
    data->>'status' AS status,
    data->>'reason' AS reason,
    data->>'trigger' AS trigger,
    TRY_CAST(data->>'reversible' AS BOOLEAN) AS reversible,
    TRY_CAST(data->>'autonomous' AS BOOLEAN) AS autonomous,
    data->>'decided_by' AS decided_by,
    data->>'approved_by' AS approved_by,
    data->>'undone_by' AS undone_by,
    data->>'outcome' AS outcome,
    TRY_CAST(data->>'created_at' AS TIMESTAMPTZ) AS created_at,
    "at" AS updated_at,
    data->'evidence' AS evidence
FROM events
WHERE type IN ('guardian.proposed', 'guardian.applied', 'guardian.undone', 'guardian.failed')
QUALIFY row_number() OVER (PARTITION BY data->>'id' ORDER BY "at" DESC) = 1;

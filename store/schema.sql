-- The writer's database. Events, dead letters and audit entries are append-only facts; "at" is quoted
-- everywhere because AT is a reserved word in DuckDB 2.0.
--
-- recorded_seq numbers rows in the order they were committed here. Publishing uses it as
-- its watermark instead of stream_seq, because batches may arrive out of stream order
-- (two consumers, redeliveries), and a watermark on stream_seq would skip late rows.
-- Gaps are normal: rows ignored as duplicates still draw a number.

CREATE SEQUENCE IF NOT EXISTS events_recorded_seq;
CREATE SEQUENCE IF NOT EXISTS dead_letters_recorded_seq;
CREATE SEQUENCE IF NOT EXISTS audit_events_recorded_seq;
CREATE SEQUENCE IF NOT EXISTS logs_recorded_seq;
CREATE SEQUENCE IF NOT EXISTS spans_recorded_seq;

CREATE TABLE IF NOT EXISTS events (
    id VARCHAR PRIMARY KEY,
    type VARCHAR NOT NULL,
    ticket_id VARCHAR NOT NULL,
    task VARCHAR,
    agent VARCHAR,
    "at" TIMESTAMPTZ NOT NULL,
    data JSON,
    stream_seq BIGINT,
    recorded_at TIMESTAMPTZ NOT NULL,
    recorded_seq BIGINT NOT NULL DEFAULT nextval('events_recorded_seq')
);

CREATE TABLE IF NOT EXISTS dead_letters (
    stream_seq BIGINT PRIMARY KEY,
    subject VARCHAR NOT NULL,
    origin VARCHAR,
    reason VARCHAR,
    category VARCHAR,
    origin_subject VARCHAR,
    origin_seq BIGINT,
    payload VARCHAR,
    "at" TIMESTAMPTZ NOT NULL,
    recorded_seq BIGINT NOT NULL DEFAULT nextval('dead_letters_recorded_seq')
);

-- Audit entries (OMOI_AUDIT), keyed by their id: who did or tried what, and how it ended.
CREATE TABLE IF NOT EXISTS audit_events (
    id VARCHAR PRIMARY KEY,
    "at" TIMESTAMPTZ NOT NULL,
    action VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    role VARCHAR,
    via VARCHAR,
    source VARCHAR,
    client VARCHAR,
    target VARCHAR,
    status INTEGER,
    detail VARCHAR,
    count INTEGER,
    stream_seq BIGINT,
    recorded_at TIMESTAMPTZ NOT NULL,
    recorded_seq BIGINT NOT NULL DEFAULT nextval('audit_events_recorded_seq')
);

-- Agents' log lines (OMOI_LOGS), keyed by their stream sequence. role and agent are who
-- shipped the line; ticket_id, task and subject what it was about.
CREATE TABLE IF NOT EXISTS logs (
    stream_seq BIGINT PRIMARY KEY,
    "at" TIMESTAMPTZ NOT NULL,
    level VARCHAR NOT NULL,
    logger VARCHAR,
    message VARCHAR NOT NULL,
    role VARCHAR,
    agent VARCHAR,
    ticket_id VARCHAR,
    task VARCHAR,
    subject VARCHAR,
    trace_id VARCHAR,
    span_id VARCHAR,
    exc VARCHAR,
    recorded_at TIMESTAMPTZ NOT NULL,
    recorded_seq BIGINT NOT NULL DEFAULT nextval('logs_recorded_seq')
);

-- Agents' finished spans (OMOI_SPANS), keyed by span id: "at" is when the span started.
-- A ticket is one trace (trace_id), its own spans (ticket, phases, tasks) have ids derived
-- from it, and attributes is the span's OpenTelemetry attributes as a JSON object.
CREATE TABLE IF NOT EXISTS spans (
    span_id VARCHAR PRIMARY KEY,
    trace_id VARCHAR NOT NULL,
    parent_id VARCHAR,
    name VARCHAR NOT NULL,
    kind VARCHAR,
    role VARCHAR,
    agent VARCHAR,
    ticket_id VARCHAR,
    task VARCHAR,
    "at" TIMESTAMPTZ NOT NULL,
    end_at TIMESTAMPTZ NOT NULL,
    duration_ms DOUBLE,
    status VARCHAR,
    status_message VARCHAR,
    attributes JSON,
    stream_seq BIGINT,
    recorded_at TIMESTAMPTZ NOT NULL,
    recorded_seq BIGINT NOT NULL DEFAULT nextval('spans_recorded_seq')
);

-- The last recorded_seq of each kind that is in a Parquet segment. It moves only after
-- the segment file is in place, so a crash in between re-publishes instead of losing rows.
CREATE TABLE IF NOT EXISTS _published (
    kind VARCHAR PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

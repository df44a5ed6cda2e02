-- The audit log: every control-plane change, who made it, when, and what it replaced.
-- Rows from the event stream are keyed by their stream position (replaying an event adds
-- nothing); API client changes are written directly, in the transaction that makes them,
-- and have no stream position. audit_id orders the log and is the pagination cursor.
-- No secret or secret digest is ever stored here.
CREATE TABLE audit_log (
    audit_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition      integer,
    stream_ms      bigint,
    stream_seq     bigint,
    occurred_at    timestamptz NOT NULL,
    actor          text        NOT NULL,
    action         text        NOT NULL,
    target_type    text        NOT NULL,
    target_id      text        NOT NULL,
    warehouse_ids  text[]      NOT NULL DEFAULT '{}',
    request_id     text,
    reason         text,
    before         jsonb,
    after          jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partition, stream_ms, stream_seq),
    CHECK ((partition IS NULL) = (stream_ms IS NULL) AND (stream_ms IS NULL) = (stream_seq IS NULL))
);
CREATE INDEX audit_log_actor ON audit_log (actor, audit_id);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id, audit_id);
CREATE INDEX audit_log_action ON audit_log (action, audit_id);
CREATE INDEX audit_log_warehouses ON audit_log USING gin (warehouse_ids);
CREATE INDEX audit_log_occurred_at ON audit_log (occurred_at);

-- Stream entries the persister could not apply (undecodable, or refused by Postgres as
-- data) are kept here, acknowledged in Redis, so one bad entry never stalls the rest.
CREATE TABLE dead_letters (
    partition    integer     NOT NULL,
    stream_ms    bigint      NOT NULL,
    stream_seq   bigint      NOT NULL,
    kind         text,
    fields       jsonb       NOT NULL,
    error        text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition, stream_ms, stream_seq)
);

-- Quantities as wide as the counters they mirror.
ALTER TABLE stock_movements ALTER COLUMN qty TYPE bigint;
ALTER TABLE order_items ALTER COLUMN qty TYPE bigint;

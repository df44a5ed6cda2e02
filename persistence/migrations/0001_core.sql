-- Core tables: configuration, orders, the stock ledger and the integration feed.
-- Every row is written by the persister from the event stream; replaying an event
-- changes nothing (primary keys on stream positions, version guards on upserts).

CREATE TABLE events (
    partition     integer     NOT NULL,
    stream_ms     bigint      NOT NULL,
    stream_seq    bigint      NOT NULL,
    kind          text        NOT NULL,
    order_id      text,
    occurred_at   timestamptz NOT NULL,
    payload       jsonb       NOT NULL,
    persisted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition, stream_ms, stream_seq)
);
CREATE INDEX events_order_id ON events (order_id) WHERE order_id IS NOT NULL;

CREATE TABLE orders (
    order_id         text        PRIMARY KEY,
    customer_id      text        NOT NULL,
    region           text        NOT NULL,
    order_type       text        NOT NULL CHECK (order_type IN ('flash', 'normal')),
    status           text        NOT NULL CHECK (status IN ('pending_payment', 'paid', 'cancelled')),
    cancel_reason    text        CHECK (cancel_reason IN ('customer', 'merchant', 'payment_timeout')),
    total            bigint      NOT NULL CHECK (total >= 0),
    currency         text        NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    payment_id       text,
    paid_amount      bigint,
    payment_method   text,
    paid_at          timestamptz,
    refund_status    text,
    refund_amount    bigint,
    idempotency_key  text        NOT NULL,
    version          integer     NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX orders_customer ON orders (customer_id, created_at);
CREATE INDEX orders_status ON orders (status, created_at);

CREATE TABLE order_items (
    order_id      text    NOT NULL REFERENCES orders (order_id),
    sku           text    NOT NULL,
    warehouse_id  text    NOT NULL,
    qty           integer NOT NULL CHECK (qty > 0),
    unit_price    bigint  NOT NULL,
    merchant_id   text    NOT NULL,
    shipment_id   text    NOT NULL,
    PRIMARY KEY (order_id, sku, warehouse_id)
);

CREATE TABLE shipments (
    shipment_id   text PRIMARY KEY,
    order_id      text NOT NULL REFERENCES orders (order_id),
    warehouse_id  text NOT NULL,
    merchant_id   text NOT NULL
);
CREATE INDEX shipments_order ON shipments (order_id);

CREATE TABLE stock_movements (
    partition        integer     NOT NULL,
    stream_ms        bigint      NOT NULL,
    stream_seq       bigint      NOT NULL,
    position         integer     NOT NULL,
    sku              text        NOT NULL,
    warehouse_id     text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('reserve', 'release', 'commit', 'ship', 'restock', 'adjust', 'transfer')),
    qty              integer     NOT NULL,
    available_delta  bigint      NOT NULL,
    reserved_delta   bigint      NOT NULL,
    committed_delta  bigint      NOT NULL,
    on_hand_delta    bigint      NOT NULL,
    order_id         text,
    request_id       text,
    reason           text,
    occurred_at      timestamptz NOT NULL,
    PRIMARY KEY (partition, stream_ms, stream_seq, position),
    CHECK (available_delta + reserved_delta + committed_delta = on_hand_delta)
);
CREATE INDEX stock_movements_sku ON stock_movements (sku, warehouse_id);

CREATE TABLE warehouses (
    warehouse_id  text        PRIMARY KEY,
    region        text        NOT NULL,
    name          text        NOT NULL,
    changed_at    timestamptz NOT NULL,
    stream_ms     bigint      NOT NULL,
    stream_seq    bigint      NOT NULL
);

CREATE TABLE dispatch_rules (
    region         text        PRIMARY KEY,
    warehouse_ids  text[]      NOT NULL,
    changed_at     timestamptz NOT NULL,
    stream_ms      bigint      NOT NULL,
    stream_seq     bigint      NOT NULL
);

CREATE TABLE skus (
    sku                 text        PRIMARY KEY,
    name                text        NOT NULL,
    merchant_id         text        NOT NULL,
    price               bigint      NOT NULL,
    currency            text        NOT NULL,
    per_customer_limit  integer,
    sale_starts_at      timestamptz,
    sale_ends_at        timestamptz,
    safety_stock        integer     NOT NULL,
    changed_at          timestamptz NOT NULL,
    stream_ms           bigint      NOT NULL,
    stream_seq          bigint      NOT NULL
);

CREATE TABLE customer_blocks (
    customer_id  text        PRIMARY KEY,
    blocked      boolean     NOT NULL,
    reason       text        NOT NULL,
    changed_at   timestamptz NOT NULL,
    stream_ms    bigint      NOT NULL,
    stream_seq   bigint      NOT NULL
);

-- After-sales cases (refund only, return and refund, exchange) and the refunds they record.
-- Rows move forward with the case's version; replaying an event changes nothing.
CREATE TABLE after_sales_cases (
    case_id              text        PRIMARY KEY,
    order_id             text        NOT NULL REFERENCES orders (order_id),
    customer_id          text        NOT NULL,
    kind                 text        NOT NULL CHECK (kind IN ('refund_only', 'return_refund', 'exchange')),
    status               text        NOT NULL CHECK (status IN ('awaiting_review', 'awaiting_return',
                             'awaiting_refund', 'awaiting_exchange_return', 'exchange_shipping',
                             'exchange_sold_out', 'succeeded', 'rejected')),
    items                jsonb       NOT NULL,  -- [{sku, qty, unit_price}]
    reason               text        NOT NULL,
    amount               bigint      NOT NULL CHECK (amount >= 0),
    return_warehouse_id  text,
    damaged              boolean     NOT NULL,
    replacement          jsonb       NOT NULL,  -- [{sku, warehouse_id, qty}]
    sold_out_sku         text,
    note                 text,
    carrier              text,
    tracking_number      text,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    version              integer     NOT NULL
);
CREATE INDEX after_sales_cases_order ON after_sales_cases (order_id);

CREATE TABLE refunds (
    refund_id     text        PRIMARY KEY,
    case_id       text        NOT NULL REFERENCES after_sales_cases (case_id),
    order_id      text        NOT NULL,
    amount        bigint      NOT NULL CHECK (amount >= 0),
    reason        text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('pending', 'succeeded')),
    updated_at    timestamptz NOT NULL,
    case_version  integer     NOT NULL
);
CREATE INDEX refunds_order ON refunds (order_id);

-- The order lifecycle after payment (issue 4): shipped, completed, after-sales and closed
-- orders; shipments that left with their carrier; the logistics track of each shipment.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN
    ('pending_payment', 'paid', 'shipped', 'completed', 'cancelled', 'after_sales', 'closed'));
ALTER TABLE orders
    ADD COLUMN shipped_at           timestamptz,
    ADD COLUMN confirm_due_at       timestamptz,
    ADD COLUMN completed_at         timestamptz,
    ADD COLUMN completion           text CHECK (completion IN ('customer', 'auto')),
    ADD COLUMN after_sales_until    timestamptz,
    ADD COLUMN after_sales_closed   boolean NOT NULL DEFAULT false,
    ADD COLUMN previous_status      text,
    ADD COLUMN refunded_amount      bigint  NOT NULL DEFAULT 0,
    ADD COLUMN logistics_exceptions jsonb;  -- shipment id -> exception status, while one is unresolved

-- Shipment rows move forward with their order's version, like the order rows.
ALTER TABLE shipments
    ADD COLUMN status           text    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'shipped')),
    ADD COLUMN carrier          text,
    ADD COLUMN tracking_number  text,
    ADD COLUMN shipped_at       timestamptz,
    ADD COLUMN order_version    integer NOT NULL DEFAULT 0;

-- Append-only: an event keeps its position in the shipment's track.
CREATE TABLE shipment_events (
    shipment_id  text        NOT NULL REFERENCES shipments (shipment_id),
    position     integer     NOT NULL,
    order_id     text        NOT NULL,
    status       text        NOT NULL,
    location     text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (shipment_id, position)
);

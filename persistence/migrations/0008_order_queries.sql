-- A customer's orders newest first, one page at a time (GET /v1/orders?customer_id=…):
-- order ids are time-ordered, so the page cursor is an order id.
CREATE INDEX orders_customer_order_id ON orders (customer_id, order_id DESC);

-- orders_customer (customer_id, created_at) is covered by orders_customer_order_id
-- (customer_id, order_id DESC): order ids are time-ordered, and the listing pages by order id.
-- One index entry less per order written and per status change (status changes are not HOT).
DROP INDEX IF EXISTS orders_customer;

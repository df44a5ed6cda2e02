-- The identity of each order's request body, so `rushgate recover` can rebuild idempotency
-- records that still tell a replay (same body) from a reused key (another body).
ALTER TABLE orders ADD COLUMN fingerprint text;

-- API clients with scopes. Only a SHA-256 digest of each secret is kept: secrets are
-- 32 random bytes, so a fast digest cannot be reversed; the secret is shown once.
CREATE TABLE api_clients (
    client_id      text        PRIMARY KEY,
    name           text        NOT NULL,
    scopes         text[]      NOT NULL CHECK (scopes <@ ARRAY['gateway', 'payments', 'admin', 'read']::text[]),
    secret_sha256  bytea       NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

-- The SQLite twin of migrations/postgres/0002_lifecycle.sql (timestamps in
-- unix milliseconds, as in 0001).

ALTER TABLE orders ADD COLUMN next_check_at INTEGER;
ALTER TABLE orders ADD COLUMN check_attempts INTEGER NOT NULL DEFAULT 0;

CREATE INDEX orders_unsettled ON orders (created_at)
    WHERE status IN ('NOTPAY', 'USERPAYING', 'PAYERROR');

CREATE TABLE leases (
    name   TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL
) STRICT;

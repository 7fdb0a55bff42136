-- The reconciler's bookkeeping: when each unsettled order is next asked about
-- (orderquery, or closeorder once it expired) and how often it was asked, so the
-- questions back off per order and replicas never ask about the same order at once;
-- and leases, so that one replica at a time runs a background job.

ALTER TABLE orders ADD COLUMN next_check_at TIMESTAMPTZ;
ALTER TABLE orders ADD COLUMN check_attempts INTEGER NOT NULL DEFAULT 0;

-- Only unsettled orders are ever looked for.
CREATE INDEX orders_unsettled ON orders (created_at)
    WHERE status IN ('NOTPAY', 'USERPAYING', 'PAYERROR');

CREATE TABLE leases (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  TIMESTAMPTZ NOT NULL
);

-- The SQLite twin of migrations/postgres/0005_caller_scope.sql: idempotency
-- keys unique per caller instead of globally.
--
-- SQLite cannot drop a column's UNIQUE constraint, so the table is rebuilt.
-- The migrator runs this inside its transaction, where foreign keys cannot be
-- switched off, so their checks are deferred to the commit instead: the rows
-- are set aside, the old table dropped (its children, order_events and
-- refunds, then point at nothing, which a deferred check tolerates), the new
-- table created under the same name and the rows put back, which satisfies
-- every reference again before the commit checks them. The commit fails, and
-- nothing changes, if any reference were left dangling.
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE orders_before_0005 AS SELECT * FROM orders;
DROP TABLE orders;
CREATE TABLE orders (
    out_trade_no      TEXT NOT NULL PRIMARY KEY,
    idempotency_key   TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('NOTPAY','USERPAYING','SUCCESS','CLOSED','PAYERROR','REFUND','REVOKED')),
    version           INTEGER NOT NULL DEFAULT 1,
    openid            TEXT NOT NULL,
    description       TEXT NOT NULL,
    total_fee         INTEGER NOT NULL CHECK (total_fee > 0),
    attach            TEXT NOT NULL DEFAULT '',
    client_ip         TEXT NOT NULL,
    sign_type         TEXT NOT NULL CHECK (sign_type IN ('MD5','HMAC-SHA256')),
    expires_at        INTEGER,
    prepay_id         TEXT,
    prepay_expires_at INTEGER,
    transaction_id    TEXT UNIQUE,
    cash_fee          INTEGER,
    created_at        INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    updated_at        INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    paid_at           INTEGER,
    next_check_at     INTEGER,
    check_attempts    INTEGER NOT NULL DEFAULT 0,
    refunded_fee      INTEGER NOT NULL DEFAULT 0
        CHECK (refunded_fee >= 0 AND refunded_fee <= total_fee),
    caller            TEXT NOT NULL DEFAULT 'default',
    UNIQUE (caller, idempotency_key)
) STRICT;
INSERT INTO orders (out_trade_no, idempotency_key, status, version, openid, description,
        total_fee, attach, client_ip, sign_type, expires_at, prepay_id, prepay_expires_at,
        transaction_id, cash_fee, created_at, updated_at, paid_at, next_check_at,
        check_attempts, refunded_fee)
    SELECT out_trade_no, idempotency_key, status, version, openid, description,
        total_fee, attach, client_ip, sign_type, expires_at, prepay_id, prepay_expires_at,
        transaction_id, cash_fee, created_at, updated_at, paid_at, next_check_at,
        check_attempts, refunded_fee
    FROM orders_before_0005;
DROP TABLE orders_before_0005;
CREATE INDEX orders_unsettled ON orders (created_at)
    WHERE status IN ('NOTPAY', 'USERPAYING', 'PAYERROR');
CREATE INDEX orders_paid_at ON orders (paid_at) WHERE paid_at IS NOT NULL;

-- The SQLite twin of migrations/postgres/0003_refunds.sql (timestamps in unix
-- milliseconds, as in 0001). SQLite cannot add a table constraint to an existing
-- table, so the refunded_fee bound is a column CHECK (SQLite allows a column
-- CHECK to name other columns of the row).

ALTER TABLE orders ADD COLUMN refunded_fee INTEGER NOT NULL DEFAULT 0
    CHECK (refunded_fee >= 0 AND refunded_fee <= total_fee);

ALTER TABLE order_events ADD COLUMN refunded_fee INTEGER NOT NULL DEFAULT 0;

CREATE TABLE refunds (
    out_refund_no  TEXT NOT NULL PRIMARY KEY,
    out_trade_no   TEXT NOT NULL REFERENCES orders (out_trade_no),
    refund_id      TEXT UNIQUE,
    refund_fee     INTEGER NOT NULL CHECK (refund_fee > 0),
    status         TEXT NOT NULL CHECK (status IN ('PROCESSING','SUCCESS','CHANGE','CLOSED')),
    reason         TEXT NOT NULL DEFAULT '',
    failure        TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    succeeded_at   INTEGER,
    next_check_at  INTEGER,
    check_attempts INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX refunds_out_trade_no ON refunds (out_trade_no);
CREATE INDEX refunds_processing ON refunds (created_at) WHERE status = 'PROCESSING';

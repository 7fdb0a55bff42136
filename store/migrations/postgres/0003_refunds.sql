-- Refunds: one row per refund, stored (PROCESSING) before WeChat is asked, so a
-- crash between the two leaves a row the reconciler resolves by refundquery.
-- The order keeps the sum of its SUCCESS refunds, and every refund change is an
-- outbox event carrying it.

ALTER TABLE orders ADD COLUMN refunded_fee BIGINT NOT NULL DEFAULT 0;
-- The last line of defence: whatever a bug upstream did, the database refuses
-- to record more money given back than was paid.
ALTER TABLE orders ADD CONSTRAINT orders_refunded_within_total
    CHECK (refunded_fee >= 0 AND refunded_fee <= total_fee);

ALTER TABLE order_events ADD COLUMN refunded_fee BIGINT NOT NULL DEFAULT 0;

CREATE TABLE refunds (
    out_refund_no  TEXT PRIMARY KEY,
    out_trade_no   TEXT NOT NULL REFERENCES orders (out_trade_no),
    refund_id      TEXT UNIQUE,
    refund_fee     BIGINT NOT NULL CHECK (refund_fee > 0),
    status         TEXT NOT NULL CHECK (status IN ('PROCESSING','SUCCESS','CHANGE','CLOSED')),
    reason         TEXT NOT NULL DEFAULT '',
    -- WeChat's err_code when it refused the request outright.
    failure        TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    succeeded_at   TIMESTAMPTZ,
    next_check_at  TIMESTAMPTZ,
    check_attempts INTEGER NOT NULL DEFAULT 0
);

-- What is left of an order is summed over its refunds under the order's lock.
CREATE INDEX refunds_out_trade_no ON refunds (out_trade_no);
-- The reconciler looks only for refunds still in flight.
CREATE INDEX refunds_processing ON refunds (created_at) WHERE status = 'PROCESSING';

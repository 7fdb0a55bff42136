-- The operator console's own tables (its audit log and anomaly resolutions)
-- and the indexes behind its reads, sized for a million orders: every list is
-- a keyset page read off an index in order (its first page costs the same at
-- any size), and every filter a person types has an index behind it.

-- Every console action, written before it is performed (result NULL) and
-- completed after: an entry left unfinished says the console stopped in
-- between. fields is the form as JSON text, kept as given.
CREATE TABLE console_audit (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    fields      TEXT NOT NULL,
    result      TEXT,
    ok          BOOLEAN,
    finished_at TIMESTAMPTZ
);

-- An order's page lists the actions taken on it (its history).
CREATE INDEX console_audit_target ON console_audit (target, id);

-- One resolution per anomaly: the primary key makes a second one impossible,
-- so two people resolving at once leave exactly one note (the loser's INSERT
-- … ON CONFLICT DO NOTHING writes nothing and reads the winner's). When
-- retention deletes an old anomaly its resolution goes with it.
CREATE TABLE anomaly_resolutions (
    anomaly_id  BIGINT PRIMARY KEY REFERENCES anomalies (id) ON DELETE CASCADE,
    resolved_by TEXT NOT NULL,
    resolved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    note        TEXT NOT NULL
);

-- The indexes on the big tables below say IF NOT EXISTS: a plain CREATE INDEX
-- holds off writes to its table while it builds (minutes on tens of millions
-- of orders, while WeChat's notifications wait), so an operator upgrading a
-- large database builds them first with CREATE INDEX CONCURRENTLY under the
-- same names (README, "Operations") and this migration passes over them.

-- The orders list, newest first, with no filter: the keyset
-- (created_at, out_trade_no) read backwards off this index.
CREATE INDEX IF NOT EXISTS orders_created_keyset ON orders (created_at DESC, out_trade_no DESC);
-- The search box matches a payer exactly (out_trade_no is the primary key,
-- transaction_id already has its UNIQUE index).
CREATE INDEX IF NOT EXISTS orders_openid ON orders (openid);
-- Only service-provider orders have a sub_openid; the rest store ''.
CREATE INDEX IF NOT EXISTS orders_sub_openid ON orders (sub_openid) WHERE sub_openid <> '';
-- The list narrowed to one merchant (also what a merchant-confined viewer
-- reads) or one status, still newest first off the index.
CREATE INDEX IF NOT EXISTS orders_merchant_keyset ON orders (merchant, created_at DESC, out_trade_no DESC);
CREATE INDEX IF NOT EXISTS orders_status_keyset ON orders (status, created_at DESC, out_trade_no DESC);

-- The dashboard counts the last day's notifications by verdict, and retention
-- deletes the old ones, both by received_at.
CREATE INDEX IF NOT EXISTS notifications_received_at ON notifications (received_at);
-- The dashboard's outbox delays over the last day (retention keeps this table
-- to RETENTION_DAYS, still far more than a day).
CREATE INDEX IF NOT EXISTS order_events_occurred_at ON order_events (occurred_at);

-- The refunds list, newest first, whole or of one status (CHANGE ones are
-- what someone must act on).
CREATE INDEX IF NOT EXISTS refunds_created_keyset ON refunds (created_at DESC, out_refund_no DESC);
CREATE INDEX IF NOT EXISTS refunds_status_keyset ON refunds (status, created_at DESC, out_refund_no DESC);

-- An order's page lists its anomalies.
CREATE INDEX IF NOT EXISTS anomalies_out_trade_no ON anomalies (out_trade_no);

-- The SQLite twin of migrations/postgres/0009_console.sql (STRICT tables,
-- timestamps in unix milliseconds, ids that are never handed out again, as in
-- 0001): the console's audit log and anomaly resolutions, and the indexes
-- behind its reads. Why each index exists is said in the Postgres file.

CREATE TABLE console_audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    fields      TEXT NOT NULL,
    result      TEXT,
    -- 0 or 1 (SQLite has no BOOLEAN); NULL until the action finished.
    ok          INTEGER CHECK (ok IN (0, 1)),
    finished_at INTEGER
) STRICT;

-- An order's page lists the actions taken on it (its history).
CREATE INDEX console_audit_target ON console_audit (target, id);

-- One resolution per anomaly (the primary key), gone with its anomaly.
CREATE TABLE anomaly_resolutions (
    anomaly_id  INTEGER NOT NULL PRIMARY KEY REFERENCES anomalies (id) ON DELETE CASCADE,
    resolved_by TEXT NOT NULL,
    resolved_at INTEGER NOT NULL,
    note        TEXT NOT NULL
) STRICT;

CREATE INDEX orders_created_keyset ON orders (created_at DESC, out_trade_no DESC);
CREATE INDEX orders_openid ON orders (openid);
CREATE INDEX orders_sub_openid ON orders (sub_openid) WHERE sub_openid <> '';
CREATE INDEX orders_merchant_keyset ON orders (merchant, created_at DESC, out_trade_no DESC);
CREATE INDEX orders_status_keyset ON orders (status, created_at DESC, out_trade_no DESC);
CREATE INDEX notifications_received_at ON notifications (received_at);
CREATE INDEX order_events_occurred_at ON order_events (occurred_at);
CREATE INDEX refunds_created_keyset ON refunds (created_at DESC, out_refund_no DESC);
CREATE INDEX refunds_status_keyset ON refunds (status, created_at DESC, out_refund_no DESC);
CREATE INDEX anomalies_out_trade_no ON anomalies (out_trade_no);

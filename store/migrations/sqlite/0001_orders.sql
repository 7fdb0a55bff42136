-- The SQLite twin of migrations/postgres/0001_orders.sql: the same tables,
-- columns, constraints and indexes, for the single-process embedded mode.
--
-- Differences, and why:
-- * Timestamps are INTEGER unix milliseconds (UTC). Integers compare and
--   subtract exactly in SQL (the outbox's "older than" filter is one
--   subtraction), sort correctly without a fixed-width text format, and are the
--   unit OrderEvent.occurred_at already uses. Postgres keeps microseconds; no
--   caller relies on anything finer than a millisecond.
-- * Tables are STRICT, so a value of the wrong type is refused as Postgres would
--   refuse it, instead of being stored with SQLite's loose type affinity.
-- * BIGSERIAL becomes INTEGER PRIMARY KEY AUTOINCREMENT: like a sequence, it
--   never hands out an id again, even if the newest row were ever deleted.
-- * BYTEA becomes BLOB.
-- * DEFAULT now() becomes the current time in milliseconds; the store binds
--   its own clock reading instead, once per transaction, as Postgres's now() is.

CREATE TABLE orders (
    out_trade_no      TEXT NOT NULL PRIMARY KEY,
    idempotency_key   TEXT NOT NULL UNIQUE,
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
    paid_at           INTEGER
) STRICT;

CREATE TABLE order_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    out_trade_no   TEXT NOT NULL REFERENCES orders (out_trade_no),
    status         TEXT NOT NULL,
    version        INTEGER NOT NULL,
    transaction_id TEXT,
    total_fee      INTEGER NOT NULL,
    source         TEXT NOT NULL,
    occurred_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    published_at   INTEGER,
    UNIQUE (out_trade_no, version)
) STRICT;

-- The relay only ever looks for what is still unpublished.
CREATE INDEX order_events_unpublished ON order_events (id) WHERE published_at IS NULL;

CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    out_trade_no TEXT,
    verdict      TEXT NOT NULL,
    raw_body     BLOB NOT NULL,
    received_at  INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
) STRICT;
CREATE INDEX notifications_out_trade_no ON notifications (out_trade_no);

CREATE TABLE anomalies (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    out_trade_no TEXT,
    detail       TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER))
) STRICT;

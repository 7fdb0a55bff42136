-- Orders, the outbox of their status changes, every notification received, and
-- anomalies (valid-looking messages we refused to act on).

CREATE TABLE orders (
    out_trade_no      TEXT PRIMARY KEY,
    idempotency_key   TEXT NOT NULL UNIQUE,
    status            TEXT NOT NULL CHECK (status IN ('NOTPAY','USERPAYING','SUCCESS','CLOSED','PAYERROR','REFUND','REVOKED')),
    version           BIGINT NOT NULL DEFAULT 1,
    openid            TEXT NOT NULL,
    description       TEXT NOT NULL,
    total_fee         BIGINT NOT NULL CHECK (total_fee > 0),
    attach            TEXT NOT NULL DEFAULT '',
    client_ip         TEXT NOT NULL,
    sign_type         TEXT NOT NULL CHECK (sign_type IN ('MD5','HMAC-SHA256')),
    expires_at        TIMESTAMPTZ,
    prepay_id         TEXT,
    prepay_expires_at TIMESTAMPTZ,
    transaction_id    TEXT UNIQUE,
    cash_fee          BIGINT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at           TIMESTAMPTZ
);

CREATE TABLE order_events (
    id             BIGSERIAL PRIMARY KEY,
    out_trade_no   TEXT NOT NULL REFERENCES orders (out_trade_no),
    status         TEXT NOT NULL,
    version        BIGINT NOT NULL,
    transaction_id TEXT,
    total_fee      BIGINT NOT NULL,
    source         TEXT NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at   TIMESTAMPTZ,
    UNIQUE (out_trade_no, version)
);

-- The relay only ever looks for what is still unpublished.
CREATE INDEX order_events_unpublished ON order_events (id) WHERE published_at IS NULL;

CREATE TABLE notifications (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL,
    out_trade_no TEXT,
    verdict      TEXT NOT NULL,
    raw_body     BYTEA NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_out_trade_no ON notifications (out_trade_no);

CREATE TABLE anomalies (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT NOT NULL,
    out_trade_no TEXT,
    detail       TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

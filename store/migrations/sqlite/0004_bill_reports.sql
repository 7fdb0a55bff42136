-- The SQLite twin of migrations/postgres/0004_bill_reports.sql (the date as
-- 'YYYY-MM-DD' text, the report as JSON text, time in unix milliseconds).
CREATE TABLE bill_reports (
    bill_date     TEXT NOT NULL PRIMARY KEY,
    report        TEXT NOT NULL,
    reconciled_at INTEGER NOT NULL
) STRICT;

CREATE INDEX orders_paid_at ON orders (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX refunds_created_at ON refunds (created_at);

-- One row per reconciled bill day: the report as JSON (its shape is the
-- domain's BillReport), so a day is reconciled once unless asked again.
CREATE TABLE bill_reports (
    bill_date     DATE PRIMARY KEY,
    report        JSONB NOT NULL,
    reconciled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The reconciliation reads a day's payments and the refunds applied for that day
-- (WeChat's bill lists a refund on the day it was applied for).
CREATE INDEX orders_paid_at ON orders (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX refunds_created_at ON refunds (created_at);

-- The SQLite twin of migrations/postgres/0006_placement.sql: each order's
-- merchant, trade type and what the trade type needs, and the pay_url of
-- NATIVE and MWEB orders. Existing rows are JSAPI orders of "default".
-- ADD COLUMN with a constant default needs no table rebuild.
ALTER TABLE orders ADD COLUMN merchant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE orders ADD COLUMN trade_type TEXT NOT NULL DEFAULT 'JSAPI'
    CHECK (trade_type IN ('JSAPI', 'NATIVE', 'APP', 'MWEB'));
ALTER TABLE orders ADD COLUMN sub_openid TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN product_id TEXT;
ALTER TABLE orders ADD COLUMN scene_info TEXT;
ALTER TABLE orders ADD COLUMN pay_url TEXT;

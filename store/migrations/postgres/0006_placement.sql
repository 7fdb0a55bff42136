-- Where and how each order is placed (issue 15): the configured merchant whose
-- credentials place it (orderquery, closeorder, refunds and the bill follow
-- it), the trade type, and what that trade type needs. Orders placed before
-- this migration were JSAPI orders of the merchant the WECHAT_* variables
-- define, which is named "default". NATIVE, APP and MWEB orders have no payer
-- when they are placed, so openid may now be empty.
-- pay_url holds what a NATIVE (code_url) or MWEB (mweb_url) order is paid
-- through; it is reused exactly as long as the prepay_id beside it.
ALTER TABLE orders ADD COLUMN merchant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE orders ADD COLUMN trade_type TEXT NOT NULL DEFAULT 'JSAPI'
    CHECK (trade_type IN ('JSAPI', 'NATIVE', 'APP', 'MWEB'));
ALTER TABLE orders ADD COLUMN sub_openid TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN product_id TEXT;
ALTER TABLE orders ADD COLUMN scene_info TEXT;
ALTER TABLE orders ADD COLUMN pay_url TEXT;

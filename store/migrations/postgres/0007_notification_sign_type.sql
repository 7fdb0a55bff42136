-- The algorithm a kept payment notification's signature verified under
-- (issue 25). A notification is authentic when it verifies under its
-- merchant's key with MD5 or HMAC-SHA256, whichever it names, whatever the
-- order was placed with; this column says which one WeChat used, so an
-- operator can see a merchant's notifications change algorithm. NULL for
-- refunds (proven by decrypting req_info), cloud-pay callbacks (proven by the
-- forwarder's HMAC) and rows kept before this migration.
ALTER TABLE notifications ADD COLUMN sign_type TEXT
    CHECK (sign_type IN ('MD5', 'HMAC-SHA256'));

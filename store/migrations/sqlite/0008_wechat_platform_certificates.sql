-- The SQLite twin of migrations/postgres/0008_wechat_platform_certificates.sql
-- (times in unix milliseconds). WeChat Pay API v3 platform certificates, per
-- merchant account (the mch_id that signs requests), by serial, kept so that a
-- restart does not depend on WeChat being up. A row is written only after its
-- download was decrypted with the merchant's APIv3 key and the download's own
-- answer verified. Every unexpired certificate is kept; expired ones are
-- deleted when a merchant's certificates are saved.
CREATE TABLE wechat_platform_certificates (
    mch_id          TEXT NOT NULL,
    serial_no       TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    not_before      INTEGER NOT NULL,
    not_after       INTEGER NOT NULL,
    fetched_at      INTEGER NOT NULL,
    PRIMARY KEY (mch_id, serial_no),
    CHECK (not_before < not_after)
) STRICT;

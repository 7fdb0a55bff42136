-- WeChat Pay API v3 platform certificates (issue 26), per merchant account
-- (the mch_id that signs requests), by serial. Kept in the database so that
-- every replica verifies with the same certificates and a restart does not
-- depend on WeChat being up. A row is written only after its download was
-- decrypted with the merchant's APIv3 key and the download's own answer
-- verified. Every unexpired certificate is kept (WeChat rotates with an
-- overlap); expired ones are deleted when a merchant's certificates are saved.
CREATE TABLE wechat_platform_certificates (
    mch_id          TEXT NOT NULL,
    -- Uppercase hex, as WeChat writes it in serial_no and Wechatpay-Serial.
    serial_no       TEXT NOT NULL,
    certificate_pem TEXT NOT NULL,
    not_before      TIMESTAMPTZ NOT NULL,
    not_after       TIMESTAMPTZ NOT NULL,
    -- When WeChat last listed it: replicas skip the 12-hourly download when
    -- another one has just done it.
    fetched_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (mch_id, serial_no),
    CHECK (not_before < not_after)
);

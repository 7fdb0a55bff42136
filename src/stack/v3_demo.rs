//! The WeChat Pay API v3 merchant `cargo run` hosts beside the v2 one, so a
//! v3 order can be placed, paid and watched offline: its API key is issued
//! and WeChat's public key written the way the merchant platform hands them
//! out (here by the stack's own sandbox, into a temporary directory removed
//! with it), then the entry is read by the same parser as a merchants file.

use anyhow::Context;
use rand::{distr::Alphanumeric, Rng};
use wechat_sandbox::WechatSideKeys;
use wxpay_core::wechat::{merchant_from_fields, MerchantEntry};

/// The demo v3 merchant's name (what `CreateOrderRequest.merchant` says).
pub const NAME: &str = "v3-demo";
const APP_ID: &str = "wx3d0000000000003d";
const MCH_ID: &str = "1900000333";
/// The id WeChat gives its public key in public-key mode.
const PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0119000003332026120700000000";

/// A v3 merchant in public-key mode and the sandbox's WeChat keys for it.
pub struct V3Demo {
    pub entry: MerchantEntry,
    /// WeChat's side, handed to the sandbox (it signs with these).
    pub wechat_keys: WechatSideKeys,
    /// The key files; removed when the stack is dropped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for V3Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V3Demo")
            .field("entry", &self.entry)
            .finish()
    }
}

impl V3Demo {
    /// WeChat's side of this merchant's public-key mode, as a signer: what
    /// the benchmark signs v3 notifications with, as the sandbox does.
    pub fn wechat_signer(&self) -> anyhow::Result<wxpay_core::wechat::v3::MerchantSigner> {
        self.wechat_keys
            .public_key
            .signer(PUBLIC_KEY_ID)
            .map_err(|e| anyhow::anyhow!("WeChat's signer for {NAME}: {e}"))
    }

    /// The id WeChat's public key goes by (`Wechatpay-Serial`).
    pub fn wechat_key_id(&self) -> &'static str {
        PUBLIC_KEY_ID
    }

    /// Issues the keys (RSA generation takes a moment: off the runtime's threads).
    pub async fn issue() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(Self::issue_blocking)
            .await
            .context("issuing the v3 demo merchant's keys")?
    }

    fn issue_blocking() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a directory for the v3 demo merchant's keys")?;
        let wechat_keys = WechatSideKeys::generate().context("the sandbox's WeChat keys")?;
        let issued = wechat_sandbox::issue_merchant_key(dir.path())
            .context("the v3 demo merchant's API key")?;
        let public_key = dir.path().join("pub_key.pem");
        std::fs::write(&public_key, wechat_keys.public_key.public_pem())
            .context("writing WeChat's public key")?;
        // A fresh APIv3 key each run: the sandbox seals with it, the gateway opens.
        let apiv3_key: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let private_key = issued.private_key_path.display().to_string();
        let public_key = public_key.display().to_string();
        let entry = merchant_from_fields(
            &[
                ("name", NAME),
                ("api_version", "v3"),
                ("app_id", APP_ID),
                ("mch_id", MCH_ID),
                ("apiv3_key", &apiv3_key),
                ("private_key", &private_key),
                ("serial_no", &issued.serial_no),
                ("wechatpay_public_key", &public_key),
                ("wechatpay_public_key_id", PUBLIC_KEY_ID),
            ],
            |_| None,
            |path| std::fs::read(path).map_err(|e| e.to_string()),
        )
        .map_err(|e| anyhow::anyhow!("the v3 demo merchant: {e}"))?;
        Ok(Self {
            entry,
            wechat_keys,
            _dir: dir,
        })
    }
}

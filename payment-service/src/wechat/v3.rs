//! The WeChat Pay v3 dialect: [`V3Api`], payment-service's [`WechatApi`] for a
//! merchant whose `api_version` is `v3`. Each call becomes the v3 request it
//! stands for (JSON, signed with the merchant's API private key by
//! `wxpay_wechat_v3`, whose every 2xx answer is verified before a byte of it
//! is read), on the direct endpoints or, for a merchant with a `sub_mch_id`,
//! the service-provider (partner) ones. v3's own words become the typed
//! outcomes the service acts on: `ORDERPAID` and `ORDER_CLOSED` to placing
//! and closing, `ORDER_NOT_EXIST` to querying (`None`) and closing
//! (`NotFound`); every other refusal a [`WechatError`] carrying WeChat's
//! `code`, so `crate::error` maps both dialects in one place. `paySign` is
//! RSA here (core's `v3::pay_params`).
//!
//! Refunds, refund queries and bills of v3 merchants come next (issue 27):
//! until then they are refused with [`WechatError::Unsupported`], naming the
//! merchant, and never sent.

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use serde::Serialize;
use wxpay_core::{
    domain::{Fee, Nonce, Order, OrderStatus, OutRefundNo, Refund, TransactionId},
    wechat::{
        bill::Bill,
        china_time,
        pay_params::{AppPaymentParams, PaymentParams},
        v3::{
            models::{
                CloseOrder, H5Info, OrderAmount, Payer, PlaceOrder, Prepay, SceneInfo, Transaction,
            },
            pay_params, MerchantSigner,
        },
        MerchantEntry, TradeType,
    },
};
use wxpay_wechat_v3::{V3Client, V3Error};

use super::{
    CloseOutcome, PlaceOutcome, Prepaid, RefundAccepted, RefundState, TradeState, WechatApi,
    WechatError,
};

/// v3's error codes the service acts on (v2 spells some of them differently).
const ORDER_PAID: &str = "ORDERPAID";
const ORDER_CLOSED: &str = "ORDER_CLOSED";
const ORDER_NOT_EXIST: &str = "ORDER_NOT_EXIST";

/// One v3 merchant's WeChat Pay API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct V3Api {
    client: V3Client,
    /// The merchant's API private key: it signs `paySign` (the client signs
    /// requests with the same key).
    signer: MerchantSigner,
    /// Where WeChat sends payment results (`notify_url`): the gateway's
    /// `/wechat/v3/pay/notify`.
    notify_url: String,
}

impl V3Api {
    /// The API of `client`'s merchant, which must be a v3 one (a
    /// [`V3Client`] is built only for those), placing orders with
    /// `notify_url` as their v3 notify URL.
    pub fn new(client: V3Client, notify_url: String) -> Result<Self, WechatError> {
        let signer = client
            .entry()
            .v3
            .as_ref()
            .map(|v3| v3.signer.clone())
            .ok_or_else(|| {
                WechatError::Request(format!(
                    "merchant {} is not a v3 merchant",
                    client.entry().name
                ))
            })?;
        Ok(Self {
            client,
            signer,
            notify_url,
        })
    }

    fn sub_mch_id(&self) -> Option<&str> {
        self.client.entry().sub_mch_id.as_deref()
    }

    /// `/v3/pay/transactions` or, in service-provider mode, `/v3/pay/partner/transactions`.
    fn transactions(&self) -> &'static str {
        match self.sub_mch_id() {
            None => "/v3/pay/transactions",
            Some(_) => "/v3/pay/partner/transactions",
        }
    }

    /// What v3 says the order is placed with: the body of `POST …/{kind}`.
    fn place_body(&self, order: &Order) -> PlaceBody {
        let entry = self.client.entry();
        let placement = &order.placement;
        let jsapi = placement.trade_type == TradeType::Jsapi;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut body = PlaceOrder {
            description: order.description.as_str().to_owned(),
            out_trade_no: order.out_trade_no.as_str().to_owned(),
            time_expire: order.expires_at.map(china_time::format_rfc3339),
            attach: non_empty(order.attach.as_str()),
            notify_url: self.notify_url.clone(),
            amount: OrderAmount {
                total: order.total_fee.fen(),
                currency: Some("CNY".to_owned()),
            },
            scene_info: (placement.trade_type == TradeType::Mweb)
                .then(|| h5_scene(order))
                .flatten(),
            ..PlaceOrder::default()
        };
        let mut partner_payer = None;
        match self.sub_mch_id() {
            None => {
                body.appid = Some(entry.merchant.app_id.clone());
                body.mchid = Some(entry.merchant.mch_id.clone());
                if jsapi {
                    body.payer = Some(Payer {
                        openid: non_empty(order.openid.as_str()),
                        ..Payer::default()
                    });
                }
            }
            Some(sub_mch_id) => {
                body.sp_appid = Some(entry.merchant.app_id.clone());
                body.sp_mchid = Some(entry.merchant.mch_id.clone());
                body.sub_mchid = Some(sub_mch_id.to_owned());
                body.sub_appid = entry.sub_app_id.clone();
                if jsapi {
                    // The payer under the provider's appid (`sp_openid`) or the
                    // sub merchant's (`sub_openid`), as the order was made.
                    partner_payer = Some(PartnerPayer {
                        sp_openid: non_empty(order.openid.as_str()),
                        sub_openid: non_empty(placement.sub_openid.as_str()),
                    });
                }
            }
        }
        PlaceBody {
            order: body,
            payer: partner_payer,
        }
    }

    /// The query path of `order` (`?mchid=`, or `?sp_mchid=&sub_mchid=`).
    fn query_path(&self, order: &Order) -> String {
        let mch_id = &self.client.entry().merchant.mch_id;
        let no = order.out_trade_no.as_str();
        match self.sub_mch_id() {
            None => format!("/v3/pay/transactions/out-trade-no/{no}?mchid={mch_id}"),
            Some(sub) => format!(
                "/v3/pay/partner/transactions/out-trade-no/{no}?sp_mchid={mch_id}&sub_mchid={sub}"
            ),
        }
    }

    /// What a verified query answer says about `order`, once it is about our
    /// order and our merchant.
    fn read_transaction(&self, order: &Order, t: Transaction) -> Result<TradeState, WechatError> {
        let entry = self.client.entry();
        if t.out_trade_no != order.out_trade_no.as_str() {
            return Err(not_ours("out_trade_no"));
        }
        if t.merchant_mch_id() != Some(entry.merchant.mch_id.as_str()) {
            return Err(not_ours("mchid"));
        }
        if t.sub_mchid.as_deref() != self.sub_mch_id() {
            return Err(not_ours("sub_mchid"));
        }
        let status: OrderStatus = t.trade_state.parse().map_err(|_| {
            WechatError::BadReply(format!("unknown trade_state {:?}", bounded(&t.trade_state)))
        })?;
        // An id or amount that is there but unreadable is refused, not
        // skipped: a payment is never recorded on a value not read exactly.
        let transaction_id = t
            .transaction_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                TransactionId::parse(s)
                    .map_err(|_| WechatError::BadReply("transaction_id cannot be read".into()))
            })
            .transpose()?;
        let total_fee = t
            .amount
            .as_ref()
            .map(|a| {
                Fee::new(a.total)
                    .map_err(|_| WechatError::BadReply("amount.total cannot be read".into()))
            })
            .transpose()?;
        Ok(TradeState {
            status,
            transaction_id,
            total_fee,
            cash_fee: t.amount.as_ref().and_then(|a| a.payer_total),
            paid_at: t
                .success_time
                .as_deref()
                .and_then(china_time::parse_rfc3339),
        })
    }

    /// The refusal of what v3 merchants cannot do yet.
    fn unsupported(&self, what: &str) -> WechatError {
        WechatError::Unsupported(format!(
            "{what} of merchant {} (WeChat Pay API v3) are not yet supported",
            self.client.entry().name
        ))
    }
}

/// `POST …/transactions/{kind}`'s body: core's [`PlaceOrder`] and, on the
/// partner endpoints, the payer as v3 names it there (`sp_openid` or
/// `sub_openid`; core's `Payer` has no `sp_openid`, so the partner payer is
/// written here and `PlaceOrder.payer` is left out).
#[derive(Debug, Serialize)]
struct PlaceBody {
    #[serde(flatten)]
    order: PlaceOrder,
    #[serde(skip_serializing_if = "Option::is_none")]
    payer: Option<PartnerPayer>,
}

#[derive(Debug, Serialize)]
struct PartnerPayer {
    #[serde(skip_serializing_if = "Option::is_none")]
    sp_openid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_openid: Option<String>,
}

/// The path segment of a trade type: MWEB is v3's `h5`.
fn trade_kind(t: TradeType) -> &'static str {
    match t {
        TradeType::Jsapi => "jsapi",
        TradeType::Native => "native",
        TradeType::App => "app",
        TradeType::Mweb => "h5",
    }
}

/// v3's `scene_info` for an h5 order, from the order's v2-shaped scene
/// (`{"h5_info":{"type":"Wap"|"IOS"|"Android", "wap_url", "wap_name" | "app_name", …}}`,
/// checked when the order was made) and its client IP. `None` when the scene
/// cannot be read: WeChat then refuses the request, naming the field.
fn h5_scene(order: &Order) -> Option<SceneInfo> {
    let scene = order.placement.scene_info.as_ref()?;
    let value: serde_json::Value = serde_json::from_str(scene.as_str()).ok()?;
    let h5 = value.get("h5_info")?;
    let text = |k: &str| {
        h5.get(k)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let kind = match text("type")?.as_str() {
        // v2 writes iOS in capitals; v3 does not.
        "IOS" => "iOS".to_owned(),
        other => other.to_owned(),
    };
    Some(SceneInfo {
        payer_client_ip: order.client_ip.as_str().to_owned(),
        device_id: None,
        h5_info: Some(H5Info {
            kind,
            app_name: text("app_name").or_else(|| text("wap_name")),
            app_url: text("wap_url"),
        }),
    })
}

/// What placing came to: a v3 answer (or refusal) as the service's outcome.
/// WeChat's answer must hold what the trade type is paid with.
fn place_outcome(
    trade_type: TradeType,
    answer: Result<Prepay, V3Error>,
) -> Result<PlaceOutcome, WechatError> {
    let prepay = match answer {
        Ok(prepay) => prepay,
        Err(V3Error::Api { code, message, .. }) if code == ORDER_PAID => {
            let said = if message.is_empty() {
                code
            } else {
                format!("{code} ({})", bounded(&message))
            };
            return Ok(PlaceOutcome::AlreadyPaid { said });
        }
        Err(e) if e.code() == Some(ORDER_CLOSED) => return Ok(PlaceOutcome::AlreadyClosed),
        Err(e) => return Err(e.into()),
    };
    let present = |v: Option<String>| v.filter(|s| !s.is_empty());
    let missing = |what: &str| WechatError::BadReply(format!("no {what} in a successful answer"));
    let prepaid = match trade_type {
        TradeType::Jsapi | TradeType::App => Prepaid {
            prepay_id: present(prepay.prepay_id).ok_or_else(|| missing("prepay_id"))?,
            pay_url: None,
        },
        // v3 gives NATIVE and h5 orders no prepay_id, only the URL the payer
        // pays through: the prepay_id kept with such an order is empty.
        TradeType::Native => Prepaid {
            prepay_id: String::new(),
            pay_url: Some(present(prepay.code_url).ok_or_else(|| missing("code_url"))?),
        },
        TradeType::Mweb => Prepaid {
            prepay_id: String::new(),
            pay_url: Some(present(prepay.h5_url).ok_or_else(|| missing("h5_url"))?),
        },
    };
    Ok(PlaceOutcome::Placed(prepaid))
}

/// What closing came to.
fn close_outcome(answer: Result<(), V3Error>) -> Result<CloseOutcome, WechatError> {
    match answer {
        Ok(()) => Ok(CloseOutcome::Closed),
        Err(e) => match e.code() {
            Some(ORDER_CLOSED) => Ok(CloseOutcome::AlreadyClosed),
            Some(ORDER_PAID) => Ok(CloseOutcome::AlreadyPaid),
            Some(ORDER_NOT_EXIST) => Ok(CloseOutcome::NotFound),
            _ => Err(e.into()),
        },
    }
}

fn not_ours(field: &str) -> WechatError {
    WechatError::BadReply(format!("the answer's {field} is not ours"))
}

/// At most 256 characters of what WeChat wrote, for messages and logs.
fn bounded(s: &str) -> String {
    s.chars().take(256).collect()
}

impl From<V3Error> for WechatError {
    /// A v3 failure as the dialect-neutral error: WeChat's `{code, message}`
    /// becomes a business refusal with that code (`crate::error` knows v3's
    /// spellings), an answer that failed verification is not trusted.
    fn from(e: V3Error) -> Self {
        match e {
            V3Error::Request(why) => WechatError::Request(why),
            V3Error::Transport(why) => WechatError::Transport(why),
            V3Error::Timeout => WechatError::Timeout,
            V3Error::Api { code, message, .. } => WechatError::Business {
                code: code.chars().take(64).collect(),
                message: bounded(&message),
            },
            V3Error::Status { status } => {
                WechatError::Transport(format!("HTTP {status} without WeChat's error body"))
            }
            V3Error::Untrusted(why) => {
                WechatError::BadReply(format!("its signature did not verify ({why})"))
            }
            V3Error::BadReply(why) => WechatError::BadReply(why),
        }
    }
}

#[async_trait]
impl WechatApi for V3Api {
    fn entry(&self) -> &MerchantEntry {
        self.client.entry()
    }

    fn refund_blocker(&self) -> Option<String> {
        Some(format!(
            "refunds of merchant {} (WeChat Pay API v3) are not yet supported",
            self.client.entry().name
        ))
    }

    #[tracing::instrument(skip_all, fields(out_trade_no = %order.out_trade_no, api = "v3"))]
    async fn place(&self, order: &Order) -> Result<PlaceOutcome, WechatError> {
        let trade_type = order.placement.trade_type;
        let path = format!("{}/{}", self.transactions(), trade_kind(trade_type));
        let answer = self.client.post(&path, &self.place_body(order)).await;
        place_outcome(trade_type, answer)
    }

    #[tracing::instrument(skip_all, fields(out_trade_no = %order.out_trade_no, api = "v3"))]
    async fn query(&self, order: &Order) -> Result<Option<TradeState>, WechatError> {
        match self
            .client
            .get::<Transaction>(&self.query_path(order))
            .await
        {
            Ok(t) => self.read_transaction(order, t).map(Some),
            Err(e) if e.code() == Some(ORDER_NOT_EXIST) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(out_trade_no = %order.out_trade_no, api = "v3"))]
    async fn close(&self, order: &Order) -> Result<CloseOutcome, WechatError> {
        let entry = self.client.entry();
        let path = format!(
            "{}/out-trade-no/{}/close",
            self.transactions(),
            order.out_trade_no
        );
        let body = match self.sub_mch_id() {
            None => CloseOrder {
                mchid: Some(entry.merchant.mch_id.clone()),
                ..CloseOrder::default()
            },
            Some(sub) => CloseOrder {
                sp_mchid: Some(entry.merchant.mch_id.clone()),
                sub_mchid: Some(sub.to_owned()),
                ..CloseOrder::default()
            },
        };
        close_outcome(self.client.post_no_content(&path, &body).await)
    }

    async fn refund(
        &self,
        _order: &Order,
        _refund: &Refund,
    ) -> Result<RefundAccepted, WechatError> {
        Err(self.unsupported("refunds"))
    }

    async fn refund_query(
        &self,
        _order: &Order,
        _out_refund_no: &OutRefundNo,
    ) -> Result<Option<RefundState>, WechatError> {
        Err(self.unsupported("refunds"))
    }

    async fn bill(&self, _day: NaiveDate) -> Result<Option<Bill>, WechatError> {
        Err(self.unsupported("bills"))
    }

    fn jsapi_params(&self, order: &Order, prepay_id: &str) -> Result<PaymentParams, WechatError> {
        let entry = self.client.entry();
        // Paid in the mini program whose user the openid names: the sub
        // merchant's when the order was placed with a sub_openid.
        let app_id = match (&entry.sub_app_id, order.placement.sub_openid.is_empty()) {
            (Some(sub_app_id), false) => sub_app_id,
            _ => &entry.merchant.app_id,
        };
        pay_params::jsapi(
            &self.signer,
            app_id,
            prepay_id,
            Utc::now().timestamp(),
            &Nonce::generate(),
        )
        .map(PaymentParams::from)
        .map_err(|e| WechatError::Request(format!("paySign could not be made: {e}")))
    }

    fn app_params(&self, _order: &Order, prepay_id: &str) -> Result<AppPaymentParams, WechatError> {
        let entry = self.client.entry();
        // The OpenSDK is registered to the app that pays (the sub merchant's
        // in service-provider mode) and names the merchant that is paid.
        let app_id = entry.sub_app_id.as_ref().unwrap_or(&entry.merchant.app_id);
        pay_params::app(
            &self.signer,
            app_id,
            entry.payee_mch_id(),
            prepay_id,
            Utc::now().timestamp(),
            &Nonce::generate(),
        )
        .map_err(|e| WechatError::Request(format!("the APP sign could not be made: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> V3Error {
        V3Error::Api {
            status,
            code: code.into(),
            message: format!("{code} described"),
        }
    }

    #[test]
    fn orderpaid_to_placing_is_a_claim_to_check_not_a_payment() {
        let outcome = place_outcome(TradeType::Jsapi, Err(api(400, "ORDERPAID")));
        assert_eq!(
            outcome,
            Ok(PlaceOutcome::AlreadyPaid {
                said: "ORDERPAID (ORDERPAID described)".into()
            })
        );
        assert_eq!(
            place_outcome(TradeType::Native, Err(api(400, "ORDER_CLOSED"))),
            Ok(PlaceOutcome::AlreadyClosed)
        );
    }

    #[test]
    fn an_answer_without_what_the_payer_pays_with_is_not_used() {
        let empty = place_outcome(TradeType::Native, Ok(Prepay::default()));
        assert!(matches!(empty, Err(WechatError::BadReply(_))), "{empty:?}");
        let wrong = place_outcome(
            TradeType::Mweb,
            Ok(Prepay {
                code_url: Some("weixin://wxpay/bizpayurl?pr=x".into()),
                ..Prepay::default()
            }),
        );
        assert!(matches!(wrong, Err(WechatError::BadReply(_))), "{wrong:?}");
        let h5 = place_outcome(
            TradeType::Mweb,
            Ok(Prepay {
                h5_url: Some("https://wx.tenpay.com/x".into()),
                ..Prepay::default()
            }),
        );
        assert_eq!(
            h5,
            Ok(PlaceOutcome::Placed(Prepaid {
                prepay_id: String::new(),
                pay_url: Some("https://wx.tenpay.com/x".into())
            }))
        );
    }

    #[test]
    fn closing_maps_wechats_codes_to_outcomes() {
        assert_eq!(close_outcome(Ok(())), Ok(CloseOutcome::Closed));
        assert_eq!(
            close_outcome(Err(api(400, "ORDER_CLOSED"))),
            Ok(CloseOutcome::AlreadyClosed)
        );
        assert_eq!(
            close_outcome(Err(api(400, "ORDERPAID"))),
            Ok(CloseOutcome::AlreadyPaid)
        );
        assert_eq!(
            close_outcome(Err(api(404, "ORDER_NOT_EXIST"))),
            Ok(CloseOutcome::NotFound)
        );
        assert!(matches!(
            close_outcome(Err(api(500, "SYSTEM_ERROR"))),
            Err(WechatError::Business { .. })
        ));
    }

    #[test]
    fn v3_failures_keep_wechats_code_and_distrust_unverified_answers() {
        let e: WechatError = api(400, "PARAM_ERROR").into();
        assert_eq!(e.code(), Some("PARAM_ERROR"));
        let e: WechatError =
            V3Error::Untrusted(wxpay_core::wechat::v3::VerifyError::BadSignature).into();
        assert!(matches!(e, WechatError::BadReply(_)), "{e:?}");
        assert!(!e.is_retryable());
        let e: WechatError = api(500, "SYSTEM_ERROR").into();
        assert!(e.is_retryable());
        let e: WechatError = V3Error::Status { status: 503 }.into();
        assert!(matches!(e, WechatError::Transport(_)), "{e:?}");
    }
}

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
//! Refunds (`POST /v3/refund/domestic/refunds`, no client certificate: the
//! signature is the credential) and their query answer a [`RefundAnswer`],
//! read strictly: another refund's number, another order, or amounts other
//! than those asked make it [`WechatError::BadReply`], which the service
//! treats as "outcome unknown" (the refund stays PROCESSING until the query
//! tells), never as a refusal. `RESOURCE_NOT_EXISTS` to the query is "WeChat
//! never saw it" (`None`). The day's bill comes in two steps: the signed
//! `GET /v3/bill/tradebill` names the file and its SHA1, then the file itself,
//! unsigned, is checked against that hash before a byte of it is read
//! ([`WechatError::BillHash`] when it differs) and read as v2's bill is.

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
            bill::{check_hash, tradebill_path, HashError},
            models::{
                refund_status, CloseOrder, H5Info, OrderAmount, Payer, PlaceOrder, Prepay,
                RefundAmount, RefundAnswer, RefundRequest, SceneInfo, TradeBill, Transaction,
            },
            pay_params, MerchantSigner,
        },
        MerchantEntry, TradeType,
    },
};
use wxpay_wechat_v3::{V3Client, V3Error};

use super::{
    bill_file, CloseOutcome, PlaceOutcome, Prepaid, RefundAccepted, RefundState, TradeState,
    WechatApi, WechatError,
};

/// v3's error codes the service acts on (v2 spells some of them differently).
const ORDER_PAID: &str = "ORDERPAID";
const ORDER_CLOSED: &str = "ORDER_CLOSED";
const ORDER_NOT_EXIST: &str = "ORDER_NOT_EXIST";
/// The refund query's "no such refund" (the request never reached WeChat).
const RESOURCE_NOT_EXISTS: &str = "RESOURCE_NOT_EXISTS";
/// The trade bill's "no bill that day" (no trade).
const NO_STATEMENT_EXIST: &str = "NO_STATEMENT_EXIST";

/// Direct and partner refunds alike (a sub merchant's carry `sub_mchid`).
const REFUNDS_PATH: &str = "/v3/refund/domestic/refunds";

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
    /// Where WeChat sends refund results: the gateway's `/wechat/v3/refund/notify`.
    refund_notify_url: String,
}

impl V3Api {
    /// The API of `client`'s merchant, which must be a v3 one (a
    /// [`V3Client`] is built only for those), placing orders with
    /// `notify_url` and refunds with `refund_notify_url` as their v3 notify URLs.
    pub fn new(
        client: V3Client,
        notify_url: String,
        refund_notify_url: String,
    ) -> Result<Self, WechatError> {
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
            refund_notify_url,
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

    /// `GET …/refunds/{out_refund_no}`, with the sub merchant for a provider.
    fn refund_query_path(&self, out_refund_no: &OutRefundNo) -> String {
        match self.sub_mch_id() {
            None => format!("{REFUNDS_PATH}/{out_refund_no}"),
            Some(sub) => format!("{REFUNDS_PATH}/{out_refund_no}?sub_mchid={sub}"),
        }
    }
}

/// What v3 is asked to give back for `refund` of `order`: the order by our
/// number, the refund's amount of the order's total, and, for a provider, the
/// sub merchant whose order it is.
fn refund_body(
    order: &Order,
    refund: &Refund,
    sub_mchid: Option<&str>,
    notify_url: &str,
) -> RefundRequest {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    RefundRequest {
        sub_mchid: sub_mchid.map(str::to_owned),
        transaction_id: None,
        out_trade_no: Some(order.out_trade_no.as_str().to_owned()),
        out_refund_no: refund.out_refund_no.as_str().to_owned(),
        reason: non_empty(refund.reason.as_str()),
        notify_url: non_empty(notify_url),
        amount: RefundAmount {
            refund: refund.refund_fee.fen(),
            total: order.total_fee.fen(),
            currency: Some("CNY".to_owned()),
            ..RefundAmount::default()
        },
    }
}

/// What asking for a refund came to. The answer must be about the refund
/// asked for, of the order asked about, for the amounts asked: anything else
/// is a reply not acted on (outcome unknown, the query settles it). A 5xx
/// with a code WeChat does not document as "send it again" is no refusal we
/// can rely on either: the refund may have been taken.
fn refund_outcome(
    order: &Order,
    refund: &Refund,
    answer: Result<RefundAnswer, V3Error>,
) -> Result<RefundAccepted, WechatError> {
    let a = match answer {
        Ok(a) => a,
        Err(e) if matches!(e, V3Error::Api { status: 500.., .. }) && !e.is_retryable() => {
            return Err(WechatError::BadReply(format!(
                "{e}; whether the refund was taken is unknown"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    about(&a, order, refund.out_refund_no.as_str())?;
    if a.amount.refund != refund.refund_fee.fen() {
        return Err(WechatError::BadReply(format!(
            "the answer's amount.refund {} is not the {} fen asked for",
            a.amount.refund,
            refund.refund_fee.fen()
        )));
    }
    if a.amount.total != order.total_fee.fen() {
        return Err(WechatError::BadReply(format!(
            "the answer's amount.total {} is not the order's {} fen",
            a.amount.total,
            order.total_fee.fen()
        )));
    }
    if a.refund_id.is_empty() {
        return Err(WechatError::BadReply(
            "no refund_id in a successful answer".into(),
        ));
    }
    Ok(RefundAccepted {
        status: read_refund_status(&a.status)?,
        success_time: a
            .success_time
            .as_deref()
            .and_then(china_time::parse_rfc3339),
        transaction_id: non_empty(a.transaction_id),
        refund_id: a.refund_id,
    })
}

/// What the refund query's verified answer says about refund
/// `out_refund_no` of `order`.
fn refund_state(
    order: &Order,
    out_refund_no: &OutRefundNo,
    a: RefundAnswer,
) -> Result<RefundState, WechatError> {
    about(&a, order, out_refund_no.as_str())?;
    let fee = |what: &str, fen: i64| {
        Fee::new(fen).map_err(|_| WechatError::BadReply(format!("{what} cannot be read")))
    };
    Ok(RefundState {
        out_refund_no: a.out_refund_no,
        refund_id: non_empty(a.refund_id),
        // Amounts go to the store as WeChat states them: one that is not the
        // refund's or the order's is a contradiction it records, as for v2.
        refund_fee: fee("amount.refund", a.amount.refund)?,
        total_fee: Some(fee("amount.total", a.amount.total)?),
        status: read_refund_status(&a.status)?,
        success_time: a
            .success_time
            .as_deref()
            .and_then(china_time::parse_rfc3339),
        transaction_id: non_empty(a.transaction_id),
    })
}

/// A refund answer must be about the refund asked for, of `order`.
fn about(a: &RefundAnswer, order: &Order, out_refund_no: &str) -> Result<(), WechatError> {
    if a.out_refund_no != out_refund_no {
        return Err(not_ours("out_refund_no"));
    }
    if a.out_trade_no != order.out_trade_no.as_str() {
        return Err(not_ours("out_trade_no"));
    }
    Ok(())
}

/// A refund answer's `status`; one v3 does not define is not guessed at.
fn read_refund_status(status: &str) -> Result<wxpay_core::domain::RefundStatus, WechatError> {
    refund_status(status).ok_or_else(|| {
        WechatError::BadReply(format!("unknown refund status {:?}", bounded(status)))
    })
}

/// The day's bill from the file WeChat served for `described`: its SHA1
/// checked first (the file is unsigned; the hash came in a signed answer),
/// only then unpacked and read.
fn read_bill(described: &TradeBill, file: &[u8]) -> Result<Bill, WechatError> {
    check_hash(file, &described.hash_type, &described.hash_value).map_err(|e| match e {
        HashError::Mismatch { .. } => WechatError::BillHash(e.to_string()),
        HashError::Type(_) => WechatError::BadReply(format!("the bill cannot be checked: {e}")),
    })?;
    bill_file::read_gzipped(file)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
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
        // v3 refunds are signed with the merchant's API key like every other
        // call: no client certificate, nothing else to configure.
        None
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

    #[tracing::instrument(skip_all, fields(out_trade_no = %order.out_trade_no, out_refund_no = %refund.out_refund_no, api = "v3"))]
    async fn refund(&self, order: &Order, refund: &Refund) -> Result<RefundAccepted, WechatError> {
        let answer = self
            .client
            .post(
                REFUNDS_PATH,
                &refund_body(order, refund, self.sub_mch_id(), &self.refund_notify_url),
            )
            .await;
        refund_outcome(order, refund, answer)
    }

    #[tracing::instrument(skip_all, fields(out_trade_no = %order.out_trade_no, %out_refund_no, api = "v3"))]
    async fn refund_query(
        &self,
        order: &Order,
        out_refund_no: &OutRefundNo,
    ) -> Result<Option<RefundState>, WechatError> {
        match self
            .client
            .get::<RefundAnswer>(&self.refund_query_path(out_refund_no))
            .await
        {
            Ok(a) => refund_state(order, out_refund_no, a).map(Some),
            Err(e) if e.code() == Some(RESOURCE_NOT_EXISTS) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(skip(self), fields(merchant = %self.client.entry().name, api = "v3"))]
    async fn bill(&self, day: NaiveDate) -> Result<Option<Bill>, WechatError> {
        let path = tradebill_path(day, true, self.sub_mch_id());
        let described = match self.client.get::<TradeBill>(&path).await {
            Ok(described) => described,
            Err(e) if e.code() == Some(NO_STATEMENT_EXIST) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The download is a signed GET, and a signed request is a credential
        // WeChat accepts for minutes: it goes only to the configured API
        // origin (`download` refuses any other host). The URL came in a
        // verified answer, but a signature proves who wrote the answer, not
        // that every host it names may be handed our merchant's credential.
        let file = self
            .client
            .download(&described.download_url, bill_file::MAX_BILL_BYTES)
            .await?;
        read_bill(&described, &file).map(Some)
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
    use std::io::Write;

    use wxpay_core::{
        domain::{
            Attach, ClientIp, Description, IdempotencyKey, OpenId, OutTradeNo, Placement,
            RefundReason, RefundStatus,
        },
        wechat::{v3::bill::sha1_hex, SignType},
    };

    use super::*;

    fn order(no: &str, fen: i64) -> Order {
        let now = Utc::now();
        Order {
            out_trade_no: OutTradeNo::parse(no).expect("number"),
            idempotency_key: IdempotencyKey::parse(&format!("key-{no}")).expect("key"),
            status: OrderStatus::Success,
            version: 2,
            openid: OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").expect("openid"),
            description: Description::parse("测试商品").expect("description"),
            total_fee: Fee::new(fen).expect("fee"),
            attach: Attach::parse("").expect("attach"),
            client_ip: ClientIp::parse("127.0.0.1").expect("ip"),
            sign_type: SignType::Md5,
            expires_at: None,
            prepay_id: Some("wx-prepay".into()),
            prepay_expires_at: None,
            transaction_id: Some("4200000001".into()),
            cash_fee: Some(fen),
            created_at: now,
            updated_at: now,
            paid_at: Some(now),
            refunded_fee: 0,
            placement: Placement::default(),
            pay_url: None,
        }
    }

    fn refund_of(order: &Order, rno: &str, fen: i64) -> Refund {
        let now = Utc::now();
        Refund {
            out_refund_no: OutRefundNo::parse(rno).expect("refund number"),
            out_trade_no: order.out_trade_no.clone(),
            refund_id: None,
            refund_fee: Fee::new(fen).expect("fee"),
            status: RefundStatus::Processing,
            reason: RefundReason::parse("七天无理由退货").expect("reason"),
            failure: None,
            created_at: now,
            updated_at: now,
            succeeded_at: None,
        }
    }

    /// WeChat's answer about refund `rno` of order `no`: `fen` of `total`.
    fn answer(no: &str, rno: &str, fen: i64, total: i64, status: &str) -> RefundAnswer {
        RefundAnswer {
            refund_id: "50000000382019052709732678859".into(),
            out_refund_no: rno.into(),
            transaction_id: "4200000001".into(),
            out_trade_no: no.into(),
            status: status.into(),
            success_time: (status == "SUCCESS").then(|| "2026-11-23T16:18:12+08:00".into()),
            amount: RefundAmount {
                refund: fen,
                total,
                payer_total: Some(total),
                payer_refund: Some(fen),
                currency: Some("CNY".into()),
            },
            ..RefundAnswer::default()
        }
    }

    #[test]
    fn a_refund_answer_about_our_refund_is_accepted_with_where_it_stands() {
        let o = order("T-v3r-1", 1000);
        let r = refund_of(&o, "R-v3r-1", 300);
        let accepted = refund_outcome(
            &o,
            &r,
            Ok(answer("T-v3r-1", "R-v3r-1", 300, 1000, "PROCESSING")),
        )
        .expect("ours");
        assert_eq!(accepted.status, RefundStatus::Processing);
        assert_eq!(accepted.refund_id, "50000000382019052709732678859");
        assert_eq!(accepted.transaction_id.as_deref(), Some("4200000001"));
        assert_eq!(accepted.success_time, None);

        // The same number again after a lost reply: WeChat says where it stands.
        let done = refund_outcome(
            &o,
            &r,
            Ok(answer("T-v3r-1", "R-v3r-1", 300, 1000, "SUCCESS")),
        )
        .expect("ours");
        assert_eq!(done.status, RefundStatus::Success);
        assert_eq!(
            done.success_time.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-23T08:18:12+00:00")
        );
        for (status, ours) in [
            ("ABNORMAL", RefundStatus::Change),
            ("CLOSED", RefundStatus::Closed),
        ] {
            let a = refund_outcome(&o, &r, Ok(answer("T-v3r-1", "R-v3r-1", 300, 1000, status)))
                .expect("ours");
            assert_eq!(a.status, ours, "{status}");
        }
    }

    #[test]
    fn a_refund_answer_about_anything_but_what_was_asked_is_not_acted_on() {
        let o = order("T-v3r-2", 1000);
        let r = refund_of(&o, "R-v3r-2", 300);
        let no_id = RefundAnswer {
            refund_id: String::new(),
            ..answer("T-v3r-2", "R-v3r-2", 300, 1000, "PROCESSING")
        };
        for bad in [
            answer("T-v3r-2", "R-other", 300, 1000, "PROCESSING"),
            answer("T-other", "R-v3r-2", 300, 1000, "PROCESSING"),
            answer("T-v3r-2", "R-v3r-2", 301, 1000, "PROCESSING"),
            answer("T-v3r-2", "R-v3r-2", 300, 999, "PROCESSING"),
            // v2's spelling, or any status v3 does not define.
            answer("T-v3r-2", "R-v3r-2", 300, 1000, "REFUNDCLOSE"),
            no_id,
        ] {
            let got = refund_outcome(&o, &r, Ok(bad.clone()));
            assert!(
                matches!(got, Err(WechatError::BadReply(_))),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn refund_refusals_keep_their_code_and_what_is_unknown_is_never_a_refusal() {
        let o = order("T-v3r-3", 1000);
        let r = refund_of(&o, "R-v3r-3", 300);
        for (status, code) in [
            (403, "NOT_ENOUGH"),
            (403, "USER_ACCOUNT_ABNORMAL"),
            (404, "RESOURCE_NOT_EXISTS"),
            (400, "INVALID_REQUEST"),
            (400, "PARAM_ERROR"),
        ] {
            let got = refund_outcome(&o, &r, Err(api(status, code)));
            assert!(
                matches!(&got, Err(e @ WechatError::Business { .. }) if e.code() == Some(code) && !e.is_retryable()),
                "{code}: {got:?}"
            );
        }
        // "Send it again": retryable, the service keeps the refund PROCESSING.
        let busy = refund_outcome(&o, &r, Err(api(500, "SYSTEM_ERROR")));
        assert!(matches!(&busy, Err(e) if e.is_retryable()), "{busy:?}");
        let limited = refund_outcome(&o, &r, Err(api(429, "FREQUENCY_LIMITED")));
        assert_eq!(
            limited.as_ref().err().and_then(WechatError::code),
            Some("FREQUENCY_LIMITED")
        );
        // A 5xx with another code, or an answer that failed verification:
        // WeChat may have taken it.
        for unknown in [
            api(500, "INTERNAL_ERROR"),
            V3Error::Untrusted(wxpay_core::wechat::v3::VerifyError::BadSignature),
            V3Error::BadReply("not the JSON expected".into()),
        ] {
            let got = refund_outcome(&o, &r, Err(unknown.clone()));
            assert!(
                matches!(got, Err(WechatError::BadReply(_))),
                "{unknown:?}: {got:?}"
            );
        }
        assert_eq!(
            refund_outcome(&o, &r, Err(V3Error::Timeout)),
            Err(WechatError::Timeout)
        );
    }

    #[test]
    fn a_refund_query_answer_becomes_the_refunds_state() {
        let o = order("T-v3r-4", 1000);
        let rno = OutRefundNo::parse("R-v3r-4").expect("number");
        let state = refund_state(&o, &rno, answer("T-v3r-4", "R-v3r-4", 250, 1000, "SUCCESS"))
            .expect("ours");
        assert_eq!(state.status, RefundStatus::Success);
        assert_eq!(state.refund_fee.fen(), 250);
        assert_eq!(state.total_fee.map(Fee::fen), Some(1000));
        assert_eq!(
            state.refund_id.as_deref(),
            Some("50000000382019052709732678859")
        );
        assert_eq!(state.transaction_id.as_deref(), Some("4200000001"));
        assert!(state.success_time.is_some());
        let abnormal = refund_state(
            &o,
            &rno,
            answer("T-v3r-4", "R-v3r-4", 250, 1000, "ABNORMAL"),
        )
        .expect("ours");
        assert_eq!(abnormal.status, RefundStatus::Change);

        for bad in [
            answer("T-other", "R-v3r-4", 250, 1000, "SUCCESS"),
            answer("T-v3r-4", "R-other", 250, 1000, "SUCCESS"),
            answer("T-v3r-4", "R-v3r-4", 0, 1000, "SUCCESS"),
            answer("T-v3r-4", "R-v3r-4", 250, 1000, "DONE"),
        ] {
            let got = refund_state(&o, &rno, bad.clone());
            assert!(
                matches!(got, Err(WechatError::BadReply(_))),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn refunds_ask_for_what_the_order_and_refund_say() {
        let o = order("T-v3r-5", 1000);
        let r = refund_of(&o, "R-v3r-5", 300);
        let notify = "https://pay.example.com/wechat/v3/refund/notify";
        assert_eq!(
            serde_json::to_value(refund_body(&o, &r, None, notify)).expect("json"),
            serde_json::json!({"out_trade_no":"T-v3r-5","out_refund_no":"R-v3r-5",
                "reason":"七天无理由退货","notify_url":notify,
                "amount":{"refund":300,"total":1000,"currency":"CNY"}})
        );
        // A provider names the sub merchant; no reason, no notify URL: left out.
        let quiet = Refund {
            reason: RefundReason::parse("").expect("empty"),
            ..r
        };
        assert_eq!(
            serde_json::to_value(refund_body(&o, &quiet, Some("1900000109"), "")).expect("json"),
            serde_json::json!({"sub_mchid":"1900000109","out_trade_no":"T-v3r-5",
                "out_refund_no":"R-v3r-5","amount":{"refund":300,"total":1000,"currency":"CNY"}})
        );
    }

    const BILL: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n\
`2026-11-23 16:33:45,`wx0123456789abcdef,`1900000109,`0,`,`4200000001,`T1,`oUpF8u,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.01,`0.00,`0,`0,`0.00,`0.00,`,`,`商品,`,`0.01,`0.60%,`1.01,`0.00,`\r\n\
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n\
`1,`1.01,`0.00,`0.00,`0.01,`1.01,`0.00\r\n";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("write");
        enc.finish().expect("finish")
    }

    fn described(file: &[u8]) -> TradeBill {
        TradeBill {
            hash_type: "SHA1".into(),
            hash_value: sha1_hex(file),
            download_url: "https://api.mch.weixin.qq.com/v3/billdownload/file?token=t".into(),
        }
    }

    #[test]
    fn a_bill_is_read_only_when_its_bytes_are_the_ones_hashed() {
        let file = gzip(BILL.as_bytes());
        let bill = read_bill(&described(&file), &file).expect("the file WeChat described");
        assert_eq!(bill.rows.len(), 1);
        assert_eq!(bill.rows[0].out_trade_no, "T1");
        assert_eq!(bill.rows[0].total_fee, 101);

        // One byte of difference, or the hash of the unpacked text: refused
        // before the file is read, saying the hash did not match.
        let mut other = file.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        for (file, hashed) in [(&other, &file), (&file, &BILL.as_bytes().to_vec())] {
            let got = read_bill(&described(hashed), file);
            assert!(
                matches!(&got, Err(WechatError::BillHash(why)) if why.contains("does not match")),
                "{got:?}"
            );
        }
        let sha256 = TradeBill {
            hash_type: "SHA256".into(),
            ..described(&file)
        };
        assert!(matches!(
            read_bill(&sha256, &file),
            Err(WechatError::BadReply(_))
        ));
        // Hashed right but not gzip: not read either.
        let plain = BILL.as_bytes();
        assert!(matches!(
            read_bill(&described(plain), plain),
            Err(WechatError::BadReply(_))
        ));
    }

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

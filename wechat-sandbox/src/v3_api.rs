//! The WeChat Pay v3 endpoints, for v3 merchants: placing (`POST
//! /v3/pay/[partner/]transactions/{jsapi|native|app|h5}`), querying (`GET
//! …/out-trade-no/{no}` and `…/id/{transaction_id}`), closing (`POST
//! …/out-trade-no/{no}/close`, 204), refunds (`POST
//! /v3/refund/domestic/refunds`, `GET …/refunds/{out_refund_no}`: what they do
//! is `v3_refunds`'), the trade bill (`GET /v3/bill/tradebill`, whose file
//! `v3_bills` serves) and `GET /v3/certificates`. Thin, as
//! `wechat_api` is for v2: take an armed fault, check the `Authorization`
//! and the request with `v3_protocol`, act on the shared order book (the same
//! orders and state machine as v2), and answer JSON signed with the key of
//! the merchant's mode (`wechat_keys`). Errors are WeChat's `{code, message}`.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{Extension, Path, Query, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use chrono::{TimeDelta, Utc};
use rand::{distr::Alphanumeric, Rng};
use wxpay_core::wechat::v3::{
    aead,
    models::{CertificateEntry, Certificates, CloseOrder, EncryptedResource, Prepay},
};

use crate::{
    client_auth::ClientAuth,
    faults::Fault,
    orders::{CloseError, PlaceError},
    protocol::OrderRef,
    state::AppState,
    v3_bills,
    v3_protocol::{self, Family, SignedRequest, TradeKind, V3Error},
    v3_refunds,
    wechat_api::hang_and_drop,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/pay/transactions/{kind}", post(place_direct))
        .route("/v3/pay/partner/transactions/{kind}", post(place_partner))
        .route(
            "/v3/pay/transactions/out-trade-no/{no}",
            get(query_direct_by_no),
        )
        .route("/v3/pay/transactions/id/{id}", get(query_direct_by_id))
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{no}",
            get(query_partner_by_no),
        )
        .route(
            "/v3/pay/partner/transactions/id/{id}",
            get(query_partner_by_id),
        )
        .route(
            "/v3/pay/transactions/out-trade-no/{no}/close",
            post(close_direct),
        )
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{no}/close",
            post(close_partner),
        )
        .route("/v3/refund/domestic/refunds", post(refund))
        .route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            get(query_refund),
        )
        .route("/v3/bill/tradebill", get(trade_bill))
        .route("/v3/certificates", get(certificates))
        .merge(v3_bills::routes())
}

/// What a call asks for, once its path is read.
#[derive(Debug, Clone)]
enum Call {
    Place(Family, String),
    Query(Family, OrderRef, BTreeMap<String, String>),
    Close(Family, String),
    Refund,
    RefundQuery(String, BTreeMap<String, String>),
    /// The query, and this sandbox's base URL as the caller reached it.
    TradeBill(BTreeMap<String, String>, String),
    Certificates,
}

/// A successful answer: its status and body (empty for 204).
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(value: &impl serde::Serialize) -> Self {
        Self {
            status: StatusCode::OK,
            // Our own models (strings, integers) always serialize.
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

/// The parts of the request `serve` reads.
struct Incoming {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

async fn place_direct(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body,
    };
    serve(state, Call::Place(Family::Direct, kind), incoming).await
}

async fn place_partner(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body,
    };
    serve(state, Call::Place(Family::Partner, kind), incoming).await
}

async fn query_direct_by_no(
    State(state): State<AppState>,
    Path(no): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body: Bytes::new(),
    };
    let call = Call::Query(Family::Direct, OrderRef::OutTradeNo(no), query);
    serve(state, call, incoming).await
}

async fn query_direct_by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body: Bytes::new(),
    };
    let call = Call::Query(Family::Direct, OrderRef::TransactionId(id), query);
    serve(state, call, incoming).await
}

async fn query_partner_by_no(
    State(state): State<AppState>,
    Path(no): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body: Bytes::new(),
    };
    let call = Call::Query(Family::Partner, OrderRef::OutTradeNo(no), query);
    serve(state, call, incoming).await
}

async fn query_partner_by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body: Bytes::new(),
    };
    let call = Call::Query(Family::Partner, OrderRef::TransactionId(id), query);
    serve(state, call, incoming).await
}

async fn close_direct(
    State(state): State<AppState>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body,
    };
    serve(state, Call::Close(Family::Direct, no), incoming).await
}

async fn close_partner(
    State(state): State<AppState>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body,
    };
    serve(state, Call::Close(Family::Partner, no), incoming).await
}

async fn refund(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body,
    };
    serve(state, Call::Refund, incoming).await
}

async fn query_refund(
    State(state): State<AppState>,
    Path(out_refund_no): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body: Bytes::new(),
    };
    serve(state, Call::RefundQuery(out_refund_no, query), incoming).await
}

async fn trade_bill(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
    tls: Option<Extension<ClientAuth>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // Only the TLS listener puts a ClientAuth on its requests.
    let base = v3_bills::own_base(&uri, &headers, tls.is_some());
    let incoming = Incoming {
        method,
        uri,
        headers,
        body: Bytes::new(),
    };
    serve(state, Call::TradeBill(query, base), incoming).await
}

async fn certificates(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let incoming = Incoming {
        method,
        uri,
        headers,
        body: Bytes::new(),
    };
    serve(state, Call::Certificates, incoming).await
}

/// Every v3 call: a fault, the signature, the call, a signed answer.
async fn serve(state: AppState, call: Call, incoming: Incoming) -> Response {
    let fault = state.faults().take_v3();
    if fault == Some(Fault::Timeout) {
        return hang_and_drop(&state).await;
    }
    let now = Utc::now();
    let header = |name: &str| {
        incoming
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let uri = incoming
        .uri
        .path_and_query()
        .map_or(incoming.uri.path(), |p| p.as_str());
    let request = SignedRequest {
        method: incoming.method.as_str(),
        uri,
        authorization: header("authorization"),
        body: &incoming.body,
    };
    let signed_by = match state.keys() {
        Some(keys) => v3_protocol::authenticate(&request, &keys, now),
        None => Err(V3Error::sign("商户号未开通APIv3（沙箱：没有托管的v3商户）")),
    };
    let outcome = match &signed_by {
        Err(e) => Err(e.clone()),
        // Refused before touching any order, as a real SYSTEM_ERROR may be:
        // the client must retry with the very same request.
        Ok(_) if fault == Some(Fault::SystemError) => Err(V3Error::system_error()),
        Ok(_) if fault == Some(Fault::FrequencyLimited) => Err(V3Error::frequency_limited()),
        Ok(mch_id) => act(&state, &call, mch_id, &incoming.body),
    };
    if let Err(e) = &outcome {
        tracing::info!(?call, code = e.code, message = %e.message, "v3 request refused");
    }
    if fault == Some(Fault::ProcessThenTimeout) {
        tracing::info!(?call, "process_then_timeout fault: the reply will be lost");
        return hang_and_drop(&state).await;
    }
    let (status, body, content_type) = match outcome {
        Ok(answer) => (answer.status, answer.body, "application/json"),
        Err(e) => (e.status, e.body().into_bytes(), "application/json"),
    };
    let mut response = (status, body.clone()).into_response();
    let headers = response.headers_mut();
    if !body.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert("request-id", id);
    }
    // An answer is signed for the merchant whose signature was good: an
    // unknown or forged caller gets its 401 unsigned (there is no one to sign for).
    if let Ok(mch_id) = &signed_by {
        let requested = header("wechatpay-serial");
        let signer = state
            .keys()
            .and_then(|k| k.answer_signer(mch_id, requested));
        let forged = fault == Some(Fault::BadSignature);
        match signer.map(|s| v3_protocol::sign(&s, &body, Utc::now(), forged)) {
            Some(Ok(signature)) => {
                for (name, value) in signature.headers() {
                    if let Ok(v) = HeaderValue::from_str(value) {
                        headers.insert(name, v);
                    }
                }
            }
            _ => tracing::error!(mch_id, "a v3 answer could not be signed"),
        }
    }
    response
}

/// WeChat's `Request-ID` header: what its support asks a merchant for.
fn request_id() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// What an authenticated call does.
fn act(state: &AppState, call: &Call, mch_id: &str, body: &[u8]) -> Result<Answer, V3Error> {
    let now = Utc::now();
    match call {
        Call::Place(family, kind) => {
            let kind = TradeKind::from_path(kind).ok_or_else(V3Error::no_interface)?;
            let new = v3_protocol::place(
                kind,
                *family,
                body,
                mch_id,
                state.accounts(),
                now,
                state.config().min_expire_span(),
            )?;
            let placed = state.orders().place(new, now).map_err(|e| match e {
                PlaceError::DuplicateOutTradeNo => {
                    V3Error::out_trade_no_used("商户订单号重复，请核实商户订单号是否重复提交")
                }
                PlaceError::UsedByAnotherMerchant => {
                    V3Error::out_trade_no_used("商户订单号重复（沙箱：该订单号已被另一商户使用）")
                }
                PlaceError::Paid => V3Error::order_paid(),
                PlaceError::Closed => V3Error::order_closed(),
            })?;
            let prepay = match kind {
                TradeKind::Jsapi | TradeKind::App => Prepay {
                    prepay_id: Some(placed.prepay_id),
                    ..Prepay::default()
                },
                TradeKind::Native => Prepay {
                    code_url: placed.code_url,
                    ..Prepay::default()
                },
                TradeKind::H5 => Prepay {
                    h5_url: placed.mweb_url,
                    ..Prepay::default()
                },
            };
            Ok(Answer::json(&prepay))
        }
        Call::Query(family, reference, query) => {
            let owner = query_owner(state, *family, query, mch_id)?;
            if let OrderRef::OutTradeNo(no) = reference {
                v3_protocol::out_trade_no(no)?;
            }
            let orders = state.orders();
            let order = orders
                .find(&owner, reference)
                .ok_or_else(V3Error::order_not_exist)?;
            Ok(Answer::json(&v3_protocol::transaction(order)))
        }
        Call::Close(family, no) => {
            let request: CloseOrder = serde_json::from_slice(body)
                .map_err(|e| V3Error::param(format!("请求体参数错误：{e}")))?;
            let owner = match family {
                Family::Direct => {
                    v3_protocol::same_merchant(request.mchid.as_deref(), "/body/mchid", mch_id)?;
                    v3_protocol::owner_named(state.accounts(), mch_id, None)?
                }
                Family::Partner => {
                    v3_protocol::same_merchant(
                        request.sp_mchid.as_deref(),
                        "/body/sp_mchid",
                        mch_id,
                    )?;
                    let sub = request
                        .sub_mchid
                        .as_deref()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| V3Error::param("sub_mchid为必填项"))?;
                    v3_protocol::owner_named(state.accounts(), mch_id, Some(sub))?
                }
            };
            let no = v3_protocol::out_trade_no(no)?;
            // v3 has no minimum age for closing (v2's five minutes is a
            // closeorder rule; v3 only advises waiting).
            state
                .orders()
                .close(&owner, &no, now, TimeDelta::zero())
                .map_err(|e| match e {
                    CloseError::NotFound => V3Error::order_not_exist(),
                    CloseError::Paid => V3Error::order_paid(),
                    CloseError::Closed => V3Error::order_closed(),
                    CloseError::TooYoung => V3Error::invalid("订单生成后不能马上关单"),
                })?;
            Ok(Answer {
                status: StatusCode::NO_CONTENT,
                body: Vec::new(),
            })
        }
        Call::Refund => v3_refunds::apply(state, mch_id, body).map(|a| Answer::json(&a)),
        Call::RefundQuery(out_refund_no, query) => {
            v3_refunds::query(state, mch_id, out_refund_no, query).map(|a| Answer::json(&a))
        }
        Call::TradeBill(query, base) => {
            v3_bills::trade_bill(state, mch_id, query, base).map(|b| Answer::json(&b))
        }
        Call::Certificates => certificate_list(state, mch_id),
    }
}

/// The owner a query names in its query string: `mchid` (direct), or
/// `sp_mchid` and `sub_mchid` (partner).
fn query_owner(
    state: &AppState,
    family: Family,
    query: &BTreeMap<String, String>,
    mch_id: &str,
) -> Result<crate::accounts::Owner, V3Error> {
    let get = |k: &str| query.get(k).map(String::as_str);
    match family {
        Family::Direct => {
            v3_protocol::same_merchant(get("mchid"), "/query/mchid", mch_id)?;
            v3_protocol::owner_named(state.accounts(), mch_id, None)
        }
        Family::Partner => {
            v3_protocol::same_merchant(get("sp_mchid"), "/query/sp_mchid", mch_id)?;
            let sub = get("sub_mchid")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| V3Error::param("输入源“/query/sub_mchid”为必填项"))?;
            v3_protocol::owner_named(state.accounts(), mch_id, Some(sub))
        }
    }
}

/// `GET /v3/certificates`: every platform certificate valid now, each sealed
/// under the caller's APIv3 key (associated_data `certificate`). A merchant
/// in public-key mode has none, as WeChat gives those merchants no
/// certificate: the list is empty.
fn certificate_list(state: &AppState, mch_id: &str) -> Result<Answer, V3Error> {
    let keys = state.keys().ok_or_else(V3Error::system_error)?;
    let merchant = keys.merchant(mch_id).ok_or_else(V3Error::system_error)?;
    let mut data = Vec::new();
    if merchant.mode != crate::wechat_keys::KeyMode::PublicKey {
        for cert in keys.certificates(Utc::now()) {
            let nonce: String = rand::rng()
                .sample_iter(Alphanumeric)
                .take(12)
                .map(char::from)
                .collect();
            let ciphertext = aead::encrypt(
                &merchant.apiv3_key,
                &nonce,
                "certificate",
                cert.pem().as_bytes(),
            )
            .map_err(|_| V3Error::system_error())?;
            let (effective_time, expire_time) = cert.validity_rfc3339();
            data.push(CertificateEntry {
                serial_no: cert.serial_no().to_owned(),
                effective_time,
                expire_time,
                encrypt_certificate: EncryptedResource {
                    algorithm: aead::ALGORITHM.to_owned(),
                    ciphertext,
                    associated_data: "certificate".to_owned(),
                    nonce,
                    original_type: None,
                },
            });
        }
    }
    Ok(Answer::json(&Certificates { data }))
}

//! The v3 trade bill, in WeChat's two steps. `GET /v3/bill/tradebill` (signed
//! request, signed answer, through `v3_api`) builds the day's bill with
//! `bill` (v2 and v3 trades alike, the v2 text format), keeps the file as it
//! will be served (gzipped when asked) and answers its SHA1 and a
//! `download_url` back at this sandbox. `GET /v3/billdownload/file?token=…`
//! (this module's own route) serves that file to the merchant it was made
//! for: the request must carry the merchant's valid `Authorization`, and the
//! answer is the raw file, unsigned, as WeChat's is. The `bill_wrong_hash`
//! fault makes the first step give a hash that is not the file's.

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, HeaderValue, Method, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use chrono::Utc;
use rand::{distr::Alphanumeric, Rng};
use wxpay_core::wechat::v3::{bill::sha1_hex, models::TradeBill};

use crate::{
    accounts::Owner,
    bill::{self, Download},
    faults::Fault,
    state::AppState,
    v3_protocol::{self, SignedRequest, V3Error},
    wechat_api::hang_and_drop,
};

/// Where the file of a trade bill answer is fetched.
pub const DOWNLOAD_PATH: &str = "/v3/billdownload/file";

pub fn routes() -> Router<AppState> {
    Router::new().route(DOWNLOAD_PATH, get(download))
}

/// `GET /v3/bill/tradebill` for the merchant `mch_id`, whose files are then
/// fetched from `base` (this sandbox as the caller reached it).
pub(crate) fn trade_bill(
    state: &AppState,
    mch_id: &str,
    query: &BTreeMap<String, String>,
    base: &str,
) -> Result<TradeBill, V3Error> {
    let request = v3_protocol::trade_bill_request(query)?;
    // Without sub_mchid, the account's whole bill (a provider's: every sub
    // merchant's trades), as v2's downloadbill.
    let scope = match &request.sub_mchid {
        None => Owner {
            mch_id: mch_id.to_owned(),
            sub_mch_id: None,
        },
        Some(sub) => v3_protocol::owner_named(state.accounts(), mch_id, Some(sub))?,
    };
    let text = bill::build(
        &state.orders(),
        &scope,
        request.date,
        request.bill_type,
        state.config().bill_layout,
    )
    .ok_or_else(V3Error::no_statement)?;
    let bytes = if request.gzip {
        bill::gzip(&text).map_err(|_| V3Error::system_error())?
    } else {
        text.into_bytes()
    };
    let hash_value = if state.faults().take_bill_wrong_hash() {
        tracing::info!(%mch_id, date = %request.date, "bill_wrong_hash fault: the hash is not the file's");
        // Well formed, and the SHA1 of other bytes.
        sha1_hex(&[bytes.as_slice(), b"\r\n"].concat())
    } else {
        sha1_hex(&bytes)
    };
    let token = download_token();
    state.bill_downloads().insert(
        token.clone(),
        Download {
            mch_id: mch_id.to_owned(),
            bytes,
            gzip: request.gzip,
        },
    );
    Ok(TradeBill {
        hash_type: "SHA1".to_owned(),
        hash_value,
        download_url: format!("{base}{DOWNLOAD_PATH}?token={token}"),
    })
}

/// WeChat's download tokens are long URL-safe strings.
fn download_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

/// `GET /v3/billdownload/file?token=…`: the file, raw and unsigned, to the
/// merchant it was described to. Faults: `timeout`, `process_then_timeout`,
/// `systemerror` and `frequency_limited` as for any v3 call; a bad signature
/// is left for a signed answer. Refusals are `{code, message}`, unsigned too.
async fn download(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let fault = state.faults().take_v3_unsigned();
    if fault == Some(Fault::Timeout) {
        return hang_and_drop(&state).await;
    }
    let outcome = fetch(&state, &method, &uri, &headers, &query, fault);
    if fault == Some(Fault::ProcessThenTimeout) {
        return hang_and_drop(&state).await;
    }
    match outcome {
        Ok(file) => {
            let content_type = if file.gzip {
                "application/x-gzip"
            } else {
                "text/plain;charset=utf-8"
            };
            ([(header::CONTENT_TYPE, content_type)], file.bytes).into_response()
        }
        Err(e) => {
            tracing::info!(code = e.code, message = %e.message, "bill download refused");
            let mut response = (e.status, e.body()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

/// The file a download asks for, once its `Authorization` proved whose.
fn fetch(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    fault: Option<Fault>,
) -> Result<Download, V3Error> {
    let request = SignedRequest {
        method: method.as_str(),
        uri: uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim),
        body: b"",
    };
    let mch_id = match state.keys() {
        Some(keys) => v3_protocol::authenticate(&request, &keys, Utc::now())?,
        None => return Err(V3Error::sign("商户号未开通APIv3（沙箱：没有托管的v3商户）")),
    };
    match fault {
        Some(Fault::SystemError) => return Err(V3Error::system_error()),
        Some(Fault::FrequencyLimited) => return Err(V3Error::frequency_limited()),
        _ => {}
    }
    let token = query.get("token").map(String::as_str).unwrap_or("");
    // Another merchant's file is not found: nothing said about its existence.
    state
        .bill_downloads()
        .get(token)
        .filter(|d| d.mch_id == mch_id)
        .cloned()
        .ok_or_else(|| V3Error::resource_not_exists("账单文件不存在或下载链接已失效"))
}

/// `scheme://host[:port]` of this sandbox as the request reached it: what a
/// download_url must start with for the caller to reach the file again.
pub(crate) fn own_base(uri: &Uri, headers: &HeaderMap, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        // HTTP/1.1 always names the host; an HTTP/1.0 caller is local.
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_the_host_the_caller_used() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4567"));
        let uri: Uri = "/v3/bill/tradebill?bill_date=2026-12-06"
            .parse()
            .expect("uri");
        assert_eq!(own_base(&uri, &headers, false), "http://127.0.0.1:4567");
        assert_eq!(own_base(&uri, &headers, true), "https://127.0.0.1:4567");
        let absolute: Uri = "http://sandbox:80/v3/bill/tradebill".parse().expect("uri");
        assert_eq!(
            own_base(&absolute, &HeaderMap::new(), false),
            "http://sandbox:80"
        );
    }
}

//! Fuzzes the reading of WeChat's `orderquery` reply
//! (`wxpay_core::wechat::order_query::read_reply`), which the gateway runs
//! before it believes a cloud-pay SUCCESS. The first input byte picks the
//! mode: `0…` the rest is a reply body as received (XML); `1…` the rest is a
//! field map (`key\0value\0…`) that this target signs with the merchant's key
//! (MD5 or HMAC-SHA256 as the second byte picks) before reading it. Checks:
//! - nothing panics; an unsigned or wrongly signed reply, or one whose
//!   return_code is not SUCCESS, never reads as anything but an error;
//! - `Paid` only when return_code and result_code are SUCCESS, the signature
//!   verifies under the merchant's key with the asked sign type, the reply is
//!   about the asked order and merchant, and trade_state is SUCCESS or REFUND;
//!   its transaction_id and total_fee pass their parsers' oracles;
//! - the same signed reply verified under the other algorithm or another key
//!   is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_core::{
    domain::OutTradeNo,
    wechat::{
        order_query::{read_reply, Answer, ReplyError},
        sign, xml, Fields, Merchant, MerchantEntry, SignType,
    },
};
use wxpay_fuzz::{check_fee_wire, check_ids, fields_from_pairs, key, other_key, APP_ID, MCH_ID};

fn entry(key: wxpay_core::wechat::ApiKey) -> MerchantEntry {
    MerchantEntry::direct(
        "default",
        Merchant {
            app_id: APP_ID.into(),
            mch_id: MCH_ID.into(),
            api_key: key,
        },
        SignType::Md5,
    )
}

fn check(reply: &Fields, st: SignType, asked: &OutTradeNo) {
    let ours = entry(key());
    let got = read_reply(reply, &ours, st, asked);
    let get = |k: &str| reply.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let verifies = sign::verify(reply, &ours.merchant.api_key, st).is_ok();
    if get("return_code") != Some("SUCCESS") {
        assert!(matches!(got, Err(ReplyError::Return(_))), "{got:?}");
        return;
    }
    if !verifies {
        assert_eq!(got, Err(ReplyError::Signature));
        return;
    }
    if let Ok(Answer::Paid {
        transaction_id,
        total_fee,
    }) = &got
    {
        assert_eq!(get("result_code"), Some("SUCCESS"));
        assert_eq!(get("out_trade_no"), Some(asked.as_str()));
        assert!(matches!(get("trade_state"), Some("SUCCESS" | "REFUND")));
        assert!(get("mch_id").is_none_or(|m| m == MCH_ID));
        assert!(get("appid").is_none_or(|a| a == APP_ID));
        if let Some(t) = transaction_id {
            check_ids(t.as_str());
            assert_eq!(get("transaction_id"), Some(t.as_str()));
        }
        if let Some(f) = total_fee {
            check_fee_wire(&f.fen().to_string());
            assert_eq!(get("total_fee"), Some(f.fen().to_string().as_str()));
        }
    }
    // Under the other algorithm (when it names none) or another key: refused.
    if !reply.contains_key("sign_type") {
        let other = match st {
            SignType::Md5 => SignType::HmacSha256,
            SignType::HmacSha256 => SignType::Md5,
        };
        assert_eq!(read_reply(reply, &ours, other, asked), Err(ReplyError::Signature));
    }
    assert_eq!(
        read_reply(reply, &entry(other_key()), st, asked),
        Err(ReplyError::Signature)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let asked = OutTradeNo::parse("FUZZ0001").expect("valid");
    if mode % 2 == 0 {
        if let Ok(reply) = xml::decode(rest) {
            // Unsigned by us: it verifies only if the input carries a valid signature.
            check(&reply, SignType::Md5, &asked);
            check(&reply, SignType::HmacSha256, &asked);
        }
        return;
    }
    let Some((&pick, rest)) = rest.split_first() else {
        return;
    };
    let st = if pick % 2 == 0 {
        SignType::Md5
    } else {
        SignType::HmacSha256
    };
    let mut reply = fields_from_pairs(rest);
    reply.remove("sign_type");
    if pick & 2 == 0 {
        reply.insert("out_trade_no".into(), asked.as_str().into());
    }
    let signature = sign::sign(reply.iter(), &key(), st);
    reply.insert("sign".into(), signature);
    check(&reply, st, &asked);
});

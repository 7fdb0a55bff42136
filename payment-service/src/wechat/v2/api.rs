//! v2's side of [`WechatApi`]: each call becomes the v2 request it stands for,
//! signed with the sign type the order was placed with (the merchant's own for
//! the bill, which is about no one order), and each v2 answer the service acts
//! on becomes a typed outcome: `ORDERPAID` and `ORDERCLOSED` to unifiedorder,
//! `ORDERNOTEXIST` to orderquery, `REFUNDNOTEXIST` to refundquery (the last
//! two as `None`). requestPayment and OpenSDK parameters are signed here too,
//! with the merchant's API key, as v2 signs them.

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use wxpay_core::{
    domain::{Nonce, Order, OutRefundNo, Refund},
    wechat::{
        bill::Bill,
        order_query::ORDER_NOT_EXIST,
        pay_params::{self, AppPaymentParams, PaymentParams},
        MerchantEntry,
    },
};

use super::{RefundRequest, UnifiedOrder, V2Client};
use crate::wechat::{
    CloseOutcome, PlaceOutcome, RefundAccepted, RefundState, TradeState, WechatApi, WechatError,
};

#[async_trait]
impl WechatApi for V2Client {
    fn entry(&self) -> &MerchantEntry {
        &self.entry
    }

    fn refund_blocker(&self) -> Option<String> {
        // WeChat serves /secapi/ (refunds) only over the merchant's client certificate.
        (!self.has_client_certificate()).then(|| {
            format!(
                "refunds need merchant {}'s API certificate: set WECHAT_CLIENT_CERT and \
                 WECHAT_CLIENT_KEY, or WECHAT_CLIENT_P12 (client_cert and client_key, or \
                 client_p12, in its [[merchant]] table)",
                self.entry.name
            )
        })
    }

    async fn place(&self, order: &Order) -> Result<PlaceOutcome, WechatError> {
        let placement = &order.placement;
        let placed = self
            .unified_order(&UnifiedOrder {
                out_trade_no: order.out_trade_no.as_str(),
                body: order.description.as_str(),
                total_fee: order.total_fee,
                attach: order.attach.as_str(),
                spbill_create_ip: order.client_ip.as_str(),
                trade_type: placement.trade_type,
                openid: order.openid.as_str(),
                sub_openid: placement.sub_openid.as_str(),
                product_id: placement.product_id.as_ref().map_or("", |p| p.as_str()),
                scene_info: placement.scene_info.as_ref().map_or("", |s| s.as_str()),
                notify_url: &self.notify_url,
                time_expire: order.expires_at,
                sign_type: order.sign_type,
            })
            .await;
        match placed {
            Ok(prepaid) => Ok(PlaceOutcome::Placed(prepaid)),
            Err(WechatError::Business { code, message }) if code == "ORDERPAID" => {
                let said = if message.is_empty() {
                    code
                } else {
                    format!("{code} ({message})")
                };
                Ok(PlaceOutcome::AlreadyPaid { said })
            }
            Err(e) if e.code() == Some("ORDERCLOSED") => Ok(PlaceOutcome::AlreadyClosed),
            Err(e) => Err(e),
        }
    }

    async fn query(&self, order: &Order) -> Result<Option<TradeState>, WechatError> {
        match self
            .order_query(order.out_trade_no.as_str(), order.sign_type)
            .await
        {
            Ok(q) => Ok(Some(TradeState {
                status: q.trade_state,
                transaction_id: q.transaction_id,
                total_fee: q.total_fee,
                cash_fee: q.cash_fee,
                paid_at: q.time_end,
            })),
            Err(e) if e.code() == Some(ORDER_NOT_EXIST) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn close(&self, order: &Order) -> Result<CloseOutcome, WechatError> {
        self.close_order(order.out_trade_no.as_str(), order.sign_type)
            .await
    }

    async fn refund(&self, order: &Order, refund: &Refund) -> Result<RefundAccepted, WechatError> {
        // The inherent v2 call, named in full: it shares this method's name.
        V2Client::refund(
            self,
            &RefundRequest {
                out_trade_no: order.out_trade_no.as_str(),
                out_refund_no: refund.out_refund_no.as_str(),
                total_fee: order.total_fee,
                refund_fee: refund.refund_fee,
                reason: refund.reason.as_str(),
                notify_url: &self.refund_notify_url,
                sign_type: order.sign_type,
            },
        )
        .await
    }

    async fn refund_query(
        &self,
        order: &Order,
        out_refund_no: &OutRefundNo,
    ) -> Result<Option<RefundState>, WechatError> {
        V2Client::refund_query(self, out_refund_no.as_str(), order.sign_type).await
    }

    async fn bill(&self, day: NaiveDate) -> Result<Option<Bill>, WechatError> {
        self.download_bill(day, self.entry.sign_type).await
    }

    fn jsapi_params(&self, order: &Order, prepay_id: &str) -> Result<PaymentParams, WechatError> {
        let entry = &self.entry;
        // Paid in the mini program whose user the openid names: the sub
        // merchant's when the order was placed with a sub_openid.
        let app_id = match (&entry.sub_app_id, order.placement.sub_openid.is_empty()) {
            (Some(sub_app_id), false) => sub_app_id,
            _ => &entry.merchant.app_id,
        };
        Ok(pay_params::build(
            app_id,
            prepay_id,
            &entry.merchant.api_key,
            order.sign_type,
            Utc::now().timestamp(),
            &Nonce::generate(),
        ))
    }

    fn app_params(&self, order: &Order, prepay_id: &str) -> Result<AppPaymentParams, WechatError> {
        let entry = &self.entry;
        // The OpenSDK is registered to the app that pays (the sub merchant's
        // in service-provider mode) and names the merchant that is paid.
        let app_id = entry.sub_app_id.as_ref().unwrap_or(&entry.merchant.app_id);
        Ok(pay_params::build_app(
            app_id,
            entry.payee_mch_id(),
            prepay_id,
            &entry.merchant.api_key,
            order.sign_type,
            Utc::now().timestamp(),
            &Nonce::generate(),
        ))
    }
}

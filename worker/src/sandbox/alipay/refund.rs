//! Refunds: `alipay.trade.refund` and `alipay.trade.fastpay.refund.query`.
//!
//! Per trade, idempotent by `out_request_no` (a repeat answers success with `fund_change: N`,
//! as Alipay does, and never refunds again); accepted refunds, in flight or done, never exceed
//! what the customer paid; a trade refunded in full reads `TRADE_CLOSED`.

use std::sync::Arc;
use std::time::Duration;

use payflow_activities::channels::alipay::sign;
use rust_decimal::Decimal;
use serde_json::json;

use super::{
    Inner, SandboxOrder, SandboxRefund, SandboxRefundStatus, SandboxStatus, bump, business_failed,
    now_ms, parse_yuan, yuan,
};

/// Closes a paid trade once its completed refunds add up to what was paid.
fn close_if_refunded_in_full(o: &mut SandboxOrder) {
    let paid: Decimal = o.paid_amount.parse().unwrap_or_default();
    if o.status == SandboxStatus::Success && o.refunded() >= paid {
        o.status = SandboxStatus::Closed;
    }
}

fn refund_node(o: &SandboxOrder, this: Option<&SandboxRefund>) -> serde_json::Value {
    let mut node = json!({
        "code": "10000",
        "msg": "Success",
        "trade_no": o.trade_no,
        "out_trade_no": o.out_trade_no,
        "buyer_logon_id": "san***@sandbox.payflow.local",
        // Money moved by this very call, or not (a repeat, or still processing).
        "fund_change": if this.is_some() { "Y" } else { "N" },
        "refund_fee": yuan(o.refunded()),
    });
    if let Some(r) = this {
        node["send_back_fee"] = json!(yuan(r.amount));
        node["gmt_refund_pay"] = json!(sign::format_time(r.refunded_at_ms.unwrap_or_default()));
    }
    node
}

pub(super) fn refund(inner: &Arc<Inner>, biz: &serde_json::Value) -> serde_json::Value {
    let out_trade_no = biz["out_trade_no"].as_str().unwrap_or_default();
    // Alipay takes a refund without out_request_no as the one (full) refund of the trade.
    let out_request_no = biz["out_request_no"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(out_trade_no)
        .to_string();
    let Some(amount) = biz["refund_amount"].as_str().and_then(parse_yuan) else {
        return business_failed(
            "ACQ.INVALID_PARAMETER",
            "refund_amount must be a positive yuan amount with at most two decimals",
        );
    };
    let knobs = inner.knobs();
    let (node, processing) = {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        let Some(o) = orders.get_mut(out_trade_no) else {
            return business_failed("ACQ.TRADE_NOT_EXIST", "trade does not exist");
        };
        if let Some(existing) = o
            .refunds
            .iter_mut()
            .find(|r| r.out_request_no == out_request_no)
        {
            existing.requests += 1;
            if existing.amount != amount {
                return business_failed(
                    "ACQ.DISCORDANT_REPEAT_REQUEST",
                    "a refund with this out_request_no has other details",
                );
            }
            let node = refund_node(o, None);
            drop(orders);
            bump(inner);
            return node;
        }
        if let Some((code, msg)) = &knobs.refund_decline {
            return business_failed(code, msg);
        }
        if o.status != SandboxStatus::Success {
            return business_failed("ACQ.TRADE_STATUS_ERROR", "trade is not paid");
        }
        let paid: Decimal = o.paid_amount.parse().unwrap_or_default();
        let accepted: Decimal = o.refunds.iter().map(|r| r.amount).sum();
        if accepted + amount > paid {
            return business_failed(
                "ACQ.REASON_TRADE_REFUND_FEE_ERR",
                "refund amount exceeds what is left to refund",
            );
        }
        let processing = knobs.refund_processing_ms.map(Duration::from_millis);
        o.refunds.push(SandboxRefund {
            out_request_no: out_request_no.clone(),
            amount,
            reason: biz["refund_reason"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            status: if processing.is_some() {
                SandboxRefundStatus::Processing
            } else {
                SandboxRefundStatus::Success
            },
            refunded_at_ms: processing.is_none().then(now_ms),
            requests: 1,
        });
        let node = if processing.is_some() {
            refund_node(o, None)
        } else {
            close_if_refunded_in_full(o);
            let this = o.refunds.last().cloned();
            refund_node(o, this.as_ref())
        };
        (node, processing)
    };
    bump(inner);
    tracing::info!(out_trade_no, out_request_no, %amount, ?processing, "sandbox: refund accepted");
    if let Some(delay) = processing {
        let inner = inner.clone();
        let no = out_trade_no.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            complete(&inner, &no, &out_request_no);
        });
    }
    node
}

/// A processing refund goes through.
fn complete(inner: &Inner, out_trade_no: &str, out_request_no: &str) {
    {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        let Some(o) = orders.get_mut(out_trade_no) else {
            return;
        };
        let Some(r) = o
            .refunds
            .iter_mut()
            .find(|r| r.out_request_no == out_request_no)
        else {
            return;
        };
        r.status = SandboxRefundStatus::Success;
        r.refunded_at_ms = Some(now_ms());
        close_if_refunded_in_full(o);
    }
    bump(inner);
}

pub(super) fn query(inner: &Arc<Inner>, biz: &serde_json::Value) -> serde_json::Value {
    let out_trade_no = biz["out_trade_no"].as_str().unwrap_or_default();
    let out_request_no = biz["out_request_no"].as_str().unwrap_or_default();
    let orders = inner.orders.lock().expect("sandbox lock");
    let Some(o) = orders.get(out_trade_no) else {
        return business_failed("ACQ.TRADE_NOT_EXIST", "trade does not exist");
    };
    let mut node = json!({
        "code": "10000",
        "msg": "Success",
        "trade_no": o.trade_no,
        "out_trade_no": o.out_trade_no,
    });
    // An unknown refund is an empty success, as at Alipay.
    if let Some(r) = o
        .refunds
        .iter()
        .find(|r| r.out_request_no == out_request_no)
    {
        node["out_request_no"] = json!(r.out_request_no);
        node["total_amount"] = json!(o.total_amount);
        node["refund_amount"] = json!(yuan(r.amount));
        if r.status == SandboxRefundStatus::Success {
            node["refund_status"] = json!("REFUND_SUCCESS");
            node["gmt_refund_pay"] = json!(sign::format_time(r.refunded_at_ms.unwrap_or_default()));
        }
    }
    node
}

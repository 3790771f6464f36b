//! Trades: precreate, query, close, the customer's payment and its notifications.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use payflow_activities::channels::alipay::sign;
use serde_json::json;

use super::{Inner, NotifyMode, SandboxOrder, SandboxStatus, bump, business_failed, now_ms};

/// The customer pays an open order now; notifications start. `false` for an unknown or closed
/// order.
pub(super) fn pay(inner: &Arc<Inner>, out_trade_no: &str) -> bool {
    settle(inner, out_trade_no, false)
}

/// The customer's payment arriving after we closed the trade (knob `pay_after_close_ms`).
fn pay_late(inner: &Arc<Inner>, out_trade_no: &str) -> bool {
    settle(inner, out_trade_no, true)
}

fn settle(inner: &Arc<Inner>, out_trade_no: &str, even_if_closed: bool) -> bool {
    let (notify_url, mode) = {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        let Some(o) = orders.get_mut(out_trade_no) else {
            return false;
        };
        // A trade closed by a full refund was paid already; only a closed unpaid one can
        // receive a late payment.
        let payable = o.status == SandboxStatus::WaitBuyerPay
            || (even_if_closed && o.status == SandboxStatus::Closed && o.refunds.is_empty());
        if !payable {
            return o.status == SandboxStatus::Success;
        }
        o.status = SandboxStatus::Success;
        o.paid_at_ms = Some(now_ms());
        (o.notify_url.clone(), o.notify_mode)
    };
    bump(inner);
    tracing::info!(out_trade_no, even_if_closed, "sandbox: customer paid");
    let Some(url) = notify_url else {
        return true;
    };
    let id = format!("{}{}", out_trade_no, rand::random::<u32>());
    let ids = match mode {
        NotifyMode::Never => vec![],
        NotifyMode::Once => vec![id],
        // The same notification twice, and another one under a second id.
        NotifyMode::Twice => vec![id.clone(), id, format!("{out_trade_no}-again")],
    };
    for notify_id in ids {
        tokio::spawn(notify_until_acknowledged(
            inner.clone(),
            out_trade_no.to_string(),
            url.clone(),
            notify_id,
        ));
    }
    true
}

/// Posts the signed notification, re-posting on the retry schedule until the answer is
/// exactly `success`.
async fn notify_until_acknowledged(
    inner: Arc<Inner>,
    out_trade_no: String,
    url: String,
    notify_id: String,
) {
    let mut waits = inner.cfg.notify_retry.clone().into_iter();
    loop {
        let Some(order) = inner
            .orders
            .lock()
            .expect("sandbox lock")
            .get(&out_trade_no)
            .cloned()
        else {
            return;
        };
        let mut p = BTreeMap::new();
        let now = now_ms();
        p.insert("notify_time".to_string(), sign::format_time(now));
        p.insert("notify_type".to_string(), "trade_status_sync".to_string());
        p.insert("notify_id".to_string(), notify_id.clone());
        p.insert("app_id".to_string(), inner.cfg.app_id.clone());
        p.insert("charset".to_string(), "utf-8".to_string());
        p.insert("version".to_string(), "1.0".to_string());
        p.insert("sign_type".to_string(), "RSA2".to_string());
        p.insert("trade_no".to_string(), order.trade_no.clone());
        p.insert("out_trade_no".to_string(), out_trade_no.clone());
        p.insert("trade_status".to_string(), "TRADE_SUCCESS".to_string());
        p.insert("total_amount".to_string(), order.paid_amount.clone());
        p.insert(
            "gmt_payment".to_string(),
            sign::format_time(order.paid_at_ms.unwrap_or(now)),
        );
        if sign::sign_notify(&mut p, &inner.cfg.signer).is_err() {
            return;
        }
        let acked = match inner.http.post(&url).form(&p).send().await {
            Ok(r) => r.text().await.map(|t| t == "success").unwrap_or(false),
            Err(_) => false,
        };
        if let Some(o) = inner
            .orders
            .lock()
            .expect("sandbox lock")
            .get_mut(&out_trade_no)
        {
            o.notifications_sent += 1;
            o.acknowledged |= acked;
        }
        bump(&inner);
        if acked {
            return;
        }
        match waits.next() {
            Some(w) => tokio::time::sleep(w).await,
            None => return,
        }
    }
}

pub(super) fn precreate(
    inner: &Arc<Inner>,
    params: &BTreeMap<String, String>,
    biz: &serde_json::Value,
    out_trade_no: &str,
) -> serde_json::Value {
    let total = biz["total_amount"].as_str().unwrap_or_default().to_string();
    if out_trade_no.is_empty() || total.is_empty() {
        return business_failed(
            "ACQ.INVALID_PARAMETER",
            "missing out_trade_no or total_amount",
        );
    }
    let knobs = inner.knobs();
    if let Some((code, msg)) = &knobs.decline_precreate {
        return business_failed(code, msg);
    }
    let created = {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        if let Some(existing) = orders.get(out_trade_no) {
            // Alipay answers a repeated precreate of the same unpaid order with the same QR.
            if existing.total_amount != total {
                return business_failed("ACQ.CONTEXT_INCONSISTENT", "order details changed");
            }
            false
        } else {
            let n = inner.next_id();
            orders.insert(
                out_trade_no.to_string(),
                SandboxOrder {
                    out_trade_no: out_trade_no.to_string(),
                    trade_no: format!("2026{n:012}"),
                    paid_amount: knobs.paid_amount.clone().unwrap_or_else(|| total.clone()),
                    total_amount: total,
                    status: SandboxStatus::WaitBuyerPay,
                    paid_at_ms: None,
                    notify_mode: knobs.notify,
                    notify_url: params.get("notify_url").cloned(),
                    notifications_sent: 0,
                    acknowledged: false,
                    pay_after_close: knobs.pay_after_close_ms.map(Duration::from_millis),
                    refunds: Vec::new(),
                },
            );
            true
        }
    };
    bump(inner);
    if created && let Some(delay) = knobs.pay_after {
        let inner = inner.clone();
        let no = out_trade_no.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            pay(&inner, &no);
        });
    }
    json!({
        "code": "10000",
        "msg": "Success",
        "out_trade_no": out_trade_no,
        "qr_code": format!("https://qr.sandbox.payflow.local/{out_trade_no}"),
    })
}

pub(super) fn query(inner: &Arc<Inner>, out_trade_no: &str) -> serde_json::Value {
    // The channel's own view of the trade, when a statement knob sets one.
    let planted = inner.knobs().statement.status.get(out_trade_no).cloned();
    let orders = inner.orders.lock().expect("sandbox lock");
    match orders.get(out_trade_no) {
        None => business_failed("ACQ.TRADE_NOT_EXIST", "trade does not exist"),
        Some(o) => {
            let status = match planted.as_ref().unwrap_or(&o.status) {
                SandboxStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
                SandboxStatus::Success => "TRADE_SUCCESS",
                // Also a trade refunded in full, as at Alipay.
                SandboxStatus::Closed => "TRADE_CLOSED",
            };
            json!({
                "code": "10000",
                "msg": "Success",
                "trade_no": o.trade_no,
                "out_trade_no": o.out_trade_no,
                "trade_status": status,
                "total_amount": if o.status == SandboxStatus::Success { &o.paid_amount } else { &o.total_amount },
            })
        }
    }
}

pub(super) fn close(inner: &Arc<Inner>, out_trade_no: &str) -> serde_json::Value {
    let (node, late_payment) = {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        match orders.get_mut(out_trade_no) {
            None => (
                business_failed("ACQ.TRADE_NOT_EXIST", "trade does not exist"),
                None,
            ),
            Some(o) if o.status == SandboxStatus::Success => (
                business_failed("ACQ.TRADE_STATUS_ERROR", "trade is paid"),
                None,
            ),
            Some(o) => {
                let late = (o.status == SandboxStatus::WaitBuyerPay)
                    .then_some(o.pay_after_close)
                    .flatten();
                o.status = SandboxStatus::Closed;
                (
                    json!({"code": "10000", "msg": "Success", "trade_no": o.trade_no, "out_trade_no": o.out_trade_no}),
                    late,
                )
            }
        }
    };
    bump(inner);
    if let Some(delay) = late_payment {
        let inner = inner.clone();
        let no = out_trade_no.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            pay_late(&inner, &no);
        });
    }
    node
}

//! Payouts: `alipay.fund.trans.uni.transfer` and `alipay.fund.trans.common.query`.
//!
//! In memory by `out_biz_no`, idempotent: a second submit with the same `out_biz_no` answers
//! with the existing order and never pays again.

use std::sync::Arc;

use axum::http::StatusCode;
use payflow_activities::channels::alipay::{sign, wire};
use serde_json::json;

use super::{
    Answer, Inner, PayoutMode, SandboxPayout, SandboxPayoutStatus, bump, business_failed, now_ms,
    parse_yuan, yuan,
};

fn status_text(s: &SandboxPayoutStatus) -> &'static str {
    match s {
        SandboxPayoutStatus::Dealing => "DEALING",
        SandboxPayoutStatus::Success => "SUCCESS",
        SandboxPayoutStatus::Fail { .. } => "FAIL",
    }
}

fn pay_fund_order_id(p: &SandboxPayout) -> String {
    format!("{}F", p.order_id)
}

fn transfer_node(p: &SandboxPayout) -> serde_json::Value {
    let mut node = json!({
        "code": "10000",
        "msg": "Success",
        "out_biz_no": p.out_biz_no,
        "order_id": p.order_id,
        "status": status_text(&p.status),
    });
    if let Some(at) = p.paid_at_ms {
        node["pay_fund_order_id"] = json!(pay_fund_order_id(p));
        node["trans_date"] = json!(sign::format_time(at));
    }
    node
}

pub(super) fn transfer(inner: &Arc<Inner>, biz: &serde_json::Value) -> Answer {
    let out_biz_no = biz["out_biz_no"].as_str().unwrap_or_default();
    let payee_account = biz["payee_info"]["identity"].as_str().unwrap_or_default();
    let payee_name = biz["payee_info"]["name"].as_str().unwrap_or_default();
    let amount = biz["trans_amount"].as_str().and_then(parse_yuan);
    let (Some(amount), false, false) = (amount, out_biz_no.is_empty(), payee_account.is_empty())
    else {
        return Ok(business_failed(
            "INVALID_PARAMETER",
            "out_biz_no, trans_amount (yuan, two decimals) and payee_info.identity are required",
        ));
    };
    if biz["product_code"].as_str() != Some(wire::PRODUCT_TRANS_ACCOUNT_NO_PWD) {
        return Ok(business_failed(
            "INVALID_PARAMETER",
            "product_code must be TRANS_ACCOUNT_NO_PWD",
        ));
    }
    let knobs = inner.knobs();
    let fail_after = knobs.payout == PayoutMode::AppliedThen5xx;
    let (node, dealing) = {
        let mut payouts = inner.payouts.lock().expect("sandbox lock");
        if let Some(p) = payouts.get_mut(out_biz_no) {
            p.submits += 1;
            if p.amount != amount || p.payee_account != payee_account {
                return Ok(business_failed(
                    "PAYMENT_INFO_INCONSISTENCY",
                    "a transfer with this out_biz_no has other details",
                ));
            }
            // The existing order, as it stands: nothing is paid again.
            let node = transfer_node(p);
            drop(payouts);
            bump(inner);
            return if fail_after {
                Err(StatusCode::INTERNAL_SERVER_ERROR)
            } else {
                Ok(node)
            };
        }
        if let PayoutMode::Decline { code, message } = &knobs.payout {
            return Ok(business_failed(code, message));
        }
        if knobs.payout_limit.is_some_and(|limit| amount > limit) {
            return Ok(business_failed(
                "EXCEED_LIMIT_SM_AMOUNT",
                "amount exceeds the single transfer limit",
            ));
        }
        let now = now_ms();
        let (status, dealing) = match &knobs.payout {
            PayoutMode::Dealing(d) => (SandboxPayoutStatus::Dealing, Some(*d)),
            PayoutMode::Fail { code, reason } => (
                SandboxPayoutStatus::Fail {
                    code: code.clone(),
                    reason: reason.clone(),
                },
                None,
            ),
            _ => (SandboxPayoutStatus::Success, None),
        };
        let paid = status == SandboxPayoutStatus::Success;
        let p = SandboxPayout {
            out_biz_no: out_biz_no.to_string(),
            order_id: format!("2026{:016}", inner.next_id()),
            amount,
            payee_account: payee_account.to_string(),
            payee_name: payee_name.to_string(),
            remark: biz["remark"].as_str().unwrap_or_default().to_string(),
            status,
            executed: u32::from(paid),
            submits: 1,
            paid_at_ms: paid.then_some(now),
        };
        let node = transfer_node(&p);
        payouts.insert(out_biz_no.to_string(), p);
        (node, dealing)
    };
    bump(inner);
    tracing::info!(out_biz_no, %amount, mode = ?knobs.payout, "sandbox: transfer accepted");
    if let Some(delay) = dealing {
        let inner = inner.clone();
        let no = out_biz_no.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            complete(&inner, &no);
        });
    }
    if fail_after {
        // Recorded and paid, but the caller never learns it from this answer.
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(node)
}

/// A dealing transfer is paid.
fn complete(inner: &Inner, out_biz_no: &str) {
    {
        let mut payouts = inner.payouts.lock().expect("sandbox lock");
        let Some(p) = payouts.get_mut(out_biz_no) else {
            return;
        };
        if p.status != SandboxPayoutStatus::Dealing {
            return;
        }
        p.status = SandboxPayoutStatus::Success;
        p.executed += 1;
        p.paid_at_ms = Some(now_ms());
    }
    bump(inner);
}

pub(super) fn query(inner: &Arc<Inner>, biz: &serde_json::Value) -> serde_json::Value {
    let out_biz_no = biz["out_biz_no"].as_str().unwrap_or_default();
    let order_id = biz["order_id"].as_str().unwrap_or_default();
    let payouts = inner.payouts.lock().expect("sandbox lock");
    // Alipay looks up by its order id when given, else by ours.
    let found = if order_id.is_empty() {
        payouts.get(out_biz_no)
    } else {
        payouts.values().find(|p| p.order_id == order_id)
    };
    let Some(p) = found else {
        return business_failed("ORDER_NOT_EXIST", "transfer order does not exist");
    };
    let mut node = json!({
        "code": "10000",
        "msg": "Success",
        "order_id": p.order_id,
        "out_biz_no": p.out_biz_no,
        "status": status_text(&p.status),
    });
    if let Some(at) = p.paid_at_ms {
        node["pay_fund_order_id"] = json!(pay_fund_order_id(p));
        node["pay_date"] = json!(sign::format_time(at));
        node["trans_amount"] = json!(yuan(p.amount));
    }
    if let SandboxPayoutStatus::Fail { code, reason } = &p.status {
        node["error_code"] = json!(code);
        node["fail_reason"] = json!(reason);
    }
    node
}

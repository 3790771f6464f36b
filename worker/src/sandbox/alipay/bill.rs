//! Statements: `alipay.data.dataservice.bill.downloadurl.query` and the file it points at.
//!
//! Real Alipay answers with a `dwbillcenter.alipay.com` address that expires 30 seconds later
//! and serves a zip of GBK-encoded CSV files (the day's detail, one row per payment or refund,
//! Chinese headers between `#` comment lines, and a summary); day D's bill exists from the
//! morning after, Beijing time, never for today. The sandbox keeps it simple: the address is
//! this server's `/sandbox/bills/trade/{yyyy-MM-dd}.csv`, does not expire, and serves one plain
//! UTF-8 CSV with one row per trade paid that day (Beijing time), earliest first:
//!
//! ```text
//! out_trade_no,trade_no,status,total_amount,refund_amount,paid_at
//! ```
//!
//! `total_amount` is what the customer paid, `refund_amount` its completed refunds so far,
//! `status` the trade's status now (`TRADE_SUCCESS`, or `TRADE_CLOSED` once refunded in full),
//! `paid_at` Beijing time (`yyyy-MM-dd HH:mm:ss`). Any day up to today is served at once
//! (today's trades so far) unless the `statement_pending` knob holds it back. Parsing the real
//! format belongs to reconciliation (issue 7).

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, NaiveDate};
use payflow_activities::channels::alipay::{sign, wire};
use serde_json::json;

use super::{Inner, SandboxStatus, business_failed, now_ms, yuan};

const DATE_FORMAT: &str = "%Y-%m-%d";
const HEADER: &str = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n";

/// The Beijing calendar day of an instant (unix ms).
fn beijing_date(ms: i64) -> NaiveDate {
    let beijing = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&beijing)
        .date_naive()
}

pub(super) fn url_query(inner: &Inner, biz: &serde_json::Value, base: &str) -> serde_json::Value {
    if biz["bill_type"].as_str() != Some(wire::BILL_TYPE_TRADE) {
        return business_failed(
            "isv.invalid-arguments",
            "the sandbox serves bill_type trade only",
        );
    }
    let Some(date) = biz["bill_date"]
        .as_str()
        .and_then(|d| NaiveDate::parse_from_str(d, DATE_FORMAT).ok())
    else {
        return business_failed("isv.invalid-arguments", "bill_date must be yyyy-MM-dd");
    };
    if inner.knobs().statement_pending || date > beijing_date(now_ms()) {
        return business_failed(wire::SUB_BILL_NOT_EXIST, "the bill does not exist yet");
    }
    json!({
        "code": wire::CODE_SUCCESS,
        "msg": "Success",
        "bill_download_url": format!("{base}/sandbox/bills/trade/{}.csv", date.format(DATE_FORMAT)),
    })
}

/// `GET /sandbox/bills/trade/{yyyy-MM-dd}.csv`
pub(super) async fn download(
    State(inner): State<Arc<Inner>>,
    Path(file): Path<String>,
) -> Response {
    let Some(date) = file
        .strip_suffix(".csv")
        .and_then(|d| NaiveDate::parse_from_str(d, DATE_FORMAT).ok())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        statement_csv(&inner, date),
    )
        .into_response()
}

fn statement_csv(inner: &Inner, date: NaiveDate) -> String {
    let mut rows: Vec<(i64, String)> = {
        let orders = inner.orders.lock().expect("sandbox lock");
        orders
            .values()
            .filter_map(|o| {
                let at = o.paid_at_ms.filter(|&at| beijing_date(at) == date)?;
                let status = match o.status {
                    SandboxStatus::Closed => "TRADE_CLOSED",
                    _ => "TRADE_SUCCESS",
                };
                let fields = [
                    field(&o.out_trade_no),
                    field(&o.trade_no),
                    status.into(),
                    field(&o.paid_amount),
                    yuan(o.refunded()).into(),
                    sign::format_time(at).into(),
                ];
                Some((at, fields.join(",")))
            })
            .collect()
    };
    rows.sort();
    let mut csv = String::from(HEADER);
    for (_, row) in rows {
        csv.push_str(&row);
        csv.push('\n');
    }
    csv
}

/// A CSV field, quoted when it holds a separator, quote or line break.
fn field(text: &str) -> Cow<'_, str> {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

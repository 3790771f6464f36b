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
//! out_trade_no,trade_no,status,total_amount,refund_amount,paid_at,fee
//! ```
//!
//! `total_amount` is what the customer paid, `refund_amount` its completed refunds so far,
//! `status` the trade's status now (`TRADE_SUCCESS`, or `TRADE_CLOSED` once refunded in full),
//! `paid_at` Beijing time (`yyyy-MM-dd HH:mm:ss`), `fee` the channel's service fee: 0.6 % of
//! what was paid, rounded half-up to the fen (as the WeChat Pay sandbox charges). Any day up to
//! today is served at once (today's trades so far) unless the `statement_pending` knob holds it
//! back. The statement knobs (`Knobs::statement`) plant differences for reconciliation tests:
//! not ready for the next N queries, extra lines, omitted trades, another amount, fee or
//! status, a trade moved to the next day's statement. `recon::alipay` parses this format.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Days, FixedOffset, NaiveDate};
use payflow_activities::channels::alipay::{sign, wire};
use rust_decimal::Decimal;
use serde_json::json;

use super::{Inner, SandboxStatus, business_failed, now_ms, yuan};

const DATE_FORMAT: &str = "%Y-%m-%d";
const HEADER: &str = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at,fee\n";
/// The channel's fee, as `[[channels]] fee_rate = "0.006"` configures it for the sandbox.
const FEE_PER_MILLE: i64 = 6;

/// The sandbox's fee on `paid` yuan: 0.6 %, rounded half-up to the fen.
pub fn fee(paid: Decimal) -> Decimal {
    (paid * Decimal::new(FEE_PER_MILLE, 3))
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

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
    let not_ready = {
        let mut knobs = inner.knobs.lock().expect("sandbox lock");
        let last_day = beijing_date(now_ms()) + Days::new(u64::from(knobs.statement.days_ahead));
        let held = knobs.statement.not_ready_times > 0;
        if held {
            knobs.statement.not_ready_times -= 1;
        }
        held || knobs.statement_pending || date > last_day
    };
    if not_ready {
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
    let planted = inner.knobs().statement;
    let (day_start, _) = payflow_activities::recon::compare::day_window(date);
    let mut rows: Vec<(i64, String)> = {
        let orders = inner.orders.lock().expect("sandbox lock");
        orders
            .values()
            .filter_map(|o| {
                let no = &o.out_trade_no;
                if planted.omit.contains(no) {
                    return None;
                }
                let paid_at = o.paid_at_ms?;
                // A cross-day trade: the channel books it at the start of the next day.
                let at = if planted.next_day.contains(no) {
                    day_window_after(paid_at)
                } else {
                    paid_at
                };
                if beijing_date(at) != date {
                    return None;
                }
                let status = match planted.status.get(no).unwrap_or(&o.status) {
                    SandboxStatus::Closed => "TRADE_CLOSED",
                    _ => "TRADE_SUCCESS",
                };
                let paid: Decimal = o.paid_amount.parse().unwrap_or_default();
                let amount = planted.amount.get(no).copied().unwrap_or(paid);
                let fee = planted.fee.get(no).copied().unwrap_or_else(|| fee(paid));
                let fields = [
                    field(no),
                    field(&o.trade_no),
                    status.into(),
                    yuan(amount).into(),
                    yuan(o.refunded()).into(),
                    sign::format_time(at).into(),
                    yuan(fee).into(),
                ];
                Some((at, fields.join(",")))
            })
            .collect()
    };
    for x in planted
        .extra
        .iter()
        .filter(|x| beijing_date(x.paid_at_ms) == date)
    {
        let fields = [
            field(&x.out_trade_no),
            field(&x.trade_no),
            "TRADE_SUCCESS".into(),
            yuan(x.amount).into(),
            yuan(Decimal::ZERO).into(),
            sign::format_time(x.paid_at_ms.max(day_start)).into(),
            yuan(fee(x.amount)).into(),
        ];
        rows.push((x.paid_at_ms, fields.join(",")));
    }
    rows.sort();
    let mut csv = String::from(HEADER);
    for (_, row) in rows {
        csv.push_str(&row);
        csv.push('\n');
    }
    csv
}

/// The first instant of the Beijing day after the one `ms` falls on.
fn day_window_after(ms: i64) -> i64 {
    let next = beijing_date(ms) + Days::new(1);
    payflow_activities::recon::compare::day_window(next).0
}

/// A CSV field, quoted when it holds a separator, quote or line break.
fn field(text: &str) -> Cow<'_, str> {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

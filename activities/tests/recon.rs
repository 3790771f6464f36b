//! The reconciliation suite, every case on SQLite and on PostgreSQL (see `common`): real orders,
//! refunds and ledger entries made through the store, statements in the channels' formats,
//! a fake channel answering the confirming queries. Each case plants discrepancies and checks
//! that exactly those are reported, with the right kind; reruns yield the same report; a
//! cross-day transaction is resolved by the next day's run; a 100 000-line statement streams
//! through load and compare.

#[macro_use]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use payflow_activities::accounting;
use payflow_activities::channels::alipay::sign::format_time;
use payflow_activities::channels::{
    Channel, ChannelError, CloseOutcome, NoticeError, PayoutRequest, PayoutState, PrecreateRequest,
    PrecreateResponse, RefundRequest, RefundResult, RefundState, StatementUrl, TradeQuery,
    TradeState, VerifiedNotice,
};
use payflow_activities::recon::compare::{self, day_window};
use payflow_activities::recon::{
    ChannelFeeRate, ChannelView, Checked, DiscrepancyKind, ReconError, ReconReport, Resolution,
    Side, StatementFormat, Subject,
};
use payflow_activities::store::orders::{NewOrder, OrderPatch};
use payflow_activities::store::refunds::{NewRefund, Reservation};
use payflow_activities::store::{Store, StoreError};
use payflow_client::{Currency, Money, PayState, RefundKind};
use rust_decimal::Decimal;
use tokio::io::{AsyncWriteExt, BufReader};

backend_tests! {
    case_alipay_every_kind_cross_day_and_reruns => sqlite_alipay_every_kind_cross_day_and_reruns, postgres_alipay_every_kind_cross_day_and_reruns;
    case_wechat_itemised_refunds_and_fees => sqlite_wechat_itemised_refunds_and_fees, postgres_wechat_itemised_refunds_and_fees;
    case_steps_are_guarded_and_loads_idempotent => sqlite_steps_are_guarded_and_loads_idempotent, postgres_steps_are_guarded_and_loads_idempotent;
    case_hundred_thousand_lines_stream => sqlite_hundred_thousand_lines_stream, postgres_hundred_thousand_lines_stream;
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const MERCHANT: &str = "m1";

fn cny(amount: &str) -> Money {
    Money::parse(amount, Currency::Cny).unwrap()
}

fn dec(amount: &str) -> Decimal {
    amount.parse().unwrap()
}

/// The channels' fee rate in these cases (the sandboxes' 0.6 %): a statement's fee on a line is
/// expected to be 0.6 % of its amount, rounded half-up.
fn rate() -> Option<ChannelFeeRate> {
    Some(ChannelFeeRate::new(dec("0.006")).unwrap())
}

fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 5).unwrap()
}

fn day1() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 6).unwrap()
}

/// Unix ms of `h:m:s` Beijing time on `date`.
fn at(date: NaiveDate, h: i64, m: i64, s: i64) -> i64 {
    day_window(date).0 + (h * 3600 + m * 60 + s) * 1000
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// An order in `Pending`, as the payment workflow leaves it after prepay.
async fn pending(store: &Store, channel: &str, order_id: &str, amount: &str) {
    store
        .create_order(&NewOrder {
            order_id: order_id.to_string(),
            merchant_id: MERCHANT.to_string(),
            merchant_order_no: format!("no-{order_id}"),
            amount: cny(amount),
            product_id: "p1".to_string(),
            channel: channel.to_string(),
            subject: "a test order".to_string(),
            expires_at_ms: 4_102_444_800_000,
            recharge_wallet: None,
        })
        .await
        .unwrap();
    store
        .transition(
            order_id,
            PayState::Created,
            PayState::Pending,
            &OrderPatch::default(),
        )
        .await
        .unwrap();
}

/// An order paid in full at `paid_at_ms` (by our clock), booked with our `fee` (the merchant's:
/// it plays no part in reconciliation, which compares the channel's fee with its rate).
async fn paid(
    store: &Store,
    channel: &str,
    order_id: &str,
    amount: &str,
    fee: Option<&str>,
    paid_at_ms: i64,
) {
    pending(store, channel, order_id, amount).await;
    store
        .transition_with_entry(
            order_id,
            PayState::Pending,
            PayState::Succeeded,
            &OrderPatch {
                channel_trade_no: Some(format!("T-{order_id}")),
                paid_amount: Some(cny(amount)),
                failure: None,
            },
            Some(&accounting::payment_succeeded(
                order_id,
                channel,
                MERCHANT,
                cny(amount),
                fee.map(cny),
            )),
        )
        .await
        .unwrap();
    exec(
        store,
        &format!(
            "UPDATE order_transitions SET at_ms = {paid_at_ms} \
             WHERE order_id = '{order_id}' AND to_state = 'Succeeded'"
        ),
    )
    .await;
}

/// A merchant refund created at `created_at_ms`: reserved and held, and completed when
/// `complete` (else left `Processing`).
async fn refund(
    store: &Store,
    channel: &str,
    order_id: &str,
    refund_id: &str,
    amount: &str,
    created_at_ms: i64,
    complete: bool,
) {
    let Reservation::Reserved { refund, .. } = store
        .reserve_refund(&NewRefund {
            refund_id: refund_id.to_string(),
            merchant_id: MERCHANT.to_string(),
            merchant_order_no: format!("no-{order_id}"),
            merchant_refund_no: format!("mr-{refund_id}"),
            kind: RefundKind::Merchant,
            amount: cny(amount),
            reason: "returned".to_string(),
            collected: None,
        })
        .await
        .unwrap()
    else {
        panic!("refund {refund_id} refused");
    };
    let merchant_part = Money::from_minor(
        refund.amount.minor_units() - refund.fee_minor,
        Currency::Cny,
    )
    .unwrap();
    store
        .book_hold(&accounting::refund_hold(
            refund_id,
            order_id,
            channel,
            MERCHANT,
            merchant_part,
        ))
        .await
        .unwrap();
    if complete {
        store.complete_refund(refund_id).await.unwrap();
    }
    exec(
        store,
        &format!(
            "UPDATE refunds SET created_at_ms = {created_at_ms} WHERE refund_id = '{refund_id}'"
        ),
    )
    .await;
}

/// A channel that answers queries from what the test told it; unknown trades and refunds are
/// not found.
#[derive(Clone, Default)]
struct FakeChannel {
    name: String,
    trades: Arc<Mutex<HashMap<String, TradeQuery>>>,
    refunds: Arc<Mutex<HashMap<String, RefundResult>>>,
    default_paid: bool,
}

impl FakeChannel {
    fn new(name: &str) -> FakeChannel {
        FakeChannel {
            name: name.to_string(),
            ..FakeChannel::default()
        }
    }

    fn trade(&self, order: &str, state: TradeState, paid: Option<&str>) {
        self.trades.lock().unwrap().insert(
            order.to_string(),
            TradeQuery {
                state,
                channel_trade_no: Some(format!("T-{order}")),
                paid_amount: paid.map(cny),
            },
        );
    }

    fn refund(&self, refund_no: &str, state: RefundState) {
        self.refunds.lock().unwrap().insert(
            refund_no.to_string(),
            RefundResult {
                state,
                refunded_amount: None,
            },
        );
    }
}

fn unsupported() -> ChannelError {
    ChannelError::Declined {
        code: "test.UNSUPPORTED".into(),
        message: "not used by reconciliation".into(),
    }
}

#[async_trait::async_trait]
impl Channel for FakeChannel {
    fn name(&self) -> &str {
        &self.name
    }
    async fn precreate(&self, _: &PrecreateRequest) -> Result<PrecreateResponse, ChannelError> {
        Err(unsupported())
    }
    async fn query(&self, out_trade_no: &str) -> Result<TradeQuery, ChannelError> {
        let known = self.trades.lock().unwrap().get(out_trade_no).cloned();
        Ok(known.unwrap_or(TradeQuery {
            state: if self.default_paid {
                TradeState::Paid
            } else {
                TradeState::NotFound
            },
            channel_trade_no: None,
            paid_amount: None,
        }))
    }
    async fn close(&self, _: &str) -> Result<CloseOutcome, ChannelError> {
        Err(unsupported())
    }
    async fn refund(&self, _: &RefundRequest) -> Result<RefundResult, ChannelError> {
        Err(unsupported())
    }
    async fn query_refund(
        &self,
        _out_trade_no: &str,
        out_request_no: &str,
    ) -> Result<RefundResult, ChannelError> {
        let known = self.refunds.lock().unwrap().get(out_request_no).cloned();
        Ok(known.unwrap_or(RefundResult {
            state: RefundState::NotFound,
            refunded_amount: None,
        }))
    }
    async fn payout(&self, _: &PayoutRequest) -> Result<PayoutState, ChannelError> {
        Err(unsupported())
    }
    async fn query_payout(&self, _: &str) -> Result<PayoutState, ChannelError> {
        Err(unsupported())
    }
    async fn statement_url(&self, _: NaiveDate) -> Result<StatementUrl, ChannelError> {
        Ok(StatementUrl::NotReady)
    }
    fn verify_notice(
        &self,
        _: &std::collections::BTreeMap<String, String>,
    ) -> Result<VerifiedNotice, NoticeError> {
        Err(NoticeError::BadSignature)
    }
    fn ack_body(&self) -> &'static str {
        "success"
    }
}

/// The whole flow as the workflow runs it: open, load, compare, page through the candidates
/// (small pages), ask the channel about each, record, finish.
async fn reconcile(
    store: &Store,
    channel: &FakeChannel,
    date: NaiveDate,
    format: StatementFormat,
    statement: &str,
) -> ReconReport {
    let run = compare::open_run(store, &channel.name, date).await.unwrap();
    compare::load_statement(store, &run, format, statement.as_bytes())
        .await
        .unwrap();
    check_and_finish(store, channel, date).await
}

async fn check_and_finish(store: &Store, channel: &FakeChannel, date: NaiveDate) -> ReconReport {
    let run = compare::open_run(store, &channel.name, date).await.unwrap();
    compare::compare(store, &run, rate()).await.unwrap();
    let mut after: Option<String> = None;
    loop {
        let page = compare::candidates(store, &run, after.as_deref(), 3)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        let mut checked = Vec::new();
        for c in &page {
            checked.push(Checked {
                key: c.key.clone(),
                channel_now: compare::check(channel, c).await.unwrap(),
            });
        }
        compare::record(store, &run, &checked).await.unwrap();
    }
    compare::finish(store, &run, rate()).await.unwrap()
}

type Found = BTreeSet<(DiscrepancyKind, Subject, String, Option<String>)>;

/// (kind, subject, order, refund) of the report's discrepancies, open or resolved as asked.
fn found(report: &ReconReport, resolved: bool) -> Found {
    report
        .discrepancies
        .iter()
        .filter(|d| d.resolved() == resolved)
        .map(|d| (d.kind, d.subject, d.order_no.clone(), d.refund_no.clone()))
        .collect()
}

fn expect(items: &[(DiscrepancyKind, Subject, &str, Option<&str>)]) -> Found {
    items
        .iter()
        .map(|(k, s, o, r)| (*k, *s, o.to_string(), r.map(str::to_string)))
        .collect()
}

/// A sandbox bill (`worker/src/sandbox/alipay/bill.rs`): (order, trade no, status, total,
/// refunded, paid at).
fn alipay_bill(rows: &[(&str, &str, &str, &str, &str, i64)]) -> String {
    let mut s = String::from("out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n");
    for (order, trade, status, total, refunded, paid_at) in rows {
        s.push_str(&format!(
            "{order},{trade},{status},{total},{refunded},{}\n",
            format_time(*paid_at)
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn case_alipay_every_kind_cross_day_and_reruns(store: Store) {
    use DiscrepancyKind::*;
    let ch = FakeChannel::new("alipay");
    let (d0, d1) = (day0(), day1());
    let noon = at(d0, 12, 0, 0);

    paid(&store, "alipay", "o_ok", "10.00", None, at(d0, 9, 0, 0)).await;
    paid(&store, "alipay", "o_amount", "20.00", None, noon).await;
    pending(&store, "alipay", "o_status", "5.00").await;
    paid(&store, "alipay", "o_dismissed", "6.00", None, noon).await;
    paid(&store, "alipay", "o_missing_channel", "7.00", None, noon).await;
    // Paid half a second before midnight by our clock; the channel books it the next day.
    paid(
        &store,
        "alipay",
        "o_crossday",
        "8.00",
        None,
        at(d0, 23, 59, 59) + 500,
    )
    .await;
    // Paid just after midnight by our clock; the channel books it the day before.
    paid(
        &store,
        "alipay",
        "o_early",
        "9.00",
        None,
        at(d1, 0, 0, 0) + 500,
    )
    .await;
    paid(&store, "alipay", "o_refund_ok", "30.00", None, noon).await;
    refund(&store, "alipay", "o_refund_ok", "r_ok", "10.00", noon, true).await;
    paid(&store, "alipay", "o_refund_amount", "40.00", None, noon).await;
    refund(
        &store,
        "alipay",
        "o_refund_amount",
        "r_amount",
        "15.00",
        noon,
        true,
    )
    .await;
    paid(
        &store,
        "alipay",
        "o_refund_missing_channel",
        "50.00",
        None,
        noon,
    )
    .await;
    refund(
        &store,
        "alipay",
        "o_refund_missing_channel",
        "r_mc",
        "5.00",
        noon,
        true,
    )
    .await;
    paid(
        &store,
        "alipay",
        "o_refund_missing_local",
        "60.00",
        None,
        noon,
    )
    .await;
    // The other channel's orders never enter this channel's reconciliation.
    paid(&store, "wechat", "w_other", "1.00", None, noon).await;

    ch.trade("o_status", TradeState::Paid, Some("5.00"));
    ch.trade("o_dismissed", TradeState::Paid, Some("6.00"));
    ch.trade("o_amount", TradeState::Paid, Some("21.00"));
    ch.trade("o_crossday", TradeState::Paid, Some("8.00"));
    ch.trade("o_missing_local", TradeState::Paid, Some("3.00"));

    let bill_d0 = alipay_bill(&[
        (
            "o_ok",
            "T1",
            "TRADE_SUCCESS",
            "10.00",
            "0.00",
            at(d0, 9, 0, 0),
        ),
        ("o_amount", "T2", "TRADE_SUCCESS", "21.00", "0.00", noon),
        // We never saw it paid: the channel did.
        ("o_status", "T3", "TRADE_SUCCESS", "5.00", "0.00", noon),
        // The statement says refunded in full, the channel now says paid, as we do.
        ("o_dismissed", "T4", "TRADE_CLOSED", "6.00", "0.00", noon),
        (
            "o_missing_local",
            "T5",
            "TRADE_SUCCESS",
            "3.00",
            "0.00",
            noon,
        ),
        (
            "o_early",
            "T6",
            "TRADE_SUCCESS",
            "9.00",
            "0.00",
            at(d0, 23, 59, 59),
        ),
        ("o_refund_ok", "T7", "TRADE_SUCCESS", "30.00", "10.00", noon),
        (
            "o_refund_amount",
            "T8",
            "TRADE_SUCCESS",
            "40.00",
            "12.00",
            noon,
        ),
        (
            "o_refund_missing_channel",
            "T9",
            "TRADE_SUCCESS",
            "50.00",
            "0.00",
            noon,
        ),
        (
            "o_refund_missing_local",
            "T10",
            "TRADE_SUCCESS",
            "60.00",
            "6.00",
            noon,
        ),
    ]);
    let first = reconcile(&store, &ch, d0, StatementFormat::AlipayTrade, &bill_d0).await;

    let expected_d0 = expect(&[
        (AmountMismatch, Subject::Payment, "o_amount", None),
        (StatusMismatch, Subject::Payment, "o_status", None),
        (MissingLocally, Subject::Payment, "o_missing_local", None),
        (
            MissingAtChannel,
            Subject::Payment,
            "o_missing_channel",
            None,
        ),
        (MissingAtChannel, Subject::Payment, "o_crossday", None),
        (AmountMismatch, Subject::Refund, "o_refund_amount", None),
        (
            MissingAtChannel,
            Subject::Refund,
            "o_refund_missing_channel",
            None,
        ),
        (
            MissingLocally,
            Subject::Refund,
            "o_refund_missing_local",
            None,
        ),
    ]);
    assert_eq!(found(&first, false), expected_d0);
    assert!(found(&first, true).is_empty());
    assert_eq!(first.run_id, "alipay/2026-01-05");
    assert_eq!(first.candidates, 9);
    assert_eq!(first.dismissed, 1);
    // 10 payment lines + 3 refunded totals; 5 of them carry a discrepancy.
    assert_eq!(first.statement_lines, 13);
    assert_eq!(first.duplicate_lines, 0);
    assert_eq!(first.matched_lines, 8);
    // 9 payments first paid that day + 3 refunds created that day.
    assert_eq!(first.our_records, 12);
    assert_eq!(first.matched_records, 7);
    assert_eq!(first.open(MissingAtChannel), 3);
    assert_eq!(first.open(FeeMismatch), 0);
    assert!(!first.discrepancies_truncated);

    // Both sides' values and the channel's answer are kept.
    let amount = first
        .discrepancies
        .iter()
        .find(|d| d.kind == AmountMismatch && d.subject == Subject::Payment)
        .unwrap();
    assert_eq!(amount.ours.amount, Some(dec("20.00")));
    assert_eq!(amount.channel.amount, Some(dec("21.00")));
    assert_eq!(amount.ours.currency, Some(Currency::Cny));
    assert_eq!(amount.channel_trade_no.as_deref(), Some("T2"));
    assert_eq!(amount.line_no, Some(3));
    assert!(matches!(
        &amount.channel_now,
        Some(ChannelView::Trade(q)) if q.paid_amount == Some(cny("21.00"))
    ));
    let refund_amount = first
        .discrepancies
        .iter()
        .find(|d| d.kind == AmountMismatch && d.subject == Subject::Refund)
        .unwrap();
    assert_eq!(refund_amount.ours.amount, Some(dec("15.00")));
    assert_eq!(refund_amount.channel.amount, Some(dec("12.00")));
    let status = first
        .discrepancies
        .iter()
        .find(|d| d.kind == StatusMismatch)
        .unwrap();
    assert_eq!(status.ours.status.as_deref(), Some("Pending"));
    assert_eq!(status.channel.status.as_deref(), Some("Paid"));

    // Totals: the statement's side and ours.
    let total = |side, subject| {
        first
            .totals
            .iter()
            .find(|t| t.side == side && t.subject == subject)
            .map(|t| (t.count, t.amount))
    };
    assert_eq!(
        total(Side::Statement, Subject::Payment),
        Some((10, dec("234.00")))
    );
    assert_eq!(
        total(Side::Statement, Subject::Refund),
        Some((3, dec("28.00")))
    );
    assert_eq!(
        total(Side::Ours, Subject::Payment),
        Some((9, dec("231.00")))
    );
    assert_eq!(total(Side::Ours, Subject::Refund), Some((3, dec("30.00"))));

    // Running the same day again yields the same report.
    let again = reconcile(&store, &ch, d0, StatementFormat::AlipayTrade, &bill_d0).await;
    assert_eq!(again, first);
    let stored = compare::report(&store, "alipay", d0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, first);

    // The next day: the cross-day trade is in its statement, next to a trade of that day
    // (listed twice: stored once).
    paid(&store, "alipay", "o_d1", "11.00", None, at(d1, 10, 0, 0)).await;
    let bill_d1 = alipay_bill(&[
        (
            "o_crossday",
            "T11",
            "TRADE_SUCCESS",
            "8.00",
            "0.00",
            at(d1, 0, 0, 3),
        ),
        (
            "o_d1",
            "T12",
            "TRADE_SUCCESS",
            "11.00",
            "0.00",
            at(d1, 10, 0, 0),
        ),
        (
            "o_d1",
            "T12",
            "TRADE_SUCCESS",
            "11.00",
            "0.00",
            at(d1, 10, 0, 0),
        ),
    ]);
    let next = reconcile(&store, &ch, d1, StatementFormat::AlipayTrade, &bill_d1).await;
    assert!(next.discrepancies.is_empty(), "{:#?}", next.discrepancies);
    assert_eq!(next.candidates, 0);
    assert_eq!(next.resolved_elsewhere, 1);
    assert_eq!((next.statement_lines, next.duplicate_lines), (2, 1));
    assert_eq!(next.matched_lines, 2);
    // o_early (in the day before's statement) and o_d1.
    assert_eq!((next.our_records, next.matched_records), (2, 2));
    let next_again = reconcile(&store, &ch, d1, StatementFormat::AlipayTrade, &bill_d1).await;
    assert_eq!(next_again, next);

    // Day 0 now shows the cross-day trade resolved by day 1, the rest unchanged.
    let after = compare::report(&store, "alipay", d0)
        .await
        .unwrap()
        .unwrap();
    let mut still_open = expected_d0.clone();
    let crossday = (
        MissingAtChannel,
        Subject::Payment,
        "o_crossday".to_string(),
        None,
    );
    still_open.remove(&crossday);
    assert_eq!(found(&after, false), still_open);
    assert_eq!(found(&after, true), BTreeSet::from([crossday.clone()]));
    let resolved = after
        .discrepancies
        .iter()
        .find(|d| d.order_no == "o_crossday")
        .unwrap();
    assert_eq!(
        resolved.resolution,
        Some(Resolution::FoundInStatement {
            run_id: "alipay/2026-01-06".into()
        })
    );
    assert_eq!(after.open(MissingAtChannel), 2);
    assert!(
        store
            .recon_open_discrepancies_for_order("alipay", "o_crossday")
            .await
            .unwrap()
            .is_empty()
    );

    // Rerunning day 0 now keeps that resolution, twice over.
    let rerun = reconcile(&store, &ch, d0, StatementFormat::AlipayTrade, &bill_d0).await;
    assert_eq!(found(&rerun, false), still_open);
    assert_eq!(found(&rerun, true), BTreeSet::from([crossday.clone()]));
    assert_eq!(rerun.matched_records, 8);
    let rerun_again = reconcile(&store, &ch, d0, StatementFormat::AlipayTrade, &bill_d0).await;
    assert_eq!(rerun_again, rerun);

    // A corrected statement: the amount difference is gone, and resolved as such.
    let corrected = bill_d0.replace(
        "o_amount,T2,TRADE_SUCCESS,21.00",
        "o_amount,T2,TRADE_SUCCESS,20.00",
    );
    let fixed = reconcile(&store, &ch, d0, StatementFormat::AlipayTrade, &corrected).await;
    let gone = (
        AmountMismatch,
        Subject::Payment,
        "o_amount".to_string(),
        None,
    );
    let mut open_now = still_open.clone();
    open_now.remove(&gone);
    assert_eq!(found(&fixed, false), open_now);
    assert_eq!(found(&fixed, true), BTreeSet::from([crossday, gone]));
    let gone_row = fixed
        .discrepancies
        .iter()
        .find(|d| d.order_no == "o_amount")
        .unwrap();
    assert_eq!(
        gone_row.resolution,
        Some(Resolution::GoneOnRerun {
            run_id: "alipay/2026-01-05".into()
        })
    );
    assert_eq!(fixed.matched_lines, 9);
}

/// A WeChat Pay `ALL` bill with its summary computed from the rows.
struct WechatBill {
    text: String,
    rows: u64,
    settled: Decimal,
    refunded: Decimal,
    fees: Decimal,
    ordered: Decimal,
    requested: Decimal,
}

impl WechatBill {
    const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

    fn new() -> WechatBill {
        WechatBill {
            text: format!("\u{feff}{}\r\n", Self::HEADER),
            rows: 0,
            settled: Decimal::ZERO,
            refunded: Decimal::ZERO,
            fees: Decimal::ZERO,
            ordered: Decimal::ZERO,
            requested: Decimal::ZERO,
        }
    }

    fn payment(&mut self, at_ms: i64, trade: &str, order: &str, amount: &str, fee: &str) {
        self.row(
            at_ms, trade, order, "SUCCESS", amount, "0", "0", "0.00", "", fee, amount, "0.00",
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn refund(
        &mut self,
        at_ms: i64,
        trade: &str,
        order: &str,
        refund_no: &str,
        amount: &str,
        status: &str,
        fee: &str,
        order_amount: &str,
    ) {
        let channel_refund = format!("503{trade}");
        self.row(
            at_ms,
            trade,
            order,
            "REFUND",
            "0.00",
            &channel_refund,
            refund_no,
            amount,
            status,
            fee,
            order_amount,
            amount,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        at_ms: i64,
        trade: &str,
        order: &str,
        state: &str,
        settled: &str,
        channel_refund: &str,
        refund_no: &str,
        refunded: &str,
        refund_status: &str,
        fee: &str,
        ordered: &str,
        requested: &str,
    ) {
        let refund_type = if state == "REFUND" { "ORIGINAL" } else { "" };
        self.text.push_str(&format!(
            "`{},`wx8888888888888888,`1900000109,`0,`,`{trade},`{order},`oUser,`NATIVE,`{state},`OTHERS,`CNY,`{settled},`0.00,`{channel_refund},`{refund_no},`{refunded},`0.00,`{refund_type},`{refund_status},`Tea, green,`,`{fee},`0.60%,`{ordered},`{requested},`\r\n",
            format_time(at_ms)
        ));
        self.rows += 1;
        self.settled += dec(settled);
        self.refunded += dec(refunded);
        self.fees += dec(fee);
        self.ordered += dec(ordered);
        self.requested += dec(requested);
    }

    fn finish(mut self) -> String {
        self.text.push_str("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n");
        self.text.push_str(&format!(
            "`{},`{},`{},`0.00,`{},`{},`{}\r\n",
            self.rows, self.settled, self.refunded, self.fees, self.ordered, self.requested
        ));
        self.text
    }
}

async fn case_wechat_itemised_refunds_and_fees(store: Store) {
    use DiscrepancyKind::*;
    let ch = FakeChannel::new("wechat");
    let d0 = day0();
    let t = |h| at(d0, h, 0, 0);

    paid(&store, "wechat", "w_ok", "9.90", Some("0.06"), t(9)).await;
    paid(&store, "wechat", "w_fee", "100.00", Some("0.60"), t(9)).await;
    paid(&store, "wechat", "w_r1", "50.00", Some("0.30"), t(9)).await;
    refund(&store, "wechat", "w_r1", "r1", "20.00", t(10), true).await;
    paid(&store, "wechat", "w_r2", "30.00", Some("0.18"), t(9)).await;
    refund(&store, "wechat", "w_r2", "r2", "10.00", t(10), false).await;
    paid(&store, "wechat", "w_r3", "20.00", Some("0.12"), t(9)).await;
    refund(&store, "wechat", "w_r3", "r3", "20.00", t(10), true).await;
    paid(&store, "wechat", "w_r4", "40.00", Some("0.24"), t(9)).await;
    refund(&store, "wechat", "w_r4", "r4", "4.00", t(10), true).await;
    paid(&store, "wechat", "w_r5", "25.00", None, t(9)).await;
    refund(&store, "wechat", "w_r5", "r5", "5.00", t(10), true).await;
    paid(&store, "wechat", "w_r6", "10.00", Some("0.06"), t(9)).await;
    refund(&store, "wechat", "w_r6", "r6", "5.00", t(10), true).await;
    // A refund of the day before, already reconciled then: not expected today.
    refund(
        &store,
        "wechat",
        "w_r6",
        "r_old",
        "1.00",
        at(d0, 0, 0, 0) - 1,
        true,
    )
    .await;

    ch.refund("r2", RefundState::Succeeded);
    ch.refund("r_unknown", RefundState::Succeeded);

    let mut bill = WechatBill::new();
    bill.payment(t(9), "4201", "w_ok", "9.90", "0.05940");
    bill.payment(t(9), "4202", "w_fee", "100.00", "0.70000");
    bill.payment(t(9), "4203", "w_r1", "50.00", "0.30000");
    bill.payment(t(9), "4204", "w_r2", "30.00", "0.18000");
    bill.payment(t(9), "4205", "w_r3", "20.00", "0.12000");
    bill.payment(t(9), "4206", "w_r4", "40.00", "0.24000");
    bill.payment(t(9), "4207", "w_r5", "25.00", "0.15000");
    bill.payment(t(9), "4208", "w_r6", "10.00", "0.06000");
    // 20.00 of 50.00 returns 0.12 of the 0.30 fee.
    bill.refund(
        t(10),
        "4203",
        "w_r1",
        "r1",
        "20.00",
        "SUCCESS",
        "-0.12000",
        "50.00",
    );
    // Succeeded at the channel; ours still processing.
    bill.refund(
        t(10),
        "4204",
        "w_r2",
        "r2",
        "10.00",
        "SUCCESS",
        "-0.06000",
        "30.00",
    );
    // The bill was cut while it was processing; ours has succeeded since: no difference.
    bill.refund(
        t(10),
        "4205",
        "w_r3",
        "r3",
        "20.00",
        "PROCESSING",
        "-0.12000",
        "20.00",
    );
    // r4 is missing from the bill; r5's amount differs; r6's fee share differs.
    bill.refund(
        t(10),
        "4207",
        "w_r5",
        "r5",
        "6.00",
        "SUCCESS",
        "-0.03000",
        "25.00",
    );
    bill.refund(
        t(10),
        "4208",
        "w_r6",
        "r6",
        "5.00",
        "SUCCESS",
        "-0.05000",
        "10.00",
    );
    // A refund we never made.
    bill.refund(
        t(11),
        "4201",
        "w_ok",
        "r_unknown",
        "1.00",
        "SUCCESS",
        "-0.01000",
        "9.90",
    );
    let text = bill.finish();

    let report = reconcile(&store, &ch, d0, StatementFormat::WechatTradeAll, &text).await;
    assert_eq!(
        found(&report, false),
        expect(&[
            (FeeMismatch, Subject::Payment, "w_fee", None),
            (StatusMismatch, Subject::Refund, "w_r2", Some("r2")),
            (MissingAtChannel, Subject::Refund, "w_r4", Some("r4")),
            (AmountMismatch, Subject::Refund, "w_r5", Some("r5")),
            (FeeMismatch, Subject::Refund, "w_r6", Some("r6")),
            (MissingLocally, Subject::Refund, "w_ok", Some("r_unknown")),
        ])
    );
    assert_eq!(report.candidates, 6);
    assert_eq!(report.dismissed, 0);
    assert_eq!(report.statement_lines, 14);
    // Lines of w_fee, r2, r5, r6 and r_unknown differ.
    assert_eq!(report.matched_lines, 9);
    // 8 payments and 5 succeeded refunds of the day (r2 is processing, r_old the day before).
    assert_eq!(report.our_records, 13);
    assert_eq!(report.matched_records, 9);

    let fee = report
        .discrepancies
        .iter()
        .find(|d| d.kind == FeeMismatch && d.subject == Subject::Payment)
        .unwrap();
    assert_eq!(fee.ours.fee, Some(dec("0.60")));
    assert_eq!(fee.channel.fee, Some(dec("0.70")));
    let refund_fee = report
        .discrepancies
        .iter()
        .find(|d| d.kind == FeeMismatch && d.subject == Subject::Refund)
        .unwrap();
    assert_eq!(refund_fee.ours.fee, Some(dec("0.03")));
    assert_eq!(refund_fee.channel.fee, Some(dec("0.05")));
    let status = report
        .discrepancies
        .iter()
        .find(|d| d.kind == StatusMismatch)
        .unwrap();
    assert_eq!(status.ours.status.as_deref(), Some("Processing"));
    assert_eq!(status.channel.status.as_deref(), Some("RefundSucceeded"));
    assert!(matches!(
        &status.channel_now,
        Some(ChannelView::Refund(r)) if r.state == RefundState::Succeeded
    ));

    let again = reconcile(&store, &ch, d0, StatementFormat::WechatTradeAll, &text).await;
    assert_eq!(again, report);

    // Our refund completes; the next comparison no longer finds the status difference.
    store.complete_refund("r2").await.unwrap();
    let later = reconcile(&store, &ch, d0, StatementFormat::WechatTradeAll, &text).await;
    let r2 = later
        .discrepancies
        .iter()
        .find(|d| d.refund_no.as_deref() == Some("r2"))
        .unwrap();
    assert!(matches!(
        r2.resolution,
        Some(Resolution::GoneOnRerun { .. })
    ));
    assert_eq!(later.open(StatusMismatch), 0);
    // r2 now counts among our succeeded refunds of the day, and matches its line.
    assert_eq!(later.our_records, 14);
    assert_eq!(later.matched_records, 10);
}

async fn case_steps_are_guarded_and_loads_idempotent(store: Store) {
    let ch = FakeChannel::new("alipay");
    let d0 = day0();
    paid(&store, "alipay", "g1", "1.00", None, at(d0, 8, 0, 0)).await;
    let run = compare::open_run(&store, "alipay", d0).await.unwrap();
    assert_eq!(compare::open_run(&store, "alipay", d0).await.unwrap(), run);

    // Nothing to compare before a statement is loaded.
    assert!(matches!(
        compare::compare(&store, &run, rate()).await,
        Err(ReconError::Store(StoreError::Invalid(_)))
    ));
    // A malformed statement fails the load, naming the line, and leaves no statement.
    let bad = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n\
               g1,T1,TRADE_SUCCESS,1.00,0.00,2026-01-05 08:00:00\n\
               g2,T2,TRADE_SUCCESS,abc,0.00,2026-01-05 08:00:00\n";
    match compare::load_statement(&store, &run, StatementFormat::AlipayTrade, bad.as_bytes()).await
    {
        Err(ReconError::Statement(e)) => assert_eq!(e.line(), Some(3), "{e}"),
        other => panic!("expected a statement error, got {other:?}"),
    }
    assert!(compare::compare(&store, &run, rate()).await.is_err());

    // Inserting the same batch twice stores it once.
    let good = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n\
                g1,T1,TRADE_SUCCESS,1.00,0.00,2026-01-05 08:00:00\n";
    let summary =
        compare::load_statement(&store, &run, StatementFormat::AlipayTrade, good.as_bytes())
            .await
            .unwrap();
    assert_eq!((summary.lines_read, summary.lines_stored), (1, 1));
    assert!(!summary.itemised_refunds);

    let summary = compare::compare(&store, &run, rate()).await.unwrap();
    assert_eq!(summary.candidates, 0);
    // Recording needs a candidate of the current comparison.
    let bogus = Checked {
        key: "AmountMismatch|Payment|nope||".into(),
        channel_now: ChannelView::Trade(TradeQuery {
            state: TradeState::NotFound,
            channel_trade_no: None,
            paid_amount: None,
        }),
    };
    assert!(
        compare::record(&store, &run, std::slice::from_ref(&bogus))
            .await
            .is_err()
    );

    // Finishing waits for every candidate's check.
    let extra = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n\
                 g1,T1,TRADE_SUCCESS,1.00,0.00,2026-01-05 08:00:00\n\
                 ghost,T9,TRADE_SUCCESS,2.00,0.00,2026-01-05 08:00:00\n";
    compare::load_statement(&store, &run, StatementFormat::AlipayTrade, extra.as_bytes())
        .await
        .unwrap();
    let summary = compare::compare(&store, &run, rate()).await.unwrap();
    assert_eq!(summary.by_kind, vec![(DiscrepancyKind::MissingLocally, 1)]);
    assert!(matches!(
        compare::finish(&store, &run, rate()).await,
        Err(ReconError::Unchecked(1))
    ));
    let report = check_and_finish(&store, &ch, d0).await;
    assert_eq!(report.statement_lines, 2);
    assert_eq!(report.open(DiscrepancyKind::MissingLocally), 1);
    // Once finished, late answers are refused.
    let page = compare::candidates(&store, &run, None, 10).await.unwrap();
    let late = Checked {
        key: page[0].key.clone(),
        channel_now: compare::check(&ch, &page[0]).await.unwrap(),
    };
    assert!(compare::record(&store, &run, &[late]).await.is_err());
    assert_eq!(
        compare::discrepancies(&store, &run, None, 10)
            .await
            .unwrap(),
        report.discrepancies
    );
    assert!(
        compare::report(&store, "alipay", day1())
            .await
            .unwrap()
            .is_none()
    );
}

/// A 100 000-line statement, generated on the fly and streamed through a 64 KiB pipe (never
/// whole in memory), against 100 000 orders; four differences planted.
async fn case_hundred_thousand_lines_stream(store: Store) {
    use DiscrepancyKind::*;
    const N: i64 = 100_000;
    let d0 = day0();
    let (start, _) = day_window(d0);
    exec(
        &store,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N}) \
             INSERT INTO payment_orders (order_id, merchant_id, merchant_order_no, amount_minor, \
                 currency, product_id, channel, subject, state, version, channel_trade_no, \
                 paid_amount_minor, expires_at_ms, created_at_ms, updated_at_ms) \
             SELECT 'big' || i, 'm1', 'no-big' || i, 100 + i, 'CNY', 'p1', 'alipay', 'bulk', \
                 'Succeeded', 3, 'T' || i, 100 + i, {start}, {start}, {start} FROM n"
        ),
    )
    .await;
    exec(
        &store,
        &format!(
            "INSERT INTO order_transitions (order_id, from_state, to_state, version, at_ms) \
             SELECT order_id, 'Pending', 'Succeeded', 3, {} FROM payment_orders \
             WHERE channel = 'alipay'",
            start + 3_600_000
        ),
    )
    .await;

    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let producer = tokio::spawn(async move {
        writer
            .write_all(b"out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n")
            .await
            .unwrap();
        for i in 1..=N {
            if i == 77_777 {
                // Missing at the channel; a trade we do not know takes its place.
                writer
                    .write_all(b"ghost1,TG1,TRADE_SUCCESS,1.00,0.00,2026-01-05 10:00:00\n")
                    .await
                    .unwrap();
                continue;
            }
            let amount = Decimal::new(100 + i + i64::from(i == 7), 2);
            let status = if i == 500 {
                "TRADE_CLOSED"
            } else {
                "TRADE_SUCCESS"
            };
            writer
                .write_all(
                    format!("big{i},T{i},{status},{amount},0.00,2026-01-05 10:00:00\n").as_bytes(),
                )
                .await
                .unwrap();
        }
    });
    let ch = FakeChannel {
        default_paid: true,
        ..FakeChannel::new("alipay")
    };
    ch.trade("big77777", TradeState::NotFound, None);
    // Refunded in full, says the statement; closed, says the channel now: we have it paid.
    ch.trade("big500", TradeState::Closed, None);

    let run = compare::open_run(&store, "alipay", d0).await.unwrap();
    let loaded = compare::load_statement(
        &store,
        &run,
        StatementFormat::AlipayTrade,
        BufReader::new(reader),
    )
    .await
    .unwrap();
    producer.await.unwrap();
    assert_eq!(
        (loaded.lines_read, loaded.lines_stored),
        (N as u64, N as u64)
    );

    let summary = compare::compare(&store, &run, rate()).await.unwrap();
    assert_eq!(summary.candidates, 4, "{summary:?}");
    let report = check_and_finish(&store, &ch, d0).await;
    assert_eq!(
        found(&report, false),
        expect(&[
            (AmountMismatch, Subject::Payment, "big7", None),
            (StatusMismatch, Subject::Payment, "big500", None),
            (MissingAtChannel, Subject::Payment, "big77777", None),
            (MissingLocally, Subject::Payment, "ghost1", None),
        ])
    );
    assert_eq!(report.statement_lines, N as u64);
    assert_eq!(report.matched_lines, N as u64 - 3);
    assert_eq!(report.our_records, N as u64);
    assert_eq!(report.matched_records, N as u64 - 3);
    let ours = report.totals.iter().find(|t| t.side == Side::Ours).unwrap();
    // Sum of 100 + i fen over i = 1..N.
    assert_eq!(ours.count, N as u64);
    assert_eq!(ours.amount, Decimal::new(100 * N + N * (N + 1) / 2, 2));
}

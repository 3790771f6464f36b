//! `payflow bench recon`: how fast a channel statement reconciles, and that it does so in bounded
//! memory, whatever its size (issue 7).
//!
//! For each database (SQLite, PostgreSQL or both) and each statement size (`--small-lines`, then
//! `--lines`), on a fresh scratch database:
//!
//! 1. **setup** (not measured): our side in bulk SQL, as the reconciliation suite's 100 000-line
//!    case does: the orders, their transitions and their refunds;
//! 2. **generate only**: the statement generator writing into `tokio::io::sink()`: what producing
//!    the text costs;
//! 3. **parse only**: the same statement through a 64 KiB `tokio::io::duplex` pipe into the
//!    format's `StatementParser`, lines counted and dropped: the baseline that shows what the
//!    store costs;
//! 4. **the run**, timed phase by phase as the reconciliation workflow calls the library:
//!    `load_statement` (fed through the pipe, never a whole statement in memory), `compare`,
//!    check + record of the candidates (pages of `--page`, the channel being an in-process fake
//!    that answers at once: this measures our side), and `finish`.
//!    Fees are compared at the channel's rate, 0.6 %, which the generated fees follow.
//!    `--analyze-lines` adds `ANALYZE recon_lines` between load and compare on PostgreSQL (the
//!    library does not): the comparison's plans there depend on fresh statistics.
//!
//! Memory: the process's VmRSS before the run and its peak (VmHWM, reset at the start of the run
//! through `/proc/self/clear_refs`) during it. The smaller statement, measured first in the same
//! process, is the baseline: a streaming reconciliation's peak does not grow with the statement.
//! With `--rounds`, times are medians, and the memory figures those of the round whose peak grew
//! the most (a later round starts with the memory the allocator kept from the earlier ones).
//!
//! The statement has a few planted differences, and the bench fails unless exactly those are
//! reported (with exact line and record counts). Not a test: it prints figures.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use payflow_activities::channels::alipay::sign::format_time;
use payflow_activities::channels::{
    Channel, ChannelError, CloseOutcome, NoticeError, PayoutRequest, PayoutState, PrecreateRequest,
    PrecreateResponse, RefundRequest, RefundResult, RefundState, StatementUrl, TradeQuery,
    TradeState, VerifiedNotice,
};
use payflow_activities::recon::compare::{self, day_window};
use payflow_activities::recon::{
    ChannelFeeRate, Checked, DiscrepancyKind, ReconReport, Side, StatementFormat, StatementParser,
    Subject,
};
use payflow_activities::store::{Backend, Store};
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbChoice {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The sandbox's Alipay-style trade bill (refunds as a trade's refunded total, a fee per
    /// trade).
    Alipay,
    /// WeChat Pay's `ALL` trade bill (refunds itemised, fees, summary lines).
    Wechat,
}

#[derive(Args, Debug)]
pub struct BenchReconArgs {
    /// Statement lines of the measured run (payments and refunds, as the loader counts them).
    #[arg(long, default_value_t = 100_000)]
    pub lines: u64,
    /// Statement lines of the smaller run measured first in the same process: the baseline
    /// showing that memory does not grow with the statement (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    pub small_lines: u64,
    #[arg(long, value_enum, default_value_t = DbChoice::Both)]
    pub db: DbChoice,
    #[arg(long, value_enum, default_value_t = Format::Alipay)]
    pub format: Format,
    /// PostgreSQL server on which a scratch database is created, and dropped afterwards.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub postgres_url: String,
    /// Directory of the scratch SQLite database (default: the system's temporary directory).
    #[arg(long)]
    pub sqlite_dir: Option<PathBuf>,
    /// Candidates per page when checking them with the channel.
    #[arg(long, default_value_t = 100)]
    pub page: u32,
    /// Runs of each column, each on a fresh database; times are medians, memory figures those of
    /// the round whose peak grew the most.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// On PostgreSQL, `ANALYZE recon_lines` between the load and the comparison (timed on its
    /// own row). The library does not do it: this shows what fresh statistics change.
    #[arg(long)]
    pub analyze_lines: bool,
}

// ---------------------------------------------------------------------------------------------
// What is generated
// ---------------------------------------------------------------------------------------------

/// Every `REFUND_EVERY`-th statement line is a refund (of the order on the line before), so
/// every `REFUND_EVERY - 1`-th order has one.
const REFUND_EVERY: u64 = 20;
const REFUNDED_ORDER_EVERY: u64 = REFUND_EVERY - 1;
/// Below this the planted differences could collide.
const MIN_LINES: u64 = 1000;
const MERCHANT: &str = "m1";
const GHOST_ORDER: &str = "ghost1";
const GHOST_AMOUNT_MINOR: i64 = 100;

fn business_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 5).expect("a valid date")
}

/// Order `k`'s amount in fen: 10.00 to 99.99 yuan. [`SQL_AMOUNT`] is the same over `i`.
fn amount_minor(k: u64) -> i64 {
    1000 + (k % 9000) as i64
}
const SQL_AMOUNT: &str = "(1000 + i % 9000)";

/// The channel's fee rate: 0.6 % ([`fee_rate`]).
const FEE_RATE_PPM: i64 = 6000;

fn fee_rate() -> ChannelFeeRate {
    ChannelFeeRate::new(Decimal::new(FEE_RATE_PPM, 6)).expect("a valid rate")
}

/// The fee exactly, in units of 0.00001 yuan (WeChat's five decimals; exact at 0.6 %).
fn exact_fee(amount_minor: i64) -> i64 {
    amount_minor * FEE_RATE_PPM / 1000
}

/// The fee in fen, rounded half up: what the comparison expects at [`fee_rate`], and what
/// `StatementLine::fee_minor` makes of [`exact_fee`].
fn fee_minor(amount_minor: i64) -> i64 {
    fee_rate().fee_minor(amount_minor)
}

fn refund_minor(k: u64) -> i64 {
    amount_minor(k) / 2
}

fn order_id(k: u64) -> String {
    format!("o{k}")
}

fn refund_id(k: u64) -> String {
    format!("r{k}")
}

fn paid_at_ms(day_start: i64, k: u64) -> i64 {
    day_start + 10 * 3_600_000 + (k % 36_000) as i64 * 1000
}

fn refunded_at_ms(day_start: i64, k: u64) -> i64 {
    day_start + 20 * 3_600_000 + (k % 3_600) as i64 * 1000
}

/// `12.34` from 1234 fen.
fn yuan(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

/// `0.05940` from 5940 units of 0.00001 yuan.
fn yuan5(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let u = units.abs();
    format!("{sign}{}.{:05}", u / 100_000, u % 100_000)
}

type Found = BTreeSet<(DiscrepancyKind, Subject, String, Option<String>)>;

/// The statement and our records of one run: `orders` orders `o1..`, every
/// [`REFUNDED_ORDER_EVERY`]-th with a succeeded refund, and the planted differences (order
/// numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    format: Format,
    lines: u64,
    orders: u64,
    refunds: u64,
    /// The statement's amount is one fen more.
    amount_mismatch: u64,
    /// The statement says refunded in full (Alipay) / revoked (WeChat); the channel now says
    /// closed: recorded.
    status_mismatch: u64,
    /// Same statement status, but the channel now says paid, as we do: dismissed.
    dismissed: u64,
    /// Its line is replaced by one for an order we do not have.
    missing_at_channel: u64,
    /// The statement's fee is 0.01 more than the channel's rate gives.
    fee_mismatch: u64,
    /// The statement's refund (total) is one fen more.
    refund_amount_mismatch: u64,
    /// Our refund is not in the statement: its line went to `extra_refund`'s order, which has
    /// no refund.
    refund_missing: u64,
    extra_refund: u64,
}

impl Plan {
    pub fn new(format: Format, lines: u64) -> anyhow::Result<Plan> {
        if lines < MIN_LINES {
            bail!("a statement of at least {MIN_LINES} lines is needed, got {lines}");
        }
        let refunds = lines / REFUND_EVERY;
        let orders = lines - refunds;
        // An order without a refund, at a fraction of the statement.
        let plain = |sevenths: u64| {
            let k = orders * sevenths / 7;
            if k.is_multiple_of(REFUNDED_ORDER_EVERY) {
                k + 1
            } else {
                k
            }
        };
        let refunded = |thirds: u64| REFUNDED_ORDER_EVERY * (refunds * thirds / 3).max(1);
        Ok(Plan {
            format,
            lines,
            orders,
            refunds,
            amount_mismatch: plain(1),
            status_mismatch: plain(2),
            dismissed: plain(3),
            missing_at_channel: plain(4),
            fee_mismatch: plain(5),
            extra_refund: plain(6),
            refund_amount_mismatch: refunded(1),
            refund_missing: refunded(2),
        })
    }

    fn channel(&self) -> &'static str {
        match self.format {
            Format::Alipay => "alipay",
            Format::Wechat => "wechat",
        }
    }

    fn statement_format(&self) -> StatementFormat {
        match self.format {
            Format::Alipay => StatementFormat::AlipayTrade,
            Format::Wechat => StatementFormat::WechatTradeAll,
        }
    }

    /// Whether we have a (succeeded) refund of order `k`. [`Plan::sql_refunded`] is the same.
    fn refunded(&self, k: u64) -> bool {
        k.is_multiple_of(REFUNDED_ORDER_EVERY) && k / REFUNDED_ORDER_EVERY <= self.refunds
    }

    fn sql_refunded(&self) -> String {
        format!(
            "(i % {REFUNDED_ORDER_EVERY} = 0 AND i / {REFUNDED_ORDER_EVERY} <= {})",
            self.refunds
        )
    }

    /// Whether the statement has a refund line for order `k`.
    fn refund_line(&self, k: u64) -> bool {
        (self.refunded(k) && k != self.refund_missing) || k == self.extra_refund
    }

    /// The discrepancies the run must record (open), exactly.
    fn expected(&self) -> Found {
        use DiscrepancyKind::*;
        let itemised = self.format == Format::Wechat;
        let refund_no = |k: u64| itemised.then(|| refund_id(k));
        let mut found = Found::new();
        let mut add = |kind, subject, order: String, refund: Option<String>| {
            found.insert((kind, subject, order, refund));
        };
        add(
            AmountMismatch,
            Subject::Payment,
            order_id(self.amount_mismatch),
            None,
        );
        add(
            StatusMismatch,
            Subject::Payment,
            order_id(self.status_mismatch),
            None,
        );
        add(
            MissingAtChannel,
            Subject::Payment,
            order_id(self.missing_at_channel),
            None,
        );
        add(MissingLocally, Subject::Payment, GHOST_ORDER.into(), None);
        add(
            FeeMismatch,
            Subject::Payment,
            order_id(self.fee_mismatch),
            None,
        );
        let k = self.refund_amount_mismatch;
        add(AmountMismatch, Subject::Refund, order_id(k), refund_no(k));
        let k = self.refund_missing;
        add(MissingAtChannel, Subject::Refund, order_id(k), refund_no(k));
        let k = self.extra_refund;
        add(MissingLocally, Subject::Refund, order_id(k), refund_no(k));
        found
    }

    /// Our payments' total (fen) and our refunds' total (fen).
    fn our_totals(&self) -> (i64, i64) {
        let payments = (1..=self.orders).map(amount_minor).sum();
        let refunds = (1..=self.orders)
            .filter(|&k| self.refunded(k))
            .map(refund_minor)
            .sum();
        (payments, refunds)
    }
}

/// Running sums of a WeChat bill, for its summary lines.
#[derive(Debug, Default)]
struct WechatSums {
    rows: u64,
    settled: i64,
    refunded: i64,
    /// In units of 0.00001 yuan.
    fees: i64,
    ordered: i64,
    requested: i64,
}

/// One row of a WeChat `ALL` bill (amounts in fen, fee in 0.00001 yuan).
struct WechatRow<'a> {
    at_ms: i64,
    trade: &'a str,
    order: &'a str,
    state: &'a str,
    settled: i64,
    channel_refund: &'a str,
    refund_no: &'a str,
    refunded: i64,
    refund_status: &'a str,
    fee: i64,
    ordered: i64,
    requested: i64,
}

const WECHAT_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const WECHAT_SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
const ALIPAY_HEADER: &str = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at,fee";

/// Writes a [`Plan`]'s statement one order at a time into a reused buffer: the header, each
/// order's rows, the footer (WeChat's summary). Never holds more than one order's text.
pub struct StatementWriter<'a> {
    plan: &'a Plan,
    day_start: i64,
    sums: WechatSums,
}

impl<'a> StatementWriter<'a> {
    pub fn new(plan: &'a Plan) -> StatementWriter<'a> {
        StatementWriter {
            plan,
            day_start: day_window(business_day()).0,
            sums: WechatSums::default(),
        }
    }

    fn header(&mut self, out: &mut String) {
        match self.plan.format {
            Format::Alipay => {
                out.push_str(ALIPAY_HEADER);
                out.push('\n');
            }
            Format::Wechat => {
                out.push('\u{feff}');
                out.push_str(WECHAT_HEADER);
                out.push_str("\r\n");
            }
        }
    }

    /// Order `k`'s rows (1-based).
    fn order(&mut self, k: u64, out: &mut String) {
        match self.plan.format {
            Format::Alipay => self.alipay_order(k, out),
            Format::Wechat => self.wechat_order(k, out),
        }
    }

    fn footer(&mut self, out: &mut String) {
        if self.plan.format == Format::Wechat {
            let s = &self.sums;
            let _ = write!(
                out,
                "{WECHAT_SUMMARY_HEADER}\r\n`{},`{},`{},`0.00,`{},`{},`{}\r\n",
                s.rows,
                yuan(s.settled),
                yuan(s.refunded),
                yuan5(s.fees),
                yuan(s.ordered),
                yuan(s.requested)
            );
        }
    }

    fn alipay_order(&mut self, k: u64, out: &mut String) {
        let p = self.plan;
        let at = format_time(paid_at_ms(self.day_start, k));
        if k == p.missing_at_channel {
            let _ = writeln!(
                out,
                "{GHOST_ORDER},TGHOST,TRADE_SUCCESS,{},0.00,{at},{}",
                yuan(GHOST_AMOUNT_MINOR),
                yuan(fee_minor(GHOST_AMOUNT_MINOR))
            );
            return;
        }
        let status = if k == p.status_mismatch || k == p.dismissed {
            "TRADE_CLOSED"
        } else {
            "TRADE_SUCCESS"
        };
        let amount = amount_minor(k) + i64::from(k == p.amount_mismatch);
        let refunded = if p.refund_line(k) {
            refund_minor(k) + i64::from(k == p.refund_amount_mismatch)
        } else {
            0
        };
        // The fee on what we collected, at the channel's rate (rounded to the fen, as the
        // sandbox writes it).
        let fee = fee_minor(amount_minor(k)) + i64::from(k == p.fee_mismatch);
        let _ = writeln!(
            out,
            "{},T{k},{status},{},{},{at},{}",
            order_id(k),
            yuan(amount),
            yuan(refunded),
            yuan(fee)
        );
    }

    fn wechat_order(&mut self, k: u64, out: &mut String) {
        let p = self.plan;
        let paid_at = paid_at_ms(self.day_start, k);
        if k == p.missing_at_channel {
            self.wechat_row(
                out,
                &WechatRow {
                    at_ms: paid_at,
                    trade: "TGHOST",
                    order: GHOST_ORDER,
                    state: "SUCCESS",
                    settled: GHOST_AMOUNT_MINOR,
                    channel_refund: "0",
                    refund_no: "0",
                    refunded: 0,
                    refund_status: "",
                    fee: exact_fee(GHOST_AMOUNT_MINOR),
                    ordered: GHOST_AMOUNT_MINOR,
                    requested: 0,
                },
            );
            return;
        }
        let (trade, order) = (format!("T{k}"), order_id(k));
        let amount = amount_minor(k) + i64::from(k == p.amount_mismatch);
        let fee = exact_fee(amount_minor(k)) + if p.fee_mismatch == k { 1000 } else { 0 };
        let state = if k == p.status_mismatch || k == p.dismissed {
            "REVOKED"
        } else {
            "SUCCESS"
        };
        self.wechat_row(
            out,
            &WechatRow {
                at_ms: paid_at,
                trade: &trade,
                order: &order,
                state,
                settled: amount,
                channel_refund: "0",
                refund_no: "0",
                refunded: 0,
                refund_status: "",
                fee,
                ordered: amount,
                requested: 0,
            },
        );
        if p.refund_line(k) {
            let refund = refund_minor(k);
            let listed = refund + i64::from(k == p.refund_amount_mismatch);
            self.wechat_row(
                out,
                &WechatRow {
                    at_ms: refunded_at_ms(self.day_start, k),
                    trade: &trade,
                    order: &order,
                    state: "REFUND",
                    settled: 0,
                    channel_refund: &format!("503{k}"),
                    refund_no: &refund_id(k),
                    refunded: listed,
                    refund_status: "SUCCESS",
                    // The fee given back, at the channel's rate on the refund.
                    fee: -fee_minor(refund) * 1000,
                    ordered: amount_minor(k),
                    requested: listed,
                },
            );
        }
    }

    fn wechat_row(&mut self, out: &mut String, r: &WechatRow<'_>) {
        let refund_type = if r.state == "REFUND" { "ORIGINAL" } else { "" };
        let _ = write!(
            out,
            "`{},`wx8888888888888888,`1900000109,`0,`,`{},`{},`oUser,`NATIVE,`{},`OTHERS,`CNY,\
             `{},`0.00,`{},`{},`{},`0.00,`{refund_type},`{},`Tea, green,`,`{},`0.60%,`{},`{},`\r\n",
            format_time(r.at_ms),
            r.trade,
            r.order,
            r.state,
            yuan(r.settled),
            r.channel_refund,
            r.refund_no,
            yuan(r.refunded),
            r.refund_status,
            yuan5(r.fee),
            yuan(r.ordered),
            yuan(r.requested),
        );
        let s = &mut self.sums;
        s.rows += 1;
        s.settled += r.settled;
        s.refunded += r.refunded;
        s.fees += r.fee;
        s.ordered += r.ordered;
        s.requested += r.requested;
    }
}

/// Streams the plan's statement into `w` (then shuts it down, which ends a pipe); returns the
/// bytes written.
async fn write_statement<W: AsyncWrite + Unpin>(plan: &Plan, w: W) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(32 * 1024, w);
    let mut writer = StatementWriter::new(plan);
    let mut text = String::with_capacity(1024);
    let mut bytes = 0u64;
    writer.header(&mut text);
    for k in 1..=plan.orders {
        if text.len() >= 512 {
            out.write_all(text.as_bytes()).await?;
            bytes += text.len() as u64;
            text.clear();
        }
        writer.order(k, &mut text);
    }
    writer.footer(&mut text);
    out.write_all(text.as_bytes()).await?;
    bytes += text.len() as u64;
    out.shutdown().await?;
    Ok(bytes)
}

/// A pipe of 64 KiB with the plan's statement being written into it by a task.
fn statement_pipe(
    plan: &Plan,
) -> (
    BufReader<tokio::io::DuplexStream>,
    tokio::task::JoinHandle<std::io::Result<u64>>,
) {
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    let plan = plan.clone();
    let producer = tokio::spawn(async move { write_statement(&plan, writer).await });
    (BufReader::new(reader), producer)
}

// ---------------------------------------------------------------------------------------------
// Our side, in bulk
// ---------------------------------------------------------------------------------------------

/// Orders, their transitions and refunds, in a few set-based statements, as the
/// reconciliation suite's 100 000-line case does. (No ledger entries: the comparison does not
/// read the ledger; the channel's fees are compared with its rate, [`fee_rate`].)
async fn setup(store: &Store, plan: &Plan) -> anyhow::Result<()> {
    let (start, _) = day_window(business_day());
    let n = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})",
        plan.orders
    );
    let channel = plan.channel();
    let refunded = plan.sql_refunded();
    let paid_at = format!("({start} + 36000000 + (i % 36000) * 1000)");
    let refunded_at = format!("({start} + 72000000 + (i % 3600) * 1000)");
    let refund_amount = format!("({SQL_AMOUNT} / 2)");
    let refund_fee = format!("(({refund_amount} * 6 + 500) / 1000)");
    let statements = [
        format!(
            "{n} INSERT INTO payment_orders (order_id, merchant_id, merchant_order_no, \
                 amount_minor, currency, product_id, channel, subject, state, version, \
                 channel_trade_no, paid_amount_minor, expires_at_ms, created_at_ms, updated_at_ms) \
             SELECT 'o' || i, '{MERCHANT}', 'no-' || i, {SQL_AMOUNT}, 'CNY', 'p1', '{channel}', \
                 'bench', CASE WHEN {refunded} THEN 'PartiallyRefunded' ELSE 'Succeeded' END, 3, \
                 'T' || i, {SQL_AMOUNT}, {start}, {start}, {start} FROM n"
        ),
        format!(
            "{n} INSERT INTO order_transitions (order_id, from_state, to_state, version, at_ms) \
             SELECT 'o' || i, 'Created', 'Pending', 2, {start} FROM n"
        ),
        format!(
            "{n} INSERT INTO order_transitions (order_id, from_state, to_state, version, at_ms) \
             SELECT 'o' || i, 'Pending', 'Succeeded', 3, {paid_at} FROM n"
        ),
        format!(
            "{n} INSERT INTO refunds (refund_id, order_id, merchant_id, merchant_refund_no, kind, \
                 amount_minor, fee_minor, currency, reason, state, created_at_ms, updated_at_ms) \
             SELECT 'r' || i, 'o' || i, '{MERCHANT}', 'mr-' || i, 'Merchant', {refund_amount}, \
                 {refund_fee}, 'CNY', 'bench', 'Succeeded', {refunded_at}, {refunded_at} \
             FROM n WHERE {refunded}"
        ),
    ];
    for sql in &statements {
        sqlx::query(sql)
            .execute(store.pool())
            .await
            .with_context(|| format!("setup: {sql}"))?;
    }
    if store.backend() == Backend::Postgres {
        // What autovacuum would have done for tables of that size by the time of a real run.
        sqlx::query("ANALYZE payment_orders, order_transitions, refunds")
            .execute(store.pool())
            .await
            .context("setup: ANALYZE")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The channel: answers at once
// ---------------------------------------------------------------------------------------------

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Trades are paid and refunds succeeded, except the orders in `closed`. The trait's methods
/// are written as `async_trait` expands them (this crate does not depend on `async-trait`).
struct InstantChannel {
    name: String,
    closed: HashSet<String>,
}

fn unsupported<T>() -> Result<T, ChannelError> {
    Err(ChannelError::Declined {
        code: "bench.UNSUPPORTED".into(),
        message: "not used by reconciliation".into(),
    })
}

impl Channel for InstantChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn precreate<'l0, 'l1, 'at>(
        &'l0 self,
        _req: &'l1 PrecreateRequest,
    ) -> BoxFuture<'at, Result<PrecreateResponse, ChannelError>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async { unsupported() })
    }

    fn query<'l0, 'l1, 'at>(
        &'l0 self,
        out_trade_no: &'l1 str,
    ) -> BoxFuture<'at, Result<TradeQuery, ChannelError>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async move {
            Ok(TradeQuery {
                state: if self.closed.contains(out_trade_no) {
                    TradeState::Closed
                } else {
                    TradeState::Paid
                },
                channel_trade_no: None,
                paid_amount: None,
            })
        })
    }

    fn close<'l0, 'l1, 'at>(
        &'l0 self,
        _out_trade_no: &'l1 str,
    ) -> BoxFuture<'at, Result<CloseOutcome, ChannelError>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async { unsupported() })
    }

    fn refund<'l0, 'l1, 'at>(
        &'l0 self,
        _req: &'l1 RefundRequest,
    ) -> BoxFuture<'at, Result<RefundResult, ChannelError>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async { unsupported() })
    }

    fn query_refund<'l0, 'l1, 'l2, 'at>(
        &'l0 self,
        _out_trade_no: &'l1 str,
        _out_request_no: &'l2 str,
    ) -> BoxFuture<'at, Result<RefundResult, ChannelError>>
    where
        'l0: 'at,
        'l1: 'at,
        'l2: 'at,
        Self: 'at,
    {
        Box::pin(async {
            Ok(RefundResult {
                state: RefundState::Succeeded,
                refunded_amount: None,
            })
        })
    }

    fn payout<'l0, 'l1, 'at>(
        &'l0 self,
        _req: &'l1 PayoutRequest,
    ) -> BoxFuture<'at, Result<PayoutState, ChannelError>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async { unsupported() })
    }

    fn query_payout<'l0, 'l1, 'at>(
        &'l0 self,
        _out_biz_no: &'l1 str,
    ) -> BoxFuture<'at, Result<PayoutState, ChannelError>>
    where
        'l0: 'at,
        'l1: 'at,
        Self: 'at,
    {
        Box::pin(async { unsupported() })
    }

    fn statement_url<'l0, 'at>(
        &'l0 self,
        _date: NaiveDate,
    ) -> BoxFuture<'at, Result<StatementUrl, ChannelError>>
    where
        'l0: 'at,
        Self: 'at,
    {
        Box::pin(async { Ok(StatementUrl::NotReady) })
    }

    fn verify_notice(
        &self,
        _params: &std::collections::BTreeMap<String, String>,
    ) -> Result<VerifiedNotice, NoticeError> {
        Err(NoticeError::BadSignature)
    }

    fn ack_body(&self) -> &'static str {
        "success"
    }
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kib: u64,
    hwm_kib: u64,
}

fn mem() -> Mem {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    Mem {
        rss_kib: status_kib(&status, "VmRSS").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM").unwrap_or(0),
    }
}

/// Resets VmHWM to the current RSS (Linux >= 4.0); false when the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

/// The figures of one run of one statement on one database.
#[derive(Debug, Clone, Default)]
struct Measured {
    bytes: u64,
    setup: Duration,
    generate: Duration,
    parse: Duration,
    parse_growth_kib: u64,
    load: Duration,
    /// `--analyze-lines` on PostgreSQL.
    analyze: Option<Duration>,
    compare: Duration,
    check: Duration,
    candidates: u64,
    finish: Duration,
    /// VmHWM before the run, before it was reset.
    hwm_before_kib: u64,
    rss_before_kib: u64,
    peak_kib: u64,
    rss_after_kib: u64,
    /// `peak_kib - rss_before_kib` of the round.
    growth_kib: u64,
    peak_reset: bool,
    verdict: String,
}

impl Measured {
    fn total(&self) -> Duration {
        self.load + self.analyze.unwrap_or_default() + self.compare + self.check + self.finish
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
        }
    }
}

/// A database made for one run, removed afterwards.
enum Scratch {
    Sqlite(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl Scratch {
    async fn create(db: Db, args: &BenchReconArgs) -> anyhow::Result<(Scratch, String)> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        match db {
            Db::Sqlite => {
                let dir = args.sqlite_dir.clone().unwrap_or_else(std::env::temp_dir);
                let path = dir.join(format!("payflow_bench_recon_{}.db", &tag[..12]));
                let url = format!("sqlite://{}", path.display());
                Ok((Scratch::Sqlite(path), url))
            }
            Db::Postgres => {
                let name = format!("payflow_bench_recon_{}", &tag[..12]);
                let mut admin = PgConnection::connect(&args.postgres_url)
                    .await
                    .with_context(|| format!("connect {}", redact(&args.postgres_url)))?;
                sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("CREATE DATABASE {name}"))?;
                let _ = admin.close().await;
                let mut url = url::Url::parse(&args.postgres_url).context("--postgres-url")?;
                url.set_path(&format!("/{name}"));
                Ok((
                    Scratch::Postgres {
                        admin_url: args.postgres_url.clone(),
                        name,
                    },
                    url.to_string(),
                ))
            }
        }
    }

    async fn remove(self) {
        match self {
            Scratch::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Scratch::Postgres { admin_url, name } => {
                let dropped = async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .execute(&mut admin)
                        .await?;
                    admin.close().await
                }
                .await;
                if let Err(e) = dropped {
                    eprintln!("warning: could not drop the scratch database {name}: {e}");
                }
            }
        }
    }
}

async fn measure(db: Db, plan: &Plan, args: &BenchReconArgs) -> anyhow::Result<Measured> {
    let (scratch, url) = Scratch::create(db, args).await?;
    let result = async {
        let store = Store::connect(&url)
            .await
            .with_context(|| format!("connect {}", redact(&url)))?;
        let measured = measure_on(&store, plan, args).await;
        store.close().await;
        measured
    }
    .await;
    scratch.remove().await;
    result
}

async fn measure_on(store: &Store, plan: &Plan, args: &BenchReconArgs) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    let t = Instant::now();
    setup(store, plan).await?;
    m.setup = t.elapsed();

    // Baselines: producing the text, and parsing it without storing it.
    let t = Instant::now();
    m.bytes = write_statement(plan, tokio::io::sink()).await?;
    m.generate = t.elapsed();

    let _ = reset_peak();
    let before = mem();
    let t = Instant::now();
    let (reader, producer) = statement_pipe(plan);
    let mut parser = StatementParser::open(plan.statement_format(), plan.channel(), reader)
        .await
        .context("parse only")?;
    let mut parsed = 0u64;
    while parser.next_line().await.context("parse only")?.is_some() {
        parsed += 1;
    }
    drop(parser);
    producer.await??;
    m.parse = t.elapsed();
    m.parse_growth_kib = mem().hwm_kib.saturating_sub(before.rss_kib);
    if parsed != plan.lines {
        bail!(
            "parse only: {parsed} lines, the statement has {}",
            plan.lines
        );
    }

    // The run.
    m.hwm_before_kib = mem().hwm_kib;
    m.peak_reset = reset_peak();
    m.rss_before_kib = mem().rss_kib;
    let day = business_day();
    let run = compare::open_run(store, plan.channel(), day).await?;

    let t = Instant::now();
    let (reader, producer) = statement_pipe(plan);
    let loaded = compare::load_statement(store, &run, plan.statement_format(), reader).await;
    let written = producer.await?;
    let loaded = loaded.context("load")?;
    written.context("writing the statement")?;
    m.load = t.elapsed();
    if (loaded.lines_read, loaded.lines_stored) != (plan.lines, plan.lines) {
        bail!(
            "load: read {} and stored {} lines, the statement has {}",
            loaded.lines_read,
            loaded.lines_stored,
            plan.lines
        );
    }

    if args.analyze_lines && store.backend() == Backend::Postgres {
        let t = Instant::now();
        sqlx::query("ANALYZE recon_lines")
            .execute(store.pool())
            .await
            .context("ANALYZE recon_lines")?;
        m.analyze = Some(t.elapsed());
    }

    let t = Instant::now();
    let summary = compare::compare(store, &run, Some(fee_rate()))
        .await
        .context("compare")?;
    m.compare = t.elapsed();
    m.candidates = summary.candidates;

    let channel = InstantChannel {
        name: plan.channel().to_string(),
        closed: HashSet::from([order_id(plan.status_mismatch)]),
    };
    let t = Instant::now();
    let mut after: Option<String> = None;
    let mut checked_count = 0u64;
    loop {
        let page = compare::candidates(store, &run, after.as_deref(), args.page.max(1))
            .await
            .context("candidates")?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        let mut checked = Vec::with_capacity(page.len());
        for c in &page {
            checked.push(Checked {
                key: c.key.clone(),
                channel_now: compare::check(&channel, c).await.context("check")?,
            });
        }
        checked_count += checked.len() as u64;
        compare::record(store, &run, &checked)
            .await
            .context("record")?;
    }
    m.check = t.elapsed();

    let t = Instant::now();
    let report = compare::finish(store, &run, Some(fee_rate()))
        .await
        .context("finish")?;
    m.finish = t.elapsed();
    let after_run = mem();
    m.peak_kib = after_run.hwm_kib;
    m.rss_after_kib = after_run.rss_kib;
    m.growth_kib = m.peak_kib.saturating_sub(m.rss_before_kib);

    if checked_count != summary.candidates {
        bail!(
            "checked {checked_count} candidates, compare found {}",
            summary.candidates
        );
    }
    m.verdict = verify(plan, &report).map_err(|e| {
        anyhow::anyhow!(
            "WRONG RESULT on a {}-line {:?} statement: {e}",
            plan.lines,
            plan.format
        )
    })?;
    Ok(m)
}

/// Checks the report against the plan, exactly; a one-line summary when it agrees.
fn verify(plan: &Plan, report: &ReconReport) -> Result<String, String> {
    let expected = plan.expected();
    let found: Found = report
        .discrepancies
        .iter()
        .filter(|d| !d.resolved())
        .map(|d| (d.kind, d.subject, d.order_no.clone(), d.refund_no.clone()))
        .collect();
    if found != expected {
        return Err(format!(
            "discrepancies differ:\n  expected {expected:?}\n  found    {found:?}"
        ));
    }
    let resolved = report.discrepancies.iter().filter(|d| d.resolved()).count();
    let from_lines = expected
        .iter()
        .filter(|(k, ..)| *k != DiscrepancyKind::MissingAtChannel)
        .count() as u64;
    let about_ours = expected
        .iter()
        .filter(|(k, ..)| *k != DiscrepancyKind::MissingLocally)
        .count() as u64;
    let our_records = plan.orders + plan.refunds;
    let (paid, refunded) = plan.our_totals();
    let total = |side, subject| {
        report
            .totals
            .iter()
            .find(|t| t.side == side && t.subject == subject)
            .map(|t| (t.count, t.amount))
    };
    type CountAndSum = Option<(u64, Decimal)>;
    let checks: [(&str, CountAndSum, CountAndSum); 4] = [
        (
            "our payments",
            total(Side::Ours, Subject::Payment),
            Some((plan.orders, Decimal::new(paid, 2))),
        ),
        (
            "our refunds",
            total(Side::Ours, Subject::Refund),
            Some((plan.refunds, Decimal::new(refunded, 2))),
        ),
        (
            "statement payment lines",
            total(Side::Statement, Subject::Payment).map(|(n, _)| (n, Decimal::ZERO)),
            Some((plan.orders, Decimal::ZERO)),
        ),
        (
            "statement refund lines",
            total(Side::Statement, Subject::Refund).map(|(n, _)| (n, Decimal::ZERO)),
            Some((plan.refunds, Decimal::ZERO)),
        ),
    ];
    let counts = [
        ("candidates", report.candidates, expected.len() as u64 + 1),
        ("dismissed", report.dismissed, 1),
        ("resolved", resolved as u64, 0),
        ("statement lines", report.statement_lines, plan.lines),
        ("duplicate lines", report.duplicate_lines, 0),
        (
            "matched lines",
            report.matched_lines,
            plan.lines - from_lines,
        ),
        ("our records", report.our_records, our_records),
        (
            "matched records",
            report.matched_records,
            our_records - about_ours,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, got, want) in counts {
        if got != want {
            wrong.push(format!("{what}: {got}, expected {want}"));
        }
    }
    for (what, got, want) in checks {
        if got != want {
            wrong.push(format!(
                "{what} (count, amount): {got:?}, expected {want:?}"
            ));
        }
    }
    if report.discrepancies_truncated {
        wrong.push("the report's discrepancies are truncated".into());
    }
    if !wrong.is_empty() {
        return Err(wrong.join("; "));
    }
    Ok(format!("ok: {} found, 1 dismissed", expected.len()))
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Medians of the times over the rounds of one column; the run's memory figures are those of
/// the round whose peak grew the most, the parse-only growth the maximum.
fn combine(runs: &[Measured]) -> Measured {
    let med = |f: fn(&Measured) -> Duration| median(runs.iter().map(f).collect());
    let first = runs.first().cloned().unwrap_or_default();
    let worst = runs
        .iter()
        .max_by_key(|m| m.growth_kib)
        .cloned()
        .unwrap_or_default();
    Measured {
        bytes: first.bytes,
        setup: med(|m| m.setup),
        generate: med(|m| m.generate),
        parse: med(|m| m.parse),
        parse_growth_kib: runs.iter().map(|m| m.parse_growth_kib).max().unwrap_or(0),
        load: med(|m| m.load),
        analyze: first
            .analyze
            .map(|_| median(runs.iter().map(|m| m.analyze.unwrap_or_default()).collect())),
        compare: med(|m| m.compare),
        check: med(|m| m.check),
        candidates: first.candidates,
        finish: med(|m| m.finish),
        peak_reset: runs.iter().all(|m| m.peak_reset),
        verdict: first.verdict,
        ..worst
    }
}

struct Column {
    label: String,
    plan: Plan,
    m: Measured,
}

pub async fn run(args: BenchReconArgs) -> anyhow::Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be positive");
    }
    let dbs: &[Db] = match args.db {
        DbChoice::Sqlite => &[Db::Sqlite],
        DbChoice::Postgres => &[Db::Postgres],
        DbChoice::Both => &[Db::Sqlite, Db::Postgres],
    };
    let mut sizes = Vec::new();
    if args.small_lines > 0 && args.small_lines != args.lines {
        sizes.push(args.small_lines);
    }
    sizes.push(args.lines);
    let plans = sizes
        .iter()
        .map(|&n| Plan::new(args.format, n))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut columns = Vec::new();
    for &db in dbs {
        for plan in &plans {
            let mut runs = Vec::new();
            for round in 1..=args.rounds {
                eprintln!(
                    "bench recon: {} lines on {} (round {round}/{}) ...",
                    plan.lines,
                    db.name(),
                    args.rounds
                );
                let m = measure(db, plan, &args)
                    .await
                    .with_context(|| format!("{} lines on {}", plan.lines, db.name()))?;
                eprintln!(
                    "  load {:.2} s, compare {:.2} s, check+record {:.3} s, finish {:.2} s, \
                     peak +{}",
                    m.load.as_secs_f64(),
                    m.compare.as_secs_f64(),
                    m.check.as_secs_f64(),
                    m.finish.as_secs_f64(),
                    mib(m.growth_kib)
                );
                runs.push(m);
            }
            columns.push(Column {
                label: format!("{} {}", db.name(), plan.lines),
                plan: plan.clone(),
                m: combine(&runs),
            });
        }
    }
    print_table(&args, &columns);
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn rate(lines: u64, d: Duration) -> String {
    format!("{:.0} lines/s", lines as f64 / d.as_secs_f64().max(1e-9))
}

fn print_table(args: &BenchReconArgs, columns: &[Column]) {
    let Some(first) = columns.first() else { return };
    let (format, refunds) = match args.format {
        Format::Alipay => (
            "alipay (the sandbox's trade bill: refunds as a trade's refunded total, fee per trade)",
            "refunded totals",
        ),
        Format::Wechat => (
            "wechat (ALL trade bill: itemised refunds, fees, summary lines)",
            "refund lines",
        ),
    };
    println!("payflow bench recon: {format}");
    println!(
        "every {REFUND_EVERY}th line a refund; {} planted differences + 1 dismissed; statement \
         streamed through a 64 KiB pipe; loaded {} lines per insert; channel check: in-process \
         fake (answers at once); candidates paged by {}; {} round(s): times are medians, memory \
         from the round whose peak grew most",
        first.plan.expected().len(),
        compare::LOAD_BATCH,
        args.page,
        args.rounds,
    );
    let width = 44;
    let col = columns
        .iter()
        .map(|c| c.label.len().max(22))
        .collect::<Vec<_>>();
    let row = |label: &str, cells: Vec<String>| {
        let mut line = format!("{label:<width$}");
        for (cell, w) in cells.iter().zip(&col) {
            line.push_str(&format!("  {cell:>w$}"));
        }
        println!("{line}");
    };
    let cells = |f: &dyn Fn(&Column) -> String| columns.iter().map(f).collect::<Vec<_>>();
    row("", cells(&|c| c.label.clone()));
    row(
        &format!("statement lines (payments + {refunds})"),
        cells(&|c| format!("{} + {}", c.plan.orders, c.plan.refunds)),
    );
    row(
        "statement size",
        cells(&|c| format!("{:.1} MB", c.m.bytes as f64 / 1e6)),
    );
    row(
        "setup: our records, bulk SQL (not measured)",
        cells(&|c| secs(c.m.setup)),
    );
    row(
        "baseline: generate only (into a sink)",
        cells(&|c| rate(c.plan.lines, c.m.generate)),
    );
    row(
        "baseline: parse only (pipe + parser)",
        cells(&|c| rate(c.plan.lines, c.m.parse)),
    );
    row(
        "load (pipe + parser + inserts)",
        cells(&|c| rate(c.plan.lines, c.m.load)),
    );
    row("load", cells(&|c| secs(c.m.load)));
    if columns.iter().any(|c| c.m.analyze.is_some()) {
        row(
            "ANALYZE recon_lines (--analyze-lines)",
            cells(&|c| c.m.analyze.map_or("-".into(), secs)),
        );
    }
    row("compare (SQL, both ways)", cells(&|c| secs(c.m.compare)));
    row(
        "check + record of the candidates",
        cells(&|c| format!("{} ({})", secs(c.m.check), c.m.candidates)),
    );
    row(
        "finish (resolutions, totals, report)",
        cells(&|c| secs(c.m.finish)),
    );
    row("load .. finish", cells(&|c| secs(c.m.total())));
    row(
        "load .. finish",
        cells(&|c| rate(c.plan.lines, c.m.total())),
    );
    let reset = columns.iter().all(|c| c.m.peak_reset);
    if reset {
        row(
            "RSS at the start of the run (VmRSS)",
            cells(&|c| mib(c.m.rss_before_kib)),
        );
        row(
            "peak RSS during the run (VmHWM, reset)",
            cells(&|c| mib(c.m.peak_kib)),
        );
    } else {
        row(
            "RSS at the start of the run (VmRSS)",
            cells(&|c| mib(c.m.rss_before_kib)),
        );
        row(
            "VmHWM before the run (not resettable)",
            cells(&|c| mib(c.m.hwm_before_kib)),
        );
        row("VmHWM after the run", cells(&|c| mib(c.m.peak_kib)));
    }
    row(
        "peak growth during the run",
        cells(&|c| format!("+{}", mib(c.m.growth_kib))),
    );
    row(
        "peak growth during parse only",
        cells(&|c| format!("+{}", mib(c.m.parse_growth_kib))),
    );
    row("RSS after the run", cells(&|c| mib(c.m.rss_after_kib)));
    row("result", cells(&|c| c.m.verdict.clone()));
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use payflow_activities::recon::LineKind;

    use super::*;

    /// The whole statement of a small plan, for the tests only.
    fn statement(plan: &Plan) -> String {
        let mut writer = StatementWriter::new(plan);
        let mut text = String::new();
        writer.header(&mut text);
        for k in 1..=plan.orders {
            writer.order(k, &mut text);
        }
        writer.footer(&mut text);
        text
    }

    #[test]
    fn plans_add_up_and_planted_orders_are_distinct() {
        for format in [Format::Alipay, Format::Wechat] {
            for lines in [1000, 1001, 1019, 10_000, 99_999, 100_000] {
                let p = Plan::new(format, lines).unwrap();
                assert_eq!(p.orders + p.refunds, lines);
                let refunded = (1..=p.orders).filter(|&k| p.refunded(k)).count() as u64;
                assert_eq!(refunded, p.refunds, "{lines}");
                let with_line = (1..=p.orders).filter(|&k| p.refund_line(k)).count() as u64;
                assert_eq!(
                    with_line, p.refunds,
                    "{lines}: one refund line moved, none lost"
                );
                let mut planted = vec![
                    p.amount_mismatch,
                    p.status_mismatch,
                    p.dismissed,
                    p.missing_at_channel,
                    p.extra_refund,
                    p.refund_amount_mismatch,
                    p.refund_missing,
                ];
                planted.push(p.fee_mismatch);
                let n = planted.len();
                planted.sort();
                planted.dedup();
                assert_eq!(planted.len(), n, "{lines}: {p:?}");
                assert!(planted.iter().all(|&k| (1..=p.orders).contains(&k)));
                assert!(p.refunded(p.refund_amount_mismatch) && p.refunded(p.refund_missing));
                for k in [p.amount_mismatch, p.status_mismatch, p.extra_refund] {
                    assert!(!p.refunded(k));
                }
            }
        }
        assert!(Plan::new(Format::Alipay, 999).is_err());
        assert_eq!(Plan::new(Format::Alipay, 1000).unwrap().expected().len(), 8);
        assert_eq!(Plan::new(Format::Wechat, 1000).unwrap().expected().len(), 8);
    }

    /// The generated statements parse, line for line, with the payments, refunds and planted
    /// values where the plan says (a WeChat bill's summary matches its rows, or it would not
    /// parse).
    #[tokio::test]
    async fn generated_statements_parse_as_planned() {
        for format in [Format::Alipay, Format::Wechat] {
            let plan = Plan::new(format, 2000).unwrap();
            let text = statement(&plan);
            let mut parser =
                StatementParser::open(plan.statement_format(), plan.channel(), text.as_bytes())
                    .await
                    .unwrap();
            let (mut payments, mut refunds) = (0u64, 0u64);
            let mut orders = BTreeSet::new();
            while let Some(l) = parser.next_line().await.unwrap() {
                match &l.kind {
                    LineKind::Payment => {
                        payments += 1;
                        orders.insert(l.order_no.clone());
                        if l.order_no == order_id(plan.amount_mismatch) {
                            let want = amount_minor(plan.amount_mismatch) + 1;
                            assert_eq!(l.amount.minor_units(), want);
                        }
                        if l.order_no != GHOST_ORDER {
                            let k: u64 = l.order_no[1..].parse().unwrap();
                            let want =
                                fee_minor(amount_minor(k)) + i64::from(plan.fee_mismatch == k);
                            assert_eq!(l.fee_minor(), Some(want), "{}", l.order_no);
                        }
                    }
                    LineKind::Refund { refund_no } => {
                        refunds += 1;
                        assert_eq!(refund_no.is_some(), format == Format::Wechat);
                        assert_ne!(l.order_no, order_id(plan.refund_missing));
                    }
                }
            }
            assert_eq!((payments, refunds), (plan.orders, plan.refunds));
            assert!(orders.contains(GHOST_ORDER));
            assert!(!orders.contains(&order_id(plan.missing_at_channel)));
            assert_eq!(orders.len() as u64, plan.orders);
        }
    }

    #[tokio::test]
    async fn the_streamed_statement_is_the_same_text() {
        let plan = Plan::new(Format::Wechat, 1500).unwrap();
        let mut out = Vec::new();
        let bytes = write_statement(&plan, &mut out).await.unwrap();
        assert_eq!(bytes, out.len() as u64);
        assert_eq!(String::from_utf8(out).unwrap(), statement(&plan));
    }

    #[test]
    fn helpers() {
        assert_eq!(yuan(1234), "12.34");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan5(5940), "0.05940");
        assert_eq!(yuan5(-18_000), "-0.18000");
        // 9.90 yuan: 0.0594 fee, 6 fen; a half fen rounds up.
        assert_eq!(fee_minor(990), 6);
        assert_eq!(fee_minor(2500), 15);
        assert_eq!(fee_minor(1750), 11);
        for a in [990, 1000, 1750, 2500, 9999] {
            assert_eq!(fee_minor(a), (exact_fee(a) + 500) / 1000, "{a}");
        }
        let status = "Name:\tpayflow\nVmHWM:\t  320744 kB\nVmRSS:\t   13708 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(320_744));
        assert_eq!(status_kib(status, "VmRSS"), Some(13_708));
        assert_eq!(status_kib(status, "VmSwap"), None);
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(vec![ms(2), ms(1)]), ms(2));
        assert_eq!(median(Vec::new()), Duration::ZERO);
    }
}

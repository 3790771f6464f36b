//! The reconciliation API the workflow's activities call, and its serde types.
//!
//! One run reconciles one channel's statement of one business day (a calendar day in the
//! channel's time zone, Beijing time for Alipay and WeChat Pay). In order:
//!
//! 1. [`open_run`] creates (or finds) the run `{channel}/{yyyy-mm-dd}`;
//! 2. [`load_statement`] streams the downloaded statement through its parser into the store in
//!    batches of [`LOAD_BATCH`] lines (bounded memory whatever the statement's size);
//! 3. [`compare`] compares both ways in SQL (statement -> our orders and refunds, and our
//!    records of the day -> the statements) and keeps the differences as [`Candidate`]s. Fees
//!    are compared with what the channel's configured rate says it charges
//!    ([`ChannelFeeRate`]): the fee in a statement is the channel's cost to us, not the fee we
//!    charge merchants (`platform:fees` in the ledger);
//! 4. page through [`candidates`]; for each, [`check`] asks the channel about that order (or
//!    refund) now, and [`record`] stores the answers: [`verdict`] decides, per candidate,
//!    whether it is recorded as a [`Discrepancy`] or dismissed;
//! 5. [`finish`] closes the run and returns its [`ReconReport`]; [`report`] reads it again
//!    later, [`discrepancies`] pages through all of them.
//!
//! Every step is idempotent and may be retried or rerun; a rerun of the same day with the same
//! statement and the same records yields the same report. How cross-day transactions are
//! resolved is described in `store::recon`.

use chrono::{FixedOffset, NaiveDate, TimeZone};
use payflow_client::{Currency, PayState, RefundState as OurRefundState};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufRead;

use super::line::{LineStatus, StatementLine};
use super::{ReconError, StatementFormat, StatementParser};
use crate::channels::{
    Channel, ChannelError, RefundResult, RefundState as ChannelRefundState, TradeQuery, TradeState,
};
use crate::store::Store;

/// Statement lines stored per insert.
pub const LOAD_BATCH: usize = 1000;
/// Discrepancies carried in a [`ReconReport`]; the rest are paged with [`discrepancies`].
pub const REPORT_DISCREPANCY_LIMIT: u32 = 1000;
/// The statements' time zone (Beijing, UTC+8) for Alipay and WeChat Pay.
pub const STATEMENT_UTC_OFFSET_SECS: i32 = 8 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunState {
    Created,
    /// A statement is being stored (or a load stopped half-way; loading again starts over).
    Loading,
    Loaded,
    /// Candidates computed, being checked with the channel.
    Compared,
    Completed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Created => "Created",
            RunState::Loading => "Loading",
            RunState::Loaded => "Loaded",
            RunState::Compared => "Compared",
            RunState::Completed => "Completed",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        [
            RunState::Created,
            RunState::Loading,
            RunState::Loaded,
            RunState::Compared,
            RunState::Completed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// The channel's fee rate: what the channel charges us, as a fraction of each amount (the
/// `[[channels]] fee_rate` of the configuration), at most six decimals (`0.006` = 0.6 %).
///
/// A statement line's fee is expected to be `rate x amount`, rounded half-up to the minor
/// unit, for a payment (on what was collected) and for a refund (the part given back), exactly
/// as the channel computes it per line. Without a configured rate, fees are not compared (the
/// statement's fees still appear in its totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelFeeRate {
    parts_per_million: i64,
}

impl ChannelFeeRate {
    const SCALE: i64 = 1_000_000;

    /// A rate from its decimal form: at least 0, below 1, at most six decimals.
    pub fn new(rate: Decimal) -> Result<ChannelFeeRate, String> {
        if rate.is_sign_negative() || rate >= Decimal::ONE {
            return Err(format!("fee rate {rate} must be at least 0 and below 1"));
        }
        let ppm = rate * Decimal::from(Self::SCALE);
        if ppm.fract() != Decimal::ZERO {
            return Err(format!("fee rate {rate} has more than six decimals"));
        }
        let parts_per_million = rust_decimal::prelude::ToPrimitive::to_i64(&ppm)
            .ok_or_else(|| format!("fee rate {rate} out of range"))?;
        Ok(ChannelFeeRate { parts_per_million })
    }

    pub fn parts_per_million(self) -> i64 {
        self.parts_per_million
    }

    /// The fee on `amount_minor` (not negative), in minor units, rounded half-up.
    pub fn fee_minor(self, amount_minor: i64) -> i64 {
        (amount_minor * self.parts_per_million + Self::SCALE / 2) / Self::SCALE
    }

    /// The same as an SQL expression over the integer expression `amount_minor` (exact and
    /// identical on SQLite and PostgreSQL: integer arithmetic, division truncating).
    pub(crate) fn fee_sql(self, amount_minor: &str) -> String {
        format!(
            "((({amount_minor}) * {} + {}) / {})",
            self.parts_per_million,
            Self::SCALE / 2,
            Self::SCALE
        )
    }
}

/// A reconciliation run: one channel, one business day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconRun {
    /// `{channel}/{yyyy-mm-dd}`.
    pub run_id: String,
    pub channel: String,
    pub date: NaiveDate,
    /// The business day as unix ms, `[start, end)`.
    pub day_start_ms: i64,
    pub day_end_ms: i64,
    pub state: RunState,
    /// Whether the loaded statement lists refunds one by one (see
    /// [`StatementParser::itemised_refunds`]).
    pub itemised_refunds: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DiscrepancyKind {
    /// The channel has it, we do not.
    MissingLocally,
    /// We have it (paid, or refund succeeded, that day), no statement of the channel does.
    MissingAtChannel,
    AmountMismatch,
    StatusMismatch,
    FeeMismatch,
}

impl DiscrepancyKind {
    pub const ALL: [DiscrepancyKind; 5] = [
        DiscrepancyKind::MissingLocally,
        DiscrepancyKind::MissingAtChannel,
        DiscrepancyKind::AmountMismatch,
        DiscrepancyKind::StatusMismatch,
        DiscrepancyKind::FeeMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscrepancyKind::MissingLocally => "MissingLocally",
            DiscrepancyKind::MissingAtChannel => "MissingAtChannel",
            DiscrepancyKind::AmountMismatch => "AmountMismatch",
            DiscrepancyKind::StatusMismatch => "StatusMismatch",
            DiscrepancyKind::FeeMismatch => "FeeMismatch",
        }
    }

    pub fn parse(s: &str) -> Option<DiscrepancyKind> {
        DiscrepancyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Whether a candidate or discrepancy is about a payment or a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    Payment,
    Refund,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Payment => "Payment",
            Subject::Refund => "Refund",
        }
    }

    pub fn parse(s: &str) -> Option<Subject> {
        [Subject::Payment, Subject::Refund]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One side's values of a compared record. `status` is ours as [`PayState`] /
/// [`payflow_client::RefundState`] text, the channel's as [`LineStatus`] text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Values {
    pub currency: Option<Currency>,
    pub amount: Option<Decimal>,
    pub fee: Option<Decimal>,
    pub status: Option<String>,
}

/// A difference found by [`compare`], before the channel is asked about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Stable within the run: `kind|subject|order_no|refund_no|channel_trade_no`. Pages are
    /// ordered by it; [`record`] refers to candidates by it.
    pub key: String,
    pub kind: DiscrepancyKind,
    pub subject: Subject,
    /// Our order id (the channel's `out_trade_no`).
    pub order_no: String,
    /// Our refund id, for a refund listed on its own.
    pub refund_no: Option<String>,
    pub channel_trade_no: Option<String>,
    /// The statement line, for differences found from the statement's side.
    pub line_no: Option<u64>,
    pub ours: Values,
    pub channel: Values,
}

/// What the channel answered when asked about a candidate's order or refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelView {
    Trade(TradeQuery),
    Refund(RefundResult),
}

/// A candidate (by key) with the channel's answer, for [`record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    pub key: String,
    pub channel_now: ChannelView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Record,
    Dismiss { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// The record appeared in that run's statement (a cross-day transaction).
    FoundInStatement { run_id: String },
    /// Comparing the run again (`run_id`: itself) no longer found it.
    GoneOnRerun { run_id: String },
}

/// A recorded difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    /// The run that found it.
    pub run_id: String,
    pub key: String,
    pub kind: DiscrepancyKind,
    pub subject: Subject,
    pub order_no: String,
    pub refund_no: Option<String>,
    pub channel_trade_no: Option<String>,
    pub line_no: Option<u64>,
    pub ours: Values,
    /// As the statement has it.
    pub channel: Values,
    /// What the channel answered when asked before recording.
    pub channel_now: Option<ChannelView>,
    /// `None` while open.
    pub resolution: Option<Resolution>,
}

impl Discrepancy {
    pub fn resolved(&self) -> bool {
        self.resolution.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    Statement,
    Ours,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Statement => "Statement",
            Side::Ours => "Ours",
        }
    }
}

/// Count and sums of one side's records of one kind and currency. The statement's side: its
/// lines (for a format without itemised refunds, refund lines are the refunded totals of the
/// day's trades). Our side: payments first paid that day, refunds that succeeded and were
/// created that day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub side: Side,
    pub subject: Subject,
    pub currency: Currency,
    pub count: u64,
    pub amount: Decimal,
    pub fee: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    pub kind: DiscrepancyKind,
    pub open: u64,
    pub resolved: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Lines the parser produced.
    pub lines_read: u64,
    /// Distinct lines stored (a line repeated in the statement is stored once).
    pub lines_stored: u64,
    pub duplicates: u64,
    pub itemised_refunds: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompareSummary {
    pub candidates: u64,
    pub by_kind: Vec<(DiscrepancyKind, u64)>,
    /// Open discrepancies of other runs of the channel that this statement resolved.
    pub resolved_elsewhere: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSummary {
    pub recorded: u64,
    pub dismissed: u64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconReport {
    pub run_id: String,
    pub channel: String,
    pub date: NaiveDate,
    pub state: RunState,
    pub statement_lines: u64,
    pub duplicate_lines: u64,
    /// Statement lines with no open discrepancy of this run.
    pub matched_lines: u64,
    /// Our payments and refunds of the day.
    pub our_records: u64,
    pub matched_records: u64,
    pub candidates: u64,
    /// Candidates the channel's answer showed to be no difference.
    pub dismissed: u64,
    pub totals: Vec<Totals>,
    /// Discrepancies this run recorded, by kind.
    pub by_kind: Vec<KindCount>,
    /// Discrepancies of other runs this run's statement resolved (cross-day).
    pub resolved_elsewhere: u64,
    /// The first [`REPORT_DISCREPANCY_LIMIT`] discrepancies of the run, by key.
    pub discrepancies: Vec<Discrepancy>,
    pub discrepancies_truncated: bool,
}

impl ReconReport {
    /// Open discrepancies of one kind.
    pub fn open(&self, kind: DiscrepancyKind) -> u64 {
        self.by_kind
            .iter()
            .find(|k| k.kind == kind)
            .map_or(0, |k| k.open)
    }
}

/// `[start, end)` of `date` in the statements' time zone, as unix ms.
pub fn day_window(date: NaiveDate) -> (i64, i64) {
    let tz = FixedOffset::east_opt(STATEMENT_UTC_OFFSET_SECS).expect("a valid offset");
    let at = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
            .single()
            .expect("a fixed offset has no gaps")
            .timestamp_millis()
    };
    let next = date.succ_opt().unwrap_or(date);
    (at(date), at(next))
}

/// Creates the run of `channel` for `date`, or returns the existing one.
pub async fn open_run(
    store: &Store,
    channel: &str,
    date: NaiveDate,
) -> Result<ReconRun, ReconError> {
    let (start, end) = day_window(date);
    Ok(store.recon_open(channel, date, start, end).await?)
}

/// Parses the statement from `reader` and stores its lines, [`LOAD_BATCH`] at a time. Loading
/// again (a retry, or a new download) replaces the run's lines once the new load is complete;
/// a load that fails half-way leaves the run `Loading` until a load succeeds.
pub async fn load_statement<R: AsyncBufRead + Unpin>(
    store: &Store,
    run: &ReconRun,
    format: StatementFormat,
    reader: R,
) -> Result<LoadSummary, ReconError> {
    let load_no = store.recon_begin_load(&run.run_id).await?;
    let mut parser = StatementParser::open(format, &run.channel, reader).await?;
    let mut batch: Vec<StatementLine> = Vec::with_capacity(LOAD_BATCH);
    let mut read = 0u64;
    while let Some(line) = parser.next_line().await? {
        read += 1;
        batch.push(line);
        if batch.len() == LOAD_BATCH {
            store
                .recon_insert_lines(&run.run_id, load_no, &batch)
                .await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store
            .recon_insert_lines(&run.run_id, load_no, &batch)
            .await?;
    }
    Ok(store
        .recon_end_load(&run.run_id, load_no, read, parser.itemised_refunds())
        .await?)
}

/// Stores an empty statement for the run: the channel has none for the day because nothing
/// happened (WeChat Pay's `NO_STATEMENT_EXIST`). Comparing then reports every record of ours
/// of the day as missing at the channel.
pub async fn load_empty_statement(
    store: &Store,
    run: &ReconRun,
    format: StatementFormat,
) -> Result<LoadSummary, ReconError> {
    let load_no = store.recon_begin_load(&run.run_id).await?;
    Ok(store
        .recon_end_load(&run.run_id, load_no, 0, format.itemised_refunds())
        .await?)
}

/// Compares the loaded statement with our records, both ways, and replaces the run's
/// candidates. Also resolves other runs' discrepancies this statement settles (cross-day).
/// Fees are compared with `fee_rate` (none: not compared).
pub async fn compare(
    store: &Store,
    run: &ReconRun,
    fee_rate: Option<ChannelFeeRate>,
) -> Result<CompareSummary, ReconError> {
    Ok(store.recon_compare(&run.run_id, fee_rate).await?)
}

/// Up to `limit` candidates with keys after `after`, by key.
pub async fn candidates(
    store: &Store,
    run: &ReconRun,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Candidate>, ReconError> {
    Ok(store.recon_candidates(&run.run_id, after, limit).await?)
}

/// Asks the channel about the candidate's refund (when it names one) or trade.
pub async fn check(channel: &dyn Channel, c: &Candidate) -> Result<ChannelView, ChannelError> {
    Ok(match (c.subject, &c.refund_no) {
        (Subject::Refund, Some(refund_no)) => {
            ChannelView::Refund(channel.query_refund(&c.order_no, refund_no).await?)
        }
        _ => ChannelView::Trade(channel.query(&c.order_no).await?),
    })
}

/// Whether a candidate is recorded, given what the channel says now.
///
/// A statement is a snapshot: a status can move after it is cut (a refund completes, a trade
/// is refunded in full). A status mismatch whose channel answer now agrees with our record is
/// dismissed. Everything else is recorded, with the channel's answer kept beside it: a missing
/// record stays a discrepancy even when the channel knows the trade (it is then expected in
/// another day's statement, and resolved when that statement is reconciled), and amounts and
/// fees in a statement are what is settled, whatever a query says.
pub fn verdict(c: &Candidate, now: &ChannelView) -> Verdict {
    if c.kind != DiscrepancyKind::StatusMismatch {
        return Verdict::Record;
    }
    let ours = c.ours.status.as_deref();
    let agrees = match (c.subject, now) {
        (Subject::Payment, ChannelView::Trade(q)) => ours
            .and_then(PayState::parse)
            .is_some_and(|s| trade_state_agrees(q.state, s)),
        (Subject::Refund, ChannelView::Refund(r)) => ours
            .and_then(refund_state_parse)
            .is_some_and(|s| refund_state_agrees(&r.state, s)),
        _ => false,
    };
    if agrees {
        Verdict::Dismiss {
            reason: "the channel's current state agrees with ours: the statement was cut before \
                     it changed"
                .into(),
        }
    } else {
        Verdict::Record
    }
}

/// Stores the channel's answers: each candidate is recorded as a discrepancy or dismissed
/// ([`verdict`]). Idempotent: recording a candidate again updates the same discrepancy.
pub async fn record(
    store: &Store,
    run: &ReconRun,
    checked: &[Checked],
) -> Result<RecordSummary, ReconError> {
    Ok(store.recon_record(&run.run_id, checked).await?)
}

/// Completes the run once every candidate was checked: discrepancies an earlier comparison
/// of this run recorded and this one no longer finds are resolved, totals and counts are
/// stored (our side's fees at `fee_rate`, as [`compare`] used it), and the report is returned.
pub async fn finish(
    store: &Store,
    run: &ReconRun,
    fee_rate: Option<ChannelFeeRate>,
) -> Result<ReconReport, ReconError> {
    let unchecked = store.recon_unchecked(&run.run_id).await?;
    if unchecked > 0 {
        return Err(ReconError::Unchecked(unchecked));
    }
    store.recon_finish(&run.run_id, fee_rate).await?;
    report(store, &run.channel, run.date)
        .await?
        .ok_or_else(|| ReconError::NoRun(run.run_id.clone()))
}

/// The report of `channel`'s run for `date`, if there is one.
pub async fn report(
    store: &Store,
    channel: &str,
    date: NaiveDate,
) -> Result<Option<ReconReport>, ReconError> {
    Ok(store
        .recon_report(&run_id(channel, date), REPORT_DISCREPANCY_LIMIT)
        .await?)
}

/// Up to `limit` discrepancies the run recorded with keys after `after`, by key.
pub async fn discrepancies(
    store: &Store,
    run: &ReconRun,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Discrepancy>, ReconError> {
    Ok(store.recon_discrepancies(&run.run_id, after, limit).await?)
}

pub fn run_id(channel: &str, date: NaiveDate) -> String {
    format!("{channel}/{}", date.format("%Y-%m-%d"))
}

// ---------------------------------------------------------------------------------------------
// Which states agree: one table, used by the SQL comparison and by the verdict.
// ---------------------------------------------------------------------------------------------

/// Our payment states that agree with a statement's status of the trade. A `Paid` trade also
/// agrees with a `Closed` order that has a late-payment refund (not failed): the customer paid
/// after we closed, and the money is on its way back (checked in SQL).
pub(crate) fn order_states_agreeing(status: LineStatus) -> &'static [PayState] {
    match status {
        LineStatus::Paid => &[
            PayState::Succeeded,
            PayState::PartiallyRefunded,
            PayState::Refunded,
            PayState::Exception,
        ],
        LineStatus::FullyRefunded => &[PayState::Refunded, PayState::Closed],
        LineStatus::Revoked => &[PayState::Closed, PayState::Failed, PayState::Refunded],
        LineStatus::RefundSucceeded | LineStatus::RefundProcessing | LineStatus::RefundFailed => {
            &[]
        }
    }
}

/// Our refund states that agree with a statement's status of the refund. A refund the
/// statement shows processing may have succeeded since (the statement is not updated).
pub(crate) fn refund_states_agreeing(status: LineStatus) -> &'static [OurRefundState] {
    match status {
        LineStatus::RefundSucceeded => &[OurRefundState::Succeeded],
        LineStatus::RefundProcessing => &[
            OurRefundState::Requested,
            OurRefundState::Processing,
            OurRefundState::Succeeded,
        ],
        LineStatus::RefundFailed => &[OurRefundState::Failed],
        LineStatus::Paid | LineStatus::FullyRefunded | LineStatus::Revoked => &[],
    }
}

/// Our payment states a channel query's trade state agrees with.
fn trade_state_agrees(channel: TradeState, ours: PayState) -> bool {
    use PayState::*;
    match channel {
        TradeState::Paid => matches!(ours, Succeeded | PartiallyRefunded | Refunded | Exception),
        // Alipay closes a trade refunded in full.
        TradeState::Closed => matches!(ours, Closed | Refunded | Failed),
        TradeState::NotFound | TradeState::WaitingForPayment => {
            matches!(ours, Created | Pending | Closed | Failed)
        }
    }
}

fn refund_state_agrees(channel: &ChannelRefundState, ours: OurRefundState) -> bool {
    match channel {
        ChannelRefundState::Succeeded => ours == OurRefundState::Succeeded,
        ChannelRefundState::Processing => {
            matches!(ours, OurRefundState::Requested | OurRefundState::Processing)
        }
        ChannelRefundState::Failed { .. } | ChannelRefundState::NotFound => {
            ours == OurRefundState::Failed
        }
    }
}

pub(crate) fn refund_state_parse(s: &str) -> Option<OurRefundState> {
    [
        OurRefundState::Requested,
        OurRefundState::Processing,
        OurRefundState::Succeeded,
        OurRefundState::Failed,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

#[cfg(test)]
mod tests {
    use payflow_client::Money;

    use super::*;

    fn candidate(kind: DiscrepancyKind, subject: Subject, ours: &str) -> Candidate {
        Candidate {
            key: "k".into(),
            kind,
            subject,
            order_no: "o1".into(),
            refund_no: (subject == Subject::Refund).then(|| "r1".to_string()),
            channel_trade_no: Some("T1".into()),
            line_no: Some(2),
            ours: Values {
                status: Some(ours.into()),
                ..Values::default()
            },
            channel: Values::default(),
        }
    }

    fn trade(state: TradeState) -> ChannelView {
        ChannelView::Trade(TradeQuery {
            state,
            channel_trade_no: Some("T1".into()),
            paid_amount: (state == TradeState::Paid)
                .then(|| Money::parse("1.00", Currency::Cny).unwrap()),
        })
    }

    fn refund(state: ChannelRefundState) -> ChannelView {
        ChannelView::Refund(RefundResult {
            state,
            refunded_amount: None,
        })
    }

    #[test]
    fn only_status_mismatches_the_channel_now_agrees_with_are_dismissed() {
        use DiscrepancyKind::*;
        // The statement said paid, our order is refunded, and the channel now says closed
        // (refunded in full): the statement was cut before the refund.
        let c = candidate(StatusMismatch, Subject::Payment, "Refunded");
        assert!(matches!(
            verdict(&c, &trade(TradeState::Closed)),
            Verdict::Dismiss { .. }
        ));
        // We missed a payment: the channel still says paid.
        let c = candidate(StatusMismatch, Subject::Payment, "Pending");
        assert_eq!(verdict(&c, &trade(TradeState::Paid)), Verdict::Record);
        // A refund the statement showed processing, succeeded at the channel since, while ours
        // still waits: recorded (ours lags).
        let c = candidate(StatusMismatch, Subject::Refund, "Processing");
        assert_eq!(
            verdict(&c, &refund(ChannelRefundState::Succeeded)),
            Verdict::Record
        );
        let c = candidate(StatusMismatch, Subject::Refund, "Failed");
        assert!(matches!(
            verdict(
                &c,
                &refund(ChannelRefundState::Failed {
                    code: "ABNORMAL".into(),
                    message: String::new()
                })
            ),
            Verdict::Dismiss { .. }
        ));
        // The other kinds are recorded whatever the channel says now.
        for kind in [
            MissingLocally,
            MissingAtChannel,
            AmountMismatch,
            FeeMismatch,
        ] {
            let c = candidate(kind, Subject::Payment, "Succeeded");
            assert_eq!(verdict(&c, &trade(TradeState::Paid)), Verdict::Record);
            assert_eq!(verdict(&c, &trade(TradeState::NotFound)), Verdict::Record);
        }
        // An answer about the wrong thing never dismisses.
        let c = candidate(StatusMismatch, Subject::Payment, "Succeeded");
        assert_eq!(
            verdict(&c, &refund(ChannelRefundState::Succeeded)),
            Verdict::Record
        );
    }

    #[test]
    fn channel_fees_round_half_up_per_line() {
        let rate = ChannelFeeRate::new(Decimal::new(6, 3)).unwrap();
        assert_eq!(rate.parts_per_million(), 6000);
        // 0.6 % of 12.34 = 0.07404; of 2.34 = 0.01404; of 0.83 = 0.00498; of 0.84 = 0.00504.
        assert_eq!(
            (
                rate.fee_minor(1234),
                rate.fee_minor(234),
                rate.fee_minor(83),
                rate.fee_minor(84)
            ),
            (7, 1, 0, 1)
        );
        assert_eq!(
            ChannelFeeRate::new(Decimal::new(38, 4))
                .unwrap()
                .parts_per_million(),
            3800
        );
        assert!(ChannelFeeRate::new(Decimal::new(1, 7)).is_err());
        assert!(ChannelFeeRate::new(Decimal::ONE).is_err());
        assert!(ChannelFeeRate::new(Decimal::new(-1, 3)).is_err());
        assert_eq!(
            rate.fee_sql("o.amount_minor"),
            "(((o.amount_minor) * 6000 + 500000) / 1000000)"
        );
    }

    #[test]
    fn the_business_day_is_beijing_time() {
        let (start, end) = day_window(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap());
        assert_eq!(start, 1_767_542_400_000);
        assert_eq!(end - start, 86_400_000);
        assert_eq!(
            run_id("alipay", NaiveDate::from_ymd_opt(2026, 1, 5).unwrap()),
            "alipay/2026-01-05"
        );
    }

    #[test]
    fn every_status_has_its_agreeing_states_on_one_side() {
        for s in LineStatus::ALL {
            let orders = order_states_agreeing(s);
            let refunds = refund_states_agreeing(s);
            assert!(orders.is_empty() != refunds.is_empty(), "{s:?}");
        }
        for k in DiscrepancyKind::ALL {
            assert_eq!(DiscrepancyKind::parse(k.as_str()), Some(k));
        }
    }
}

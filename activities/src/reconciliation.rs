//! Reconciliation activities (the `Reconciliation` workflow, `recon/{channel}/{yyyy-mm-dd}`),
//! over the library in [`crate::recon`]:
//!
//! 1. [`ReconActivities::open_run`] creates (or finds) the run and hands the workflow its
//!    statement retry schedule;
//! 2. [`ReconActivities::fetch_statement`] asks the channel for the day's statement and, when
//!    there is one, streams the download into the store as it arrives (never the whole body in
//!    memory), heartbeating while bytes flow and giving up on a download that stalls; a
//!    statement not generated yet, or one the channel refuses or that cannot be read, is an
//!    answer ([`Fetched`]), not a failure;
//! 3. [`ReconActivities::compare_statement`] compares both ways in SQL;
//! 4. [`ReconActivities::check_page`] asks the channel about one page of differences (a few
//!    queries at a time) and records the answers: one activity per page, so a run with many
//!    differences keeps a small history, and a retried page asks again and records the same;
//! 5. [`ReconActivities::finish`] closes the run and returns its report summary.
//!
//! Every step is idempotent (the library's steps are): a retry or a rerun yields the same
//! report. Fees are compared with the channel's configured rate ([`ReconSettings::fee_rates`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures::StreamExt;
use payflow_client::{
    ReconDiscrepancy, ReconDiscrepancyKind, ReconKindCount, ReconSide, ReconSubject, ReconSummary,
    ReconTotal, ReconValues,
};
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use crate::channels::{ChannelError, RefundState, StatementFile, TradeState};
use crate::payment::{channel, channel_err, fatal, store_err, transient};
use crate::recon::compare::{self, ChannelFeeRate, Checked, CompareSummary};
use crate::recon::{
    ChannelView, Discrepancy, DiscrepancyKind, ReconError, ReconReport, ReconRun, Resolution, Side,
    StatementError, Subject, Values,
};
use crate::services::SharedServices;
use crate::store::StoreError;

/// Reconciliation policy, from `[recon]` and `[[channels]] fee_rate`.
#[derive(Debug, Clone)]
pub struct ReconSettings {
    /// Waits between attempts to get a statement not generated yet (ms); the last repeats.
    pub statement_retry_ms: Vec<u64>,
    /// How long a run keeps trying before it is parked for an operator (ms).
    pub statement_deadline_ms: u64,
    /// Differences checked with the channel per activity.
    pub page_size: u32,
    /// Channel queries in flight at once while checking a page.
    pub check_concurrency: usize,
    /// A download that delivers no byte for this long is given up (and retried).
    pub stall_timeout: Duration,
    /// Discrepancies listed in a run's result (all of them are in the store).
    pub result_discrepancies: usize,
    /// Each channel's fee rate, its cost to us; fees are not compared for a channel without.
    pub fee_rates: BTreeMap<String, ChannelFeeRate>,
}

impl Default for ReconSettings {
    fn default() -> Self {
        ReconSettings {
            // 30 min, 1 h, 2 h, then every 4 h, until the deadline.
            statement_retry_ms: vec![1_800_000, 3_600_000, 7_200_000, 14_400_000],
            statement_deadline_ms: 12 * 3_600_000,
            page_size: 200,
            check_concurrency: 8,
            stall_timeout: Duration::from_secs(60),
            result_discrepancies: 100,
            fee_rates: BTreeMap::new(),
        }
    }
}

/// One channel's business day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconDay {
    pub channel: String,
    pub date: NaiveDate,
}

/// What [`ReconActivities::open_run`] hands the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconPlan {
    pub run_id: String,
    pub statement_retry_ms: Vec<u64>,
    pub statement_deadline_ms: u64,
    pub page_size: u32,
}

/// What asking for the statement gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fetched {
    /// Downloaded and stored (`empty`: the channel has none because nothing happened that day).
    Loaded {
        lines: u64,
        duplicates: u64,
        empty: bool,
    },
    /// Not generated yet: ask again later.
    NotReady,
    /// The channel refused it, or it cannot be read: for an operator.
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckPage {
    pub day: ReconDay,
    /// The key of the last difference of the previous page.
    pub after: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageChecked {
    pub checked: u32,
    pub recorded: u64,
    pub dismissed: u64,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<String>,
}

pub struct ReconActivities {
    services: SharedServices,
    settings: Arc<ReconSettings>,
}

impl ReconActivities {
    pub fn new(services: SharedServices, settings: ReconSettings) -> Self {
        ReconActivities {
            services,
            settings: Arc::new(settings),
        }
    }

    fn fee_rate(&self, channel: &str) -> Option<ChannelFeeRate> {
        self.settings.fee_rates.get(channel).copied()
    }

    async fn run(&self, day: &ReconDay) -> Result<ReconRun, ActivityError> {
        compare::open_run(&self.services.store, &day.channel, day.date)
            .await
            .map_err(recon_err)
    }
}

fn recon_err(e: ReconError) -> ActivityError {
    match e {
        // A newer load or pass started meanwhile (an earlier attempt still running): again.
        ReconError::Store(StoreError::Conflict(m)) => transient(m),
        ReconError::Store(e) => store_err(e),
        // The connection broke mid-download, or the file did not match its hash: again.
        ReconError::Statement(e @ StatementError::Io { .. }) => transient(e),
        other => fatal(other),
    }
}

#[activities]
impl ReconActivities {
    /// Creates (or finds) the run of the day; answers the retry schedule from configuration.
    #[activity]
    pub async fn open_run(
        self: Arc<Self>,
        _ctx: ActivityContext,
        day: ReconDay,
    ) -> Result<ReconPlan, ActivityError> {
        if self.services.channels.get(&day.channel).is_none() {
            return Err(fatal(format!("channel {} is not configured", day.channel)));
        }
        let run = self.run(&day).await?;
        Ok(ReconPlan {
            run_id: run.run_id,
            statement_retry_ms: self.settings.statement_retry_ms.clone(),
            statement_deadline_ms: self.settings.statement_deadline_ms,
            page_size: self.settings.page_size,
        })
    }

    /// Gets the statement and stores it, streaming.
    #[activity]
    pub async fn fetch_statement(
        self: Arc<Self>,
        ctx: ActivityContext,
        day: ReconDay,
    ) -> Result<Fetched, ActivityError> {
        let store = &self.services.store;
        let run = self.run(&day).await?;
        let ch = channel(&self.services, &day.channel)?;
        let file = match ch.open_statement(day.date).await {
            Ok(file) => file,
            Err(ChannelError::Declined { code, message }) => {
                return Ok(Fetched::Failed {
                    reason: format!("the channel refused the statement: {code}: {message}"),
                });
            }
            Err(e) => return Err(channel_err(e)),
        };
        let (format, body) = match file {
            StatementFile::NotReady => return Ok(Fetched::NotReady),
            StatementFile::Empty { format } => {
                compare::load_empty_statement(store, &run, format)
                    .await
                    .map_err(recon_err)?;
                return Ok(Fetched::Loaded {
                    lines: 0,
                    duplicates: 0,
                    empty: true,
                });
            }
            StatementFile::Ready { format, body } => (format, body),
        };
        let read = Arc::new(AtomicU64::new(0));
        let reader = Counting {
            inner: body,
            read: read.clone(),
        };
        let loaded = tokio::select! {
            r = compare::load_statement(store, &run, format, reader) => r,
            stalled = watch_progress(&ctx, &read, self.settings.stall_timeout) => {
                return Err(transient(stalled));
            }
            _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
        };
        match loaded {
            Ok(summary) => {
                tracing::info!(
                    run = %run.run_id,
                    lines = summary.lines_stored,
                    bytes = read.load(Ordering::Relaxed),
                    "statement loaded"
                );
                Ok(Fetched::Loaded {
                    lines: summary.lines_stored,
                    duplicates: summary.duplicates,
                    empty: false,
                })
            }
            Err(ReconError::Statement(e)) if !matches!(e, StatementError::Io { .. }) => {
                Ok(Fetched::Failed {
                    reason: format!("the statement cannot be read: {e}"),
                })
            }
            Err(e) => Err(recon_err(e)),
        }
    }

    /// Compares the stored statement with our records, both ways.
    #[activity]
    pub async fn compare_statement(
        self: Arc<Self>,
        _ctx: ActivityContext,
        day: ReconDay,
    ) -> Result<CompareSummary, ActivityError> {
        let run = self.run(&day).await?;
        compare::compare(&self.services.store, &run, self.fee_rate(&day.channel))
            .await
            .map_err(recon_err)
    }

    /// Asks the channel about one page of differences and records the answers.
    #[activity]
    pub async fn check_page(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CheckPage,
    ) -> Result<PageChecked, ActivityError> {
        let store = &self.services.store;
        let run = self.run(&input.day).await?;
        let limit = input.limit.max(1);
        let page = compare::candidates(store, &run, input.after.as_deref(), limit)
            .await
            .map_err(recon_err)?;
        let Some(last) = page.last() else {
            return Ok(PageChecked {
                checked: 0,
                recorded: 0,
                dismissed: 0,
                next: None,
            });
        };
        let next = (page.len() as u32 == limit).then(|| last.key.clone());
        let ch = channel(&self.services, &input.day.channel)?;
        let size = page.len();
        let mut answers = futures::stream::iter(page.into_iter().map(move |c| {
            let ch = ch.clone();
            async move {
                let now = compare::check(&*ch, &c).await?;
                Ok::<_, ChannelError>(Checked {
                    key: c.key,
                    channel_now: now,
                })
            }
        }))
        .buffered(self.settings.check_concurrency.max(1));
        let mut checked = Vec::with_capacity(size);
        let mut beat = Instant::now();
        while let Some(answer) = answers.next().await {
            checked.push(answer.map_err(channel_err)?);
            if beat.elapsed() >= Duration::from_secs(1) {
                let _ = ctx.record_heartbeat(checked.len() as u64).await;
                beat = Instant::now();
            }
        }
        let recorded = compare::record(store, &run, &checked)
            .await
            .map_err(recon_err)?;
        Ok(PageChecked {
            checked: checked.len() as u32,
            recorded: recorded.recorded,
            dismissed: recorded.dismissed,
            next,
        })
    }

    /// Closes the run; its report summary (the first discrepancies only).
    #[activity]
    pub async fn finish(
        self: Arc<Self>,
        _ctx: ActivityContext,
        day: ReconDay,
    ) -> Result<ReconSummary, ActivityError> {
        let run = self.run(&day).await?;
        let report = compare::finish(&self.services.store, &run, self.fee_rate(&day.channel))
            .await
            .map_err(recon_err)?;
        Ok(summarize(&report, self.settings.result_discrepancies))
    }
}

/// Heartbeats every second with the bytes read so far; returns (ending the download) once no
/// byte has come for `stall`.
async fn watch_progress(ctx: &ActivityContext, read: &AtomicU64, stall: Duration) -> String {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut last, mut since) = (0u64, Instant::now());
    loop {
        tick.tick().await;
        let now = read.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= stall {
            return format!(
                "statement download stalled: no data for {} s after {now} bytes",
                stall.as_secs()
            );
        }
        let _ = ctx.record_heartbeat(now).await;
    }
}

/// A reader that counts the bytes taken from it (the download's progress).
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<R: AsyncBufRead + Unpin> AsyncBufRead for Counting<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.read.fetch_add(amt as u64, Ordering::Relaxed);
        Pin::new(&mut self.inner).consume(amt);
    }
}

// ---------------------------------------------------------------------------------------------
// The report as the client crate carries it
// ---------------------------------------------------------------------------------------------

/// The client's summary of a report, listing at most `cap` discrepancies.
pub fn summarize(report: &ReconReport, cap: usize) -> ReconSummary {
    ReconSummary {
        run_id: report.run_id.clone(),
        channel: report.channel.clone(),
        date: report.date,
        statement_lines: report.statement_lines,
        duplicate_lines: report.duplicate_lines,
        matched_lines: report.matched_lines,
        our_records: report.our_records,
        matched_records: report.matched_records,
        candidates: report.candidates,
        dismissed: report.dismissed,
        totals: report
            .totals
            .iter()
            .map(|t| ReconTotal {
                side: match t.side {
                    Side::Statement => ReconSide::Statement,
                    Side::Ours => ReconSide::Ours,
                },
                subject: subject(t.subject),
                currency: t.currency,
                count: t.count,
                amount: t.amount,
                fee: t.fee,
            })
            .collect(),
        by_kind: report
            .by_kind
            .iter()
            .map(|k| ReconKindCount {
                kind: kind(k.kind),
                open: k.open,
                resolved: k.resolved,
            })
            .collect(),
        resolved_elsewhere: report.resolved_elsewhere,
        discrepancies: report
            .discrepancies
            .iter()
            .take(cap)
            .map(discrepancy)
            .collect(),
        discrepancy_count: report.by_kind.iter().map(|k| k.open + k.resolved).sum(),
    }
}

/// One discrepancy as the client crate carries it.
pub fn discrepancy(d: &Discrepancy) -> ReconDiscrepancy {
    ReconDiscrepancy {
        kind: kind(d.kind),
        subject: subject(d.subject),
        order_id: d.order_no.clone(),
        refund_id: d.refund_no.clone(),
        channel_trade_no: d.channel_trade_no.clone(),
        line_no: d.line_no,
        ours: values(&d.ours),
        channel: values(&d.channel),
        channel_now: d.channel_now.as_ref().map(channel_view),
        resolution: d.resolution.as_ref().map(|r| match r {
            Resolution::FoundInStatement { run_id } => {
                format!("found in the statement of {run_id}")
            }
            Resolution::GoneOnRerun { run_id } => format!("gone when {run_id} was compared again"),
        }),
    }
}

fn kind(k: DiscrepancyKind) -> ReconDiscrepancyKind {
    match k {
        DiscrepancyKind::MissingLocally => ReconDiscrepancyKind::MissingLocally,
        DiscrepancyKind::MissingAtChannel => ReconDiscrepancyKind::MissingAtChannel,
        DiscrepancyKind::AmountMismatch => ReconDiscrepancyKind::AmountMismatch,
        DiscrepancyKind::StatusMismatch => ReconDiscrepancyKind::StatusMismatch,
        DiscrepancyKind::FeeMismatch => ReconDiscrepancyKind::FeeMismatch,
    }
}

fn subject(s: Subject) -> ReconSubject {
    match s {
        Subject::Payment => ReconSubject::Payment,
        Subject::Refund => ReconSubject::Refund,
    }
}

fn values(v: &Values) -> ReconValues {
    ReconValues {
        currency: v.currency,
        amount: v.amount,
        fee: v.fee,
        status: v.status.clone(),
    }
}

/// The channel's answer in a few words: `trade Paid 21.00 CNY`, `refund Succeeded`.
fn channel_view(v: &ChannelView) -> String {
    match v {
        ChannelView::Trade(q) => {
            let state = match q.state {
                TradeState::NotFound => "NotFound",
                TradeState::WaitingForPayment => "WaitingForPayment",
                TradeState::Paid => "Paid",
                TradeState::Closed => "Closed",
            };
            match &q.paid_amount {
                Some(paid) => format!("trade {state} {paid}"),
                None => format!("trade {state}"),
            }
        }
        ChannelView::Refund(r) => match &r.state {
            RefundState::Succeeded => match &r.refunded_amount {
                Some(a) => format!("refund Succeeded {a}"),
                None => "refund Succeeded".to_string(),
            },
            RefundState::Processing => "refund Processing".to_string(),
            RefundState::Failed { code, .. } => format!("refund Failed {code}"),
            RefundState::NotFound => "refund NotFound".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn progress_counts_what_the_parser_takes() {
        let read = Arc::new(AtomicU64::new(0));
        let mut r = Counting {
            inner: &b"line 1\nline 2\n"[..],
            read: read.clone(),
        };
        let mut text = String::new();
        r.read_to_string(&mut text).await.unwrap();
        assert_eq!(read.load(Ordering::Relaxed), 14);
        let read = Arc::new(AtomicU64::new(0));
        let mut r = Counting {
            inner: &b"ab\ncd"[..],
            read: read.clone(),
        };
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut r, &mut line)
            .await
            .unwrap();
        assert_eq!((line.as_str(), read.load(Ordering::Relaxed)), ("ab\n", 3));
    }
}

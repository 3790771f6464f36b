//! Reconciliation (对账) as services and operators see it: the request that reconciles one
//! channel's statement of one business day (`recon/{channel}/{yyyy-mm-dd}`), the run's state,
//! and its report summary; plus the `Payflow` calls that start, follow and nudge a run.
//!
//! The business day is a calendar day in Beijing time (UTC+8), the time zone of Alipay's and
//! WeChat Pay's statements. The summary a run returns carries the first
//! [`ReconSummary::discrepancies`] only; every discrepancy is kept in payflow's database
//! (`payflow recon report`).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use temporalio_client::WorkflowQueryOptions;

use crate::definitions::{
    ReconStatusQuery, ReconciliationWorkflow, RetryReconciliation, task_queues,
};
use crate::facade::{Payflow, PayflowError, query_error};
use crate::money::Currency;

/// `recon/{channel}/{yyyy-mm-dd}`: the reconciliation of `channel`'s statement of `date`.
pub fn recon_workflow_id(channel: &str, date: NaiveDate) -> String {
    format!("recon/{channel}/{}", date.format("%Y-%m-%d"))
}

/// `recon-daily/{channel}`: the Temporal Schedule that reconciles `channel` every day.
pub fn recon_schedule_id(channel: &str) -> String {
    format!("recon-daily/{channel}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconRequestError {
    #[error("channel {0:?}: 1 to 64 of a-z, A-Z, 0-9, '-' and '_'")]
    Channel(String),
    #[error("statement_retry_ms: every wait must be above 0")]
    RetrySchedule,
}

/// Reconciles one channel's statement of one business day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconRequest {
    /// The configured channel name (e.g. `alipay`).
    pub channel: String,
    /// The business day, Beijing time.
    pub date: NaiveDate,
    /// Waits between attempts to get a statement the channel has not generated yet (ms); the
    /// last repeats. `None`: the worker's `[recon] statement_retry_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_retry_ms: Option<Vec<u64>>,
    /// How long to keep trying before the run is parked for an operator (`Manual`). `None`:
    /// the worker's `[recon] statement_deadline_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_deadline_ms: Option<u64>,
}

impl ReconRequest {
    /// The run of `channel` for `date` with the worker's retry schedule and deadline.
    pub fn new(channel: impl Into<String>, date: NaiveDate) -> ReconRequest {
        ReconRequest {
            channel: channel.into(),
            date,
            statement_retry_ms: None,
            statement_deadline_ms: None,
        }
    }

    pub fn validate(&self) -> Result<(), ReconRequestError> {
        let c = &self.channel;
        let ok = !c.is_empty()
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !ok {
            return Err(ReconRequestError::Channel(c.clone()));
        }
        if self
            .statement_retry_ms
            .as_ref()
            .is_some_and(|s| s.contains(&0))
        {
            return Err(ReconRequestError::RetrySchedule);
        }
        Ok(())
    }

    pub fn workflow_id(&self) -> String {
        recon_workflow_id(&self.channel, self.date)
    }
}

/// What the daily schedule starts: yesterday's run (Beijing time) of `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconDailyRequest {
    pub channel: String,
}

/// Where a run is; also the `ReconState` search attribute (find runs needing attention with
/// `ReconState = "Discrepancies"` or `ReconState = "Manual"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReconState {
    /// Getting the statement (it may not be generated yet: retried on a schedule).
    Waiting,
    /// Statement loaded; comparing and asking the channel about each difference.
    Comparing,
    /// Done: nothing open.
    Balanced,
    /// Done: open discrepancies (in the report).
    Discrepancies,
    /// No statement by the deadline, or one that cannot be read: waiting for an operator's
    /// `retry` signal.
    Manual,
}

impl ReconState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconState::Waiting => "Waiting",
            ReconState::Comparing => "Comparing",
            ReconState::Balanced => "Balanced",
            ReconState::Discrepancies => "Discrepancies",
            ReconState::Manual => "Manual",
        }
    }
}

impl std::fmt::Display for ReconState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReconDiscrepancyKind {
    /// The channel has it, we do not.
    MissingLocally,
    /// We have it (paid, or refunded, that day), no statement of the channel does.
    MissingAtChannel,
    AmountMismatch,
    StatusMismatch,
    /// The channel charged another fee than its configured rate gives.
    FeeMismatch,
}

impl ReconDiscrepancyKind {
    pub const ALL: [ReconDiscrepancyKind; 5] = [
        ReconDiscrepancyKind::MissingLocally,
        ReconDiscrepancyKind::MissingAtChannel,
        ReconDiscrepancyKind::AmountMismatch,
        ReconDiscrepancyKind::StatusMismatch,
        ReconDiscrepancyKind::FeeMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconDiscrepancyKind::MissingLocally => "MissingLocally",
            ReconDiscrepancyKind::MissingAtChannel => "MissingAtChannel",
            ReconDiscrepancyKind::AmountMismatch => "AmountMismatch",
            ReconDiscrepancyKind::StatusMismatch => "StatusMismatch",
            ReconDiscrepancyKind::FeeMismatch => "FeeMismatch",
        }
    }
}

impl std::fmt::Display for ReconDiscrepancyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a record is a payment or a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReconSubject {
    Payment,
    Refund,
}

/// Whose records a total adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReconSide {
    /// The channel's statement.
    Statement,
    /// payflow's payments first paid that day and refunds that succeeded, created that day.
    Ours,
}

/// One side's values of a compared record (amounts and fees as decimal strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconValues {
    pub currency: Option<Currency>,
    pub amount: Option<Decimal>,
    pub fee: Option<Decimal>,
    pub status: Option<String>,
}

/// One recorded difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconDiscrepancy {
    pub kind: ReconDiscrepancyKind,
    pub subject: ReconSubject,
    /// payflow's order id (the channel's `out_trade_no`).
    pub order_id: String,
    /// payflow's refund id, for a refund listed on its own.
    pub refund_id: Option<String>,
    pub channel_trade_no: Option<String>,
    /// The statement line, when found from the statement's side.
    pub line_no: Option<u64>,
    pub ours: ReconValues,
    /// As the statement has it.
    pub channel: ReconValues,
    /// What the channel answered when asked about it before it was recorded.
    pub channel_now: Option<String>,
    /// `None` while open; else how it was resolved (e.g. found in the next day's statement).
    pub resolution: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconKindCount {
    pub kind: ReconDiscrepancyKind,
    pub open: u64,
    pub resolved: u64,
}

/// Count and sums of one side's records of one subject and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconTotal {
    pub side: ReconSide,
    pub subject: ReconSubject,
    pub currency: Currency,
    pub count: u64,
    pub amount: Decimal,
    /// The channel's fees: as the statement has them, or as the channel's rate gives them.
    pub fee: Decimal,
}

/// The report of a run: counts, totals, discrepancies by kind, and the first discrepancies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconSummary {
    /// `{channel}/{yyyy-mm-dd}`.
    pub run_id: String,
    pub channel: String,
    pub date: NaiveDate,
    /// Statement lines stored (a line repeated in the file counts once).
    pub statement_lines: u64,
    pub duplicate_lines: u64,
    /// Statement lines with no open discrepancy.
    pub matched_lines: u64,
    /// Our payments and refunds of the day, and those with no open discrepancy.
    pub our_records: u64,
    pub matched_records: u64,
    /// Differences found by the comparison, and those the channel's answer dismissed.
    pub candidates: u64,
    pub dismissed: u64,
    pub totals: Vec<ReconTotal>,
    pub by_kind: Vec<ReconKindCount>,
    /// Discrepancies of other days this statement resolved (cross-day transactions).
    pub resolved_elsewhere: u64,
    /// The first discrepancies of the run, by key (open and resolved).
    pub discrepancies: Vec<ReconDiscrepancy>,
    /// How many the run recorded in all (more than listed when the list was cut).
    pub discrepancy_count: u64,
}

impl ReconSummary {
    /// Open discrepancies of one kind.
    pub fn open(&self, kind: ReconDiscrepancyKind) -> u64 {
        self.by_kind
            .iter()
            .find(|k| k.kind == kind)
            .map_or(0, |k| k.open)
    }

    /// Open discrepancies of every kind.
    pub fn open_total(&self) -> u64 {
        self.by_kind.iter().map(|k| k.open).sum()
    }

    /// Whether the list of discrepancies is cut short.
    pub fn truncated(&self) -> bool {
        (self.discrepancies.len() as u64) < self.discrepancy_count
    }
}

/// A run as its `status` query answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconStatus {
    pub workflow_id: String,
    pub channel: String,
    pub date: NaiveDate,
    pub state: ReconState,
    /// Attempts to get the statement in this run (the first included).
    pub statement_attempts: u32,
    /// Why the run waits for an operator, in `Manual`.
    pub manual_reason: Option<String>,
    /// Operator `retry` signals received.
    pub retries: u32,
    /// The report, once done.
    pub summary: Option<ReconSummary>,
}

impl Payflow {
    /// Starts (or joins) the reconciliation of `channel`'s statement of `date` (Beijing time)
    /// with the worker's retry schedule; returns its workflow id (`recon/{channel}/{date}`).
    /// Idempotent: a day already reconciled is not started again.
    pub async fn reconcile(&self, channel: &str, date: NaiveDate) -> Result<String, PayflowError> {
        self.reconcile_with(ReconRequest::new(channel, date)).await
    }

    /// [`Payflow::reconcile`] with the request's own statement retry schedule and deadline.
    pub async fn reconcile_with(&self, req: ReconRequest) -> Result<String, PayflowError> {
        req.validate()?;
        let id = req.workflow_id();
        let summary = self.summary(|| format!("recon {} {}", req.channel, req.date));
        self.start_once(
            ReconciliationWorkflow,
            req,
            task_queues::RECON,
            id.clone(),
            summary,
        )
        .await?;
        Ok(id)
    }

    /// Waits until the run is done and returns its report summary.
    pub async fn recon_result(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> Result<ReconSummary, PayflowError> {
        self.result::<ReconciliationWorkflow>(recon_workflow_id(channel, date))
            .await
    }

    /// The run's current state (also after it finished).
    pub async fn recon_status(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> Result<ReconStatus, PayflowError> {
        let id = recon_workflow_id(channel, date);
        self.temporal()
            .get_workflow_handle::<ReconciliationWorkflow>(id.clone())
            .query(ReconStatusQuery, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| query_error(&id, e))
    }

    /// The run's report summary, `None` while it is not done.
    pub async fn recon_report(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> Result<Option<ReconSummary>, PayflowError> {
        Ok(self.recon_status(channel, date).await?.summary)
    }

    /// An operator's `retry` of a run parked in `Manual` (e.g. once the statement is there).
    pub async fn retry_reconciliation(
        &self,
        channel: &str,
        date: NaiveDate,
    ) -> Result<(), PayflowError> {
        self.temporal()
            .get_workflow_handle::<ReconciliationWorkflow>(recon_workflow_id(channel, date))
            .signal(RetryReconciliation, (), Default::default())
            .await
            .map_err(|e| PayflowError::Temporal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_validation() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let req = ReconRequest::new("alipay", date);
        assert_eq!(req.workflow_id(), "recon/alipay/2026-11-22");
        assert_eq!(recon_schedule_id("wechat"), "recon-daily/wechat");
        assert!(req.validate().is_ok());
        for bad in ["", "a/b", "al ipay"] {
            assert!(ReconRequest::new(bad, date).validate().is_err(), "{bad}");
        }
        let zero = ReconRequest {
            statement_retry_ms: Some(vec![10, 0]),
            ..req.clone()
        };
        assert_eq!(zero.validate(), Err(ReconRequestError::RetrySchedule));
        // The optional overrides stay out of the wire form when unset.
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"channel": "alipay", "date": "2026-11-22"})
        );
    }
}

//! Reconciliation (对账).
//!
//! `Reconciliation`, `recon/{channel}/{yyyy-mm-dd}`: one channel's statement of one business
//! day (Beijing time) against our records.
//!
//! 1. open the run (the store's `recon_runs` row) and learn the statement retry schedule;
//! 2. get the statement: a channel that has not generated it yet is asked again after durable
//!    timers of increasing length (`[recon] statement_retry_ms`, the last repeating) until the
//!    deadline (`statement_deadline_ms`, from the first attempt); then, or when the channel
//!    refuses it or it cannot be read, the run is `Manual`: parked until an operator's `retry`
//!    signal starts a fresh cycle. A quick give-up would turn a late statement into a day of
//!    false discrepancies;
//! 3. compare both ways, then check the differences with the channel one page per activity
//!    (history stays small however many there are), and finish: the result is the report
//!    summary; every discrepancy is in the store (`payflow recon report`).
//!
//! Operators: `ReconState` (`Waiting`, `Comparing`, `Balanced`, `Discrepancies`, `Manual`) and
//! `Channel` search attributes, a one-line current details ("recon alipay 2026-11-22: 3
//! discrepancies"), the `status` query and the `retry` signal.
//!
//! `ReconDaily`, started by the Temporal Schedule `recon-daily/{channel}` once a day: starts
//! yesterday's (Beijing time, from the workflow's clock) `recon/{channel}/{date}` as an
//! abandoned child, once (a day already started is left alone).

use std::time::Duration;

use chrono::{DateTime, Days, FixedOffset, NaiveDate};
use payflow_activities::reconciliation::{CheckPage, Fetched, ReconActivities, ReconDay};
use payflow_client::definitions::{names, search_attributes as sa, task_queues};
use payflow_client::{ReconDailyRequest, ReconRequest, ReconState, ReconStatus, ReconSummary};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, ChildWorkflowOptions, ChildWorkflowStartError,
    ParentClosePolicy, StartChildWorkflowExecutionFailedCause, SyncWorkflowContext, TimerOptions,
    WorkflowContext, WorkflowContextView, WorkflowIdReusePolicy, WorkflowResult,
};

use crate::options::{now_ms, side_effect};

/// Beijing time, the statements' time zone.
const BEIJING_SECS: i32 = 8 * 3600;

#[workflow]
pub struct Reconciliation {
    request: ReconRequest,
    status: ReconStatus,
}

#[workflow_methods]
impl Reconciliation {
    #[init]
    pub fn new(ctx: &WorkflowContextView, request: ReconRequest) -> Self {
        let status = ReconStatus {
            workflow_id: ctx.workflow_id().to_string(),
            channel: request.channel.clone(),
            date: request.date,
            state: ReconState::Waiting,
            statement_attempts: 0,
            manual_reason: None,
            retries: 0,
            summary: None,
        };
        Reconciliation { request, status }
    }

    #[run(name = names::RECONCILIATION)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ReconSummary> {
        let request = ctx.state(|s| s.request.clone());
        request
            .validate()
            .map_err(|e| ApplicationFailure::non_retryable(e.to_string()))?;
        ctx.upsert_search_attributes([sa::CHANNEL.value_set(request.channel.clone())]);
        Self::set_state(ctx, ReconState::Waiting, "getting the statement");
        let day = ReconDay {
            channel: request.channel.clone(),
            date: request.date,
        };
        let plan = ctx
            .execute_activity(
                ReconActivities::open_run,
                day.clone(),
                side_effect(format!("open the run {}", request.workflow_id())),
            )
            .await?;
        let retry = request
            .statement_retry_ms
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or(plan.statement_retry_ms);
        let deadline = request
            .statement_deadline_ms
            .unwrap_or(plan.statement_deadline_ms);
        Self::get_statement(ctx, &day, &retry, deadline).await?;

        Self::set_state(ctx, ReconState::Comparing, "comparing");
        let compared = ctx
            .execute_activity(
                ReconActivities::compare_statement,
                day.clone(),
                long("compare the statement with our records"),
            )
            .await?;
        Self::set_state(
            ctx,
            ReconState::Comparing,
            &format!(
                "checking {} differences with the channel",
                compared.candidates
            ),
        );
        let mut after = None;
        let mut page_no = 0u32;
        loop {
            page_no += 1;
            let page = ctx
                .execute_activity(
                    ReconActivities::check_page,
                    CheckPage {
                        day: day.clone(),
                        after: after.clone(),
                        limit: plan.page_size,
                    },
                    long(format!(
                        "check differences with the channel (page {page_no})"
                    )),
                )
                .await?;
            match page.next {
                Some(key) => after = Some(key),
                None => break,
            }
        }
        let summary = ctx
            .execute_activity(ReconActivities::finish, day, long("finish the run"))
            .await?;
        let open = summary.open_total();
        let (state, what) = match open {
            0 => (ReconState::Balanced, "balanced".to_string()),
            1 => (ReconState::Discrepancies, "1 discrepancy".to_string()),
            n => (ReconState::Discrepancies, format!("{n} discrepancies")),
        };
        ctx.state_mut(|s| s.status.summary = Some(summary.clone()));
        Self::set_state(ctx, state, &what);
        Ok(summary)
    }

    /// Operator: a run parked in `Manual` tries again (ignored otherwise).
    #[signal(name = names::RETRY)]
    pub fn retry(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        if self.status.state == ReconState::Manual {
            self.status.retries += 1;
        }
    }

    #[query(name = names::STATUS)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> ReconStatus {
        self.status.clone()
    }
}

impl Reconciliation {
    /// Sets the state (and its search attribute when it changes) and the current details.
    fn set_state(ctx: &mut WorkflowContext<Self>, state: ReconState, what: &str) {
        let (changed, request) = ctx.state_mut(|s| {
            let changed = s.status.state != state || s.status.statement_attempts == 0;
            s.status.state = state;
            (changed, s.request.clone())
        });
        if changed {
            ctx.upsert_search_attributes([sa::RECON_STATE.value_set(state.as_str().to_string())]);
        }
        ctx.set_current_details(format!(
            "recon {} {}: {what}",
            request.channel, request.date
        ));
    }

    /// Gets the statement stored: retried on `retry` while the channel has not generated it,
    /// up to `deadline_ms` from the start of each cycle, then parked for an operator.
    async fn get_statement(
        ctx: &mut WorkflowContext<Self>,
        day: &ReconDay,
        retry: &[u64],
        deadline_ms: u64,
    ) -> WorkflowResult<()> {
        let mut cycle_start = now_ms(ctx.workflow_time());
        let mut step = 0usize;
        loop {
            let attempt = ctx.state_mut(|s| {
                s.status.statement_attempts += 1;
                s.status.statement_attempts
            });
            let fetched = ctx
                .execute_activity(
                    ReconActivities::fetch_statement,
                    day.clone(),
                    fetch(format!(
                        "get the statement of {} (attempt {attempt})",
                        day.date
                    )),
                )
                .await;
            let reason = match fetched {
                Ok(Fetched::Loaded { .. }) => return Ok(()),
                Ok(Fetched::Failed { reason }) => reason,
                Err(e) => {
                    let cause = e
                        .failure()
                        .and_then(|f| f.cause.as_ref())
                        .map(|c| format!(": {}", c.message))
                        .unwrap_or_default();
                    format!("the statement could not be downloaded: {e}{cause}")
                }
                Ok(Fetched::NotReady) => {
                    let elapsed =
                        u64::try_from(now_ms(ctx.workflow_time()) - cycle_start).unwrap_or(0);
                    if elapsed < deadline_ms {
                        let wait = retry
                            .get(step)
                            .or(retry.last())
                            .copied()
                            .unwrap_or(60_000)
                            .min(deadline_ms - elapsed)
                            .max(1);
                        step += 1;
                        Self::set_state(
                            ctx,
                            ReconState::Waiting,
                            &format!(
                                "statement not ready after {attempt} attempts; next in {} s",
                                wait.div_ceil(1000)
                            ),
                        );
                        ctx.timer(
                            TimerOptions::builder(Duration::from_millis(wait))
                                .summary(
                                    "statement not ready: wait before asking again".to_string(),
                                )
                                .build(),
                        )
                        .await;
                        continue;
                    }
                    format!(
                        "no statement by the deadline ({} s, {attempt} attempts)",
                        deadline_ms / 1000
                    )
                }
            };
            ctx.state_mut(|s| s.status.manual_reason = Some(reason.clone()));
            Self::set_state(
                ctx,
                ReconState::Manual,
                &format!("needs an operator ({reason}); signal `retry` to try again"),
            );
            let seen = ctx.state(|s| s.status.retries);
            ctx.wait_condition(move |s: &Self| s.status.retries > seen)
                .await?;
            ctx.state_mut(|s| s.status.manual_reason = None);
            Self::set_state(ctx, ReconState::Waiting, "retried by an operator");
            cycle_start = now_ms(ctx.workflow_time());
            step = 0;
        }
    }
}

/// A download streams a statement of any size: bounded by its own heartbeat (the activity
/// beats while bytes flow and gives up on a stalled download), retried a few times with
/// backoff; still failing, the run goes to `Manual`.
fn fetch(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
        .heartbeat_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(120))
                .maximum_attempts(8)
                .build(),
        )
        .summary(summary.into())
        .build()
}

/// Comparing, checking a page and finishing touch many rows: more time than a single call.
fn long(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(600))
        .heartbeat_timeout(Duration::from_secs(60))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .summary(summary.into())
        .build()
}

/// The business day before the one `now_ms` falls on, in Beijing time.
pub fn previous_business_day(now_ms: i64) -> NaiveDate {
    let beijing = FixedOffset::east_opt(BEIJING_SECS).expect("UTC+8 is a valid offset");
    let today = DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .with_timezone(&beijing)
        .date_naive();
    today.checked_sub_days(Days::new(1)).unwrap_or(today)
}

#[workflow]
pub struct ReconDaily {
    request: ReconDailyRequest,
}

#[workflow_methods]
impl ReconDaily {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: ReconDailyRequest) -> Self {
        ReconDaily { request }
    }

    #[run(name = names::RECON_DAILY)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        let channel = ctx.state(|s| s.request.channel.clone());
        let date = previous_business_day(now_ms(ctx.workflow_time()));
        let request = ReconRequest::new(channel.clone(), date);
        let id = request.workflow_id();
        ctx.set_current_details(format!("starts {id}"));
        let started = ctx
            .start_child_workflow(
                Reconciliation::run,
                request,
                ChildWorkflowOptions::builder()
                    .workflow_id(id.clone())
                    .task_queue(task_queues::RECON.to_string())
                    .parent_close_policy(ParentClosePolicy::Abandon)
                    .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                    .static_summary(format!("recon {channel} {date}"))
                    .build(),
            )
            .await;
        match started {
            Ok(_) => {}
            // Started already (by an earlier trigger, or by hand): once per day.
            Err(ChildWorkflowStartError::StartFailed {
                cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                ..
            }) => {}
            Err(e) => return Err(ApplicationFailure::non_retryable(e.to_string()).into()),
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yesterday_is_counted_in_beijing_time() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // 2026-11-23 00:30 Beijing = 2026-11-22 16:30 UTC.
        let just_after_midnight = 1_795_365_000_000;
        assert_eq!(previous_business_day(just_after_midnight), d("2026-11-22"));
        // 2026-11-22 23:30 Beijing = 15:30 UTC.
        assert_eq!(
            previous_business_day(just_after_midnight - 3_600_000),
            d("2026-11-21")
        );
    }
}

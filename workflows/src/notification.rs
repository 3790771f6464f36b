//! The Notification workflow, `notify/{merchant}/{event_id}`: deliver a signed callback, retry
//! on the configured schedule with durable timers, and park as `Exhausted` after the last
//! attempt until an operator sends `resend`. `retry_now` skips the current wait.

use std::time::Duration;

use payflow_activities::notification::{Deliver, DeliverOutcome, NotifyActivities};
use payflow_client::definitions::{names, search_attributes as sa};
use payflow_client::{NotificationRequest, NotificationResume, NotificationStatus, NotifyState};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::options::{now_ms, side_effect};
use crate::schedule::next_delay;

#[workflow]
pub struct Notification {
    request: NotificationRequest,
    status: NotificationStatus,
    resends: u32,
    retry_nows: u32,
}

#[workflow_methods]
impl Notification {
    #[init]
    pub fn new(ctx: &WorkflowContextView, request: NotificationRequest) -> Self {
        let status = NotificationStatus {
            workflow_id: ctx.workflow_id().to_string(),
            merchant_id: request.merchant_id.clone(),
            event_id: request.event_id.clone(),
            event_type: request.event_type.clone(),
            state: NotifyState::Pending,
            attempts: request
                .resume
                .as_ref()
                .map(|r| r.attempts.clone())
                .unwrap_or_default(),
            runs: request.resume.as_ref().map_or(0, |r| r.runs),
        };
        Notification {
            request,
            status,
            resends: 0,
            retry_nows: 0,
        }
    }

    #[run(name = names::NOTIFICATION)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<NotificationStatus> {
        let request = ctx.state(|s| s.request.clone());
        ctx.upsert_search_attributes([
            sa::MERCHANT_ID.value_set(request.merchant_id.to_string()),
            sa::NOTIFY_STATE.value_set(NotifyState::Pending.as_str().to_string()),
        ]);
        ctx.set_current_details(format!(
            "{} to merchant {}",
            request.event_type, request.merchant_id
        ));
        let resume = request.resume.clone();
        let event_time_ms = resume
            .as_ref()
            .map_or_else(|| now_ms(ctx.workflow_time()), |r| r.event_time_ms);
        // Attempts within the current cycle (a resend starts a new cycle).
        let mut in_cycle = resume.as_ref().map_or(0, |r| r.in_cycle as usize);
        // Known after the first attempt (the activity reports the configured limit).
        let mut continue_after: Option<u32> = None;
        // Consecutive deferrals (the merchant busy or its breaker open), for the backoff.
        let mut deferrals = 0u32;
        loop {
            // Between attempts nothing is in flight: the one safe point to start a new run
            // with a short history, carrying what this run did.
            let long = continue_after.is_some_and(|limit| ctx.history_length() >= limit);
            if long || ctx.continue_as_new_suggested() {
                let (attempts, runs) = ctx.state(|s| (s.status.attempts.clone(), s.status.runs));
                let next = NotificationRequest {
                    resume: Some(NotificationResume {
                        attempts,
                        in_cycle: in_cycle as u32,
                        event_time_ms,
                        runs: runs + 1,
                    }),
                    ..request.clone()
                };
                ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
            }
            Self::set_state(ctx, NotifyState::Delivering);
            let number = ctx.state(|s| s.status.attempts.len() as u32) + 1;
            let outcome = ctx
                .execute_activity(
                    NotifyActivities::deliver,
                    Deliver {
                        request: request.clone(),
                        attempt: number,
                        event_time_ms,
                    },
                    side_effect(format!("deliver {} attempt {number}", request.event_type)),
                )
                .await?;
            let schedule = match outcome {
                DeliverOutcome::Attempted {
                    attempt,
                    retry_schedule_ms,
                    continue_after_events,
                } => {
                    continue_after = Some(continue_after_events);
                    deferrals = 0;
                    let delivered = attempt.delivered;
                    ctx.state_mut(|s| s.status.attempts.push(attempt));
                    if delivered {
                        Self::set_state(ctx, NotifyState::Delivered);
                        return Ok(ctx.state(|s| s.status.clone()));
                    }
                    retry_schedule_ms
                }
                // The merchant is saturated or its breaker is open: wait for it (others are
                // not held up), then try again; no attempt was made, none is counted.
                DeliverOutcome::Deferred {
                    retry_after_ms,
                    continue_after_events,
                } => {
                    continue_after = Some(continue_after_events);
                    Self::set_state(ctx, NotifyState::Retrying);
                    // Waiting for a merchant must not cost workflow tasks at a fixed rate: back
                    // off per consecutive deferral (x2, at most 30 s) with jitter drawn through
                    // the workflow context, so a crowd of waiting events spreads out.
                    let backoff = retry_after_ms
                        .max(1)
                        .saturating_mul(1 << deferrals.min(5))
                        .min(MAX_DEFERRAL_MS);
                    deferrals += 1;
                    // 0..=255 from the uuid's first byte: up to half the backoff again.
                    let byte = u64::from_str_radix(&ctx.uuid4()[..2], 16).unwrap_or(0);
                    let jitter = byte * backoff / 512;
                    let wait = Duration::from_millis(backoff + jitter).min(MAX_DELAY);
                    ctx.timer(wait).await;
                    continue;
                }
                DeliverOutcome::Held | DeliverOutcome::Undeliverable(_) => {
                    // Nothing can be sent now: park until an operator resends.
                    Self::set_state(ctx, NotifyState::Held);
                    Self::wait_for_resend(ctx).await?;
                    in_cycle = 0;
                    continue;
                }
            };
            match next_delay(&schedule, in_cycle) {
                Some(delay) => {
                    in_cycle += 1;
                    Self::set_state(ctx, NotifyState::Retrying);
                    let seen = ctx.state(|s| s.retry_nows);
                    temporalio_sdk::workflows::select! {
                        _ = ctx.timer(delay) => {}
                        _ = ctx.wait_condition(move |s: &Self| s.retry_nows > seen) => {}
                    };
                }
                None => {
                    Self::set_state(ctx, NotifyState::Exhausted);
                    Self::wait_for_resend(ctx).await?;
                    in_cycle = 0;
                }
            }
        }
    }

    #[query(name = names::STATUS)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> NotificationStatus {
        self.status.clone()
    }

    /// Operator: start a fresh attempt cycle (after exhaustion or while held).
    #[signal(name = names::RESEND)]
    pub fn resend(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.resends += 1;
    }

    /// Operator: skip the current wait before the next attempt.
    #[signal(name = names::RETRY_NOW)]
    pub fn retry_now(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.retry_nows += 1;
    }
}

impl Notification {
    fn set_state(ctx: &mut WorkflowContext<Self>, state: NotifyState) {
        let changed = ctx.state_mut(|s| {
            let changed = s.status.state != state;
            s.status.state = state;
            changed
        });
        if changed {
            ctx.upsert_search_attributes([sa::NOTIFY_STATE.value_set(state.as_str().to_string())]);
        }
    }

    async fn wait_for_resend(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        let seen = ctx.state(|s| s.resends);
        ctx.wait_condition(move |s: &Self| s.resends > seen).await?;
        Ok(())
    }
}

/// Longest wait between two tries of a deferred delivery.
const MAX_DEFERRAL_MS: u64 = 30_000;

/// Upper bound on one timer, so a misconfigured schedule cannot park a delivery for years.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

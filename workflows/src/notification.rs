//! The Notification workflow, `notify/{merchant}/{event_id}`: deliver a signed callback, retry
//! on the configured schedule with durable timers, and park as `Exhausted` after the last
//! attempt until an operator sends `resend`. `retry_now` skips the current wait.

use std::time::Duration;

use payflow_activities::notification::{Deliver, DeliverOutcome, NotifyActivities};
use payflow_client::definitions::{names, search_attributes as sa, task_queues};
use payflow_client::{
    NotificationRequest, NotificationResume, NotificationStatus, NotifyState, Versioned,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::options::{local_step, now_ms, side_effect};
use crate::schedule::next_delay;
use crate::versioning::patched_since;

#[workflow]
pub struct Notification {
    request: NotificationRequest,
    status: NotificationStatus,
    resends: u32,
    retry_nows: u32,
    /// Wakes from the worker's merchant gate (the merchant has room for this delivery).
    wakes: u32,
    /// `MerchantId` is in the search attributes.
    merchant_upserted: bool,
    /// This run was started under [`V2_PATCH`]: the three features patched one by one before
    /// it are all on, and no more patch is asked for.
    v2: bool,
    /// The version its starter chose (`payflow_client::Versioned`); from 1 on a new event is
    /// V2 without asking the patch.
    started_at: u32,
}

#[workflow_methods]
impl Notification {
    #[init]
    pub fn new(ctx: &WorkflowContextView, start: Versioned<NotificationRequest>) -> Self {
        let Versioned {
            request,
            version: started_at,
        } = start;
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
            wakes: 0,
            merchant_upserted: false,
            v2: false,
            started_at,
        }
    }

    #[run(name = names::NOTIFICATION)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<NotificationStatus> {
        let request = ctx.state(|s| s.request.clone());
        // A new event's first try runs as a local activity in the workflow's first task: a
        // callback delivered at once then costs the server one workflow task and no activity
        // task (`payflow bench e2e`). Tries after a failure or a wait stay regular activities,
        // each one visible in the history with its own retry state. Nothing that task upserts
        // shows before it ends, so it upserts once, after the try, with the state it reached.
        // A continued run inherits the version its chain began with.
        let v2 = match &request.resume {
            Some(resume) => resume.v2,
            None => patched_since(ctx, ctx.state(|s| s.started_at), 1, V2_PATCH),
        };
        ctx.state_mut(|s| s.v2 = v2);
        let mut try_locally =
            request.resume.is_none() && (v2 || ctx.patched(FIRST_TRY_LOCAL_PATCH));
        if !try_locally {
            ctx.state_mut(|s| s.merchant_upserted = true);
            ctx.upsert_search_attributes([
                sa::MERCHANT_ID.value_set(request.merchant_id.to_string()),
                sa::NOTIFY_STATE.value_set(NotifyState::Pending.as_str().to_string()),
            ]);
        }
        ctx.set_current_details(format!(
            "{} to merchant {}",
            request.event_type, request.merchant_id
        ));
        let resume = request.resume.clone();
        let mut run = Carry {
            event_time_ms: resume
                .as_ref()
                .map_or_else(|| now_ms(ctx.workflow_time()), |r| r.event_time_ms),
            in_cycle: resume.as_ref().map_or(0, |r| r.in_cycle),
            deferrals: resume.as_ref().map_or(0, |r| r.deferrals),
        };
        // A run moved to the retry queue begins with the wait its predecessor was about to start.
        if let Some(wait) = resume.as_ref().map(|r| r.wait_ms).filter(|ms| *ms > 0) {
            Self::set_state(ctx, NotifyState::Retrying);
            Self::wait_or_retry_now(ctx, Duration::from_millis(wait)).await;
        }
        // Known after the first attempt (the activity reports the configured limit).
        let mut continue_after: Option<u32> = None;
        loop {
            // Between attempts nothing is in flight: the one safe point to start a new run
            // with a short history, carrying what this run did.
            let long = continue_after.is_some_and(|limit| ctx.history_length() >= limit);
            if long || ctx.continue_as_new_suggested() {
                Self::continue_as_new(ctx, &request, run, 0, None)?;
            }
            // The local first try is not marked Delivering: nothing shows before its task
            // ends, and the state it ends in is upserted with the merchant.
            if !try_locally {
                Self::set_state(ctx, NotifyState::Delivering);
            }
            // A wake sent while the attempt below is deferred must end the wait that follows.
            let wakes_seen = ctx.state(|s| s.wakes);
            let number = ctx.state(|s| s.status.attempts.len() as u32) + 1;
            let deliver = Deliver {
                request: request.clone(),
                attempt: number,
                event_time_ms: run.event_time_ms,
            };
            let summary = format!("deliver {} attempt {number}", request.event_type);
            let outcome = if std::mem::take(&mut try_locally) {
                local_step(ctx, true, NotifyActivities::deliver, deliver, summary).await?
            } else {
                ctx.execute_activity(NotifyActivities::deliver, deliver, side_effect(summary))
                    .await?
            };
            let schedule = match outcome {
                DeliverOutcome::Attempted {
                    attempt,
                    retry_schedule_ms,
                    continue_after_events,
                } => {
                    continue_after = Some(continue_after_events);
                    run.deferrals = 0;
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
                    breaker_open,
                } => {
                    continue_after = Some(continue_after_events);
                    Self::set_state(ctx, NotifyState::Retrying);
                    let wait =
                        Self::deferral_wait(ctx, retry_after_ms, breaker_open, run.deferrals);
                    run.deferrals += 1;
                    if v2 || ctx.patched(WAIT_IN_LINE_PATCH) {
                        // Wait in the merchant's line, right here: moving the run elsewhere
                        // or polling costs the server work for every waiting event.
                        Self::wait_for_wake(ctx, wait, wakes_seen).await;
                        continue;
                    }
                    if Self::moves_to_retry_queue(ctx) {
                        Self::continue_as_new(ctx, &request, run, wait.as_millis() as u64, RETRY)?;
                    }
                    ctx.timer(wait).await;
                    continue;
                }
                DeliverOutcome::Held | DeliverOutcome::Undeliverable(_) => {
                    // Nothing can be sent now: park until an operator resends.
                    Self::set_state(ctx, NotifyState::Held);
                    Self::wait_for_resend(ctx).await?;
                    run.in_cycle = 0;
                    continue;
                }
            };
            match next_delay(&schedule, run.in_cycle as usize) {
                Some(delay) => {
                    run.in_cycle += 1;
                    Self::set_state(ctx, NotifyState::Retrying);
                    if Self::moves_to_retry_queue(ctx) {
                        Self::continue_as_new(ctx, &request, run, delay.as_millis() as u64, RETRY)?;
                    }
                    Self::wait_or_retry_now(ctx, delay).await;
                }
                None => {
                    Self::set_state(ctx, NotifyState::Exhausted);
                    Self::wait_for_resend(ctx).await?;
                    run.in_cycle = 0;
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

    /// Worker: the merchant this delivery waits for has room now.
    #[signal(name = names::WAKE)]
    pub fn wake(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.wakes += 1;
    }
}

impl Notification {
    fn set_state(ctx: &mut WorkflowContext<Self>, state: NotifyState) {
        let (changed, first) = ctx.state_mut(|s| {
            let changed = s.status.state != state;
            s.status.state = state;
            (changed, !std::mem::replace(&mut s.merchant_upserted, true))
        });
        if !(changed || first) {
            return;
        }
        let state = sa::NOTIFY_STATE.value_set(state.as_str().to_string());
        if first {
            let merchant = ctx.state(|s| s.request.merchant_id.to_string());
            ctx.upsert_search_attributes([sa::MERCHANT_ID.value_set(merchant), state]);
        } else {
            ctx.upsert_search_attributes([state]);
        }
    }

    /// How long a deferred delivery waits. Waiting for a merchant must not cost workflow tasks
    /// at a fixed rate, and a crowd of waiting events must not wake together: the jitter is
    /// drawn through the workflow context (deterministic on replay).
    /// - breaker open: never before it half-opens, then spread over as long again (only one
    ///   probe goes through anyway; the others would be deferred again);
    /// - merchant busy: back off x2 per consecutive deferral, at most 30 s, plus up to half.
    fn deferral_wait(
        ctx: &WorkflowContext<Self>,
        retry_after_ms: u64,
        breaker_open: bool,
        deferrals: u32,
    ) -> Duration {
        // 0..=255 from the uuid's first byte.
        let byte = u64::from_str_radix(&ctx.uuid4()[..2], 16).unwrap_or(0);
        deferral_wait(retry_after_ms, breaker_open, deferrals, byte)
    }

    /// Waits `delay`, or less when an operator sends `retry_now` meanwhile.
    async fn wait_or_retry_now(ctx: &mut WorkflowContext<Self>, delay: Duration) {
        let seen = ctx.state(|s| s.retry_nows);
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(delay) => {}
            _ = ctx.wait_condition(move |s: &Self| s.retry_nows > seen) => {}
        };
    }

    /// Waits until the merchant gate wakes this delivery (its merchant has room) or, if no
    /// wake comes, `fallback` passes; `retry_now` ends the wait too.
    async fn wait_for_wake(ctx: &mut WorkflowContext<Self>, fallback: Duration, seen: u32) {
        let retry_nows = ctx.state(|s| s.retry_nows);
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(fallback) => {}
            _ = ctx.wait_condition(move |s: &Self| s.wakes > seen || s.retry_nows > retry_nows) => {}
        };
    }

    /// Whether a delivery that must wait for a retry leaves its first queue for the retry
    /// queue (since `notify-wait-in-line`, only after a failed attempt; a deferral waits in
    /// place). Runs
    /// recorded before the retry queue existed wait where they are (the patch keeps them
    /// replaying); runs already on the retry queue stay.
    fn moves_to_retry_queue(ctx: &WorkflowContext<Self>) -> bool {
        let (v2, resume) = ctx.state(|s| (s.v2, s.request.resume.clone()));
        if v2 {
            return !resume.is_some_and(|r| r.on_retry_queue);
        }
        ctx.task_queue() != task_queues::NOTIFY_RETRY && ctx.patched(RETRY_QUEUE_PATCH)
    }

    /// Ends this run; the next starts (on `task_queue`, or this one) with what this one did
    /// and waits `wait_ms` before its first attempt.
    fn continue_as_new(
        ctx: &WorkflowContext<Self>,
        request: &NotificationRequest,
        run: Carry,
        wait_ms: u64,
        task_queue: Option<&str>,
    ) -> WorkflowResult<()> {
        let (attempts, runs) = ctx.state(|s| (s.status.attempts.clone(), s.status.runs));
        let next = NotificationRequest {
            resume: Some(NotificationResume {
                attempts,
                in_cycle: run.in_cycle,
                event_time_ms: run.event_time_ms,
                runs: runs + 1,
                wait_ms,
                deferrals: run.deferrals,
                v2: ctx.state(|s| s.v2),
                on_retry_queue: task_queue == RETRY
                    || request.resume.as_ref().is_some_and(|r| r.on_retry_queue),
            }),
            ..request.clone()
        };
        let mut options = ContinueAsNewOptions::default();
        options.task_queue = task_queue.map(str::to_string);
        // The chain's version is in `resume.v2`; the next run's own input version is kept.
        let started_at = ctx.state(|s| s.started_at);
        ctx.continue_as_new(
            Versioned {
                request: next,
                version: started_at,
            },
            options,
        )?;
        Ok(())
    }

    async fn wait_for_resend(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        let seen = ctx.state(|s| s.resends);
        ctx.wait_condition(move |s: &Self| s.resends > seen).await?;
        Ok(())
    }
}

/// What a run carries over to the next one besides the attempts.
#[derive(Debug, Clone, Copy)]
struct Carry {
    /// The event's time: every attempt of every run sends the same body.
    event_time_ms: i64,
    /// Attempts within the current cycle (a resend starts a new cycle).
    in_cycle: u32,
    /// Consecutive deferrals (the merchant busy or its breaker open), for the backoff.
    deferrals: u32,
}

/// [`Notification::deferral_wait`] with its random byte (0..=255) given.
fn deferral_wait(retry_after_ms: u64, breaker_open: bool, deferrals: u32, byte: u64) -> Duration {
    let ms = if breaker_open {
        let until = retry_after_ms.max(1);
        until + byte * until / 256
    } else {
        let backoff = retry_after_ms
            .max(1)
            .saturating_mul(1 << deferrals.min(5))
            .min(MAX_DEFERRAL_MS);
        backoff + byte * backoff / 512
    };
    Duration::from_millis(ms).min(MAX_DELAY)
}

/// Where waiting deliveries continue.
const RETRY: Option<&str> = Some(task_queues::NOTIFY_RETRY);

/// Marks runs, from the start of each, that have the three features below without a marker
/// each. The markers of `notify-wait-in-line` and `notify-retry-queue` are asked for after the
/// local first try, and when a query reaches the worker with the first workflow task, the
/// SDK completes that task with the try's result and the rest of its commands go into the
/// next task; on replay the code reaches the same `patched` call within the first task, where
/// the SDK, looking ahead one task only, has not seen the marker: a replay (any query after
/// the run left the cache) failed as non-deterministic. A patch asked for before any local
/// activity is always in the task it was decided in.
const V2_PATCH: &str = "notify-v2";

/// Marks runs that move to the retry queue (see [`Notification::moves_to_retry_queue`]).
const RETRY_QUEUE_PATCH: &str = "notify-retry-queue";

/// Marks runs whose deferred deliveries wait in place for a wake (see
/// [`Notification::wait_for_wake`]) instead of moving to the retry queue.
const WAIT_IN_LINE_PATCH: &str = "notify-wait-in-line";

/// Marks runs whose first try is a local activity (see `try_locally` in
/// [`Notification::run`]); runs recorded before replay the regular activity they hold.
const FIRST_TRY_LOCAL_PATCH: &str = "notify-first-try-local";

/// Longest wait between two tries of a deferred delivery.
const MAX_DEFERRAL_MS: u64 = 30_000;

/// Upper bound on one timer, so a misconfigured schedule cannot park a delivery for years.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_breaker_is_waited_out_then_wakeups_spread_over_as_long_again() {
        let open = 120_000;
        for byte in [0, 1, 128, 255] {
            let w = deferral_wait(open, true, 7, byte).as_millis() as u64;
            assert!((open..2 * open).contains(&w), "{byte}: {w}");
        }
        assert_ne!(
            deferral_wait(open, true, 0, 0),
            deferral_wait(open, true, 0, 255)
        );
    }

    #[test]
    fn a_busy_merchant_is_retried_with_doubling_backoff_capped_at_30_s() {
        let waits: Vec<u128> = (0..8)
            .map(|d| deferral_wait(1_000, false, d, 0).as_millis())
            .collect();
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(
            deferral_wait(1_000, false, 9, 255).as_millis(),
            30_000 + 14_941
        );
    }
}

//! Activity options shared by payflow workflows.

use std::time::Duration;

use temporalio_common::{ActivityDefinition, RetryPolicy};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, LocalActivityOptions, TimerOptions,
    WaitConditionOptions, WorkflowCancellationToken, WorkflowContext,
};

/// Side-effect activities: bounded per attempt, retried with backoff until they succeed or
/// fail definitely (definite outcomes are return values, not failures).
pub fn side_effect(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(retry_policy())
        .summary(summary.into())
        .build()
}

/// A short step (a database transition or posting, a channel's prepay, query or close, a
/// workflow start, a callback's first try): a local activity, run by the worker inside the
/// workflow task that asks for it and recorded as one marker, so it costs the server no
/// activity task and no extra workflow task (`payflow bench e2e`: the server's workflow tasks are the budget).
/// Retried like [`side_effect`]; every such step is idempotent (by order id, by the channel's
/// trade number, by workflow id). `local` is false for runs recorded before the step was
/// local: they replay the regular activity their history holds.
pub async fn local_step<W, AD>(
    ctx: &WorkflowContext<W>,
    local: bool,
    activity: AD,
    input: AD::Input,
    summary: impl Into<String>,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition,
{
    let summary = summary.into();
    if !local {
        return ctx
            .execute_activity(activity, input, side_effect(summary))
            .await;
    }
    let options = LocalActivityOptions::builder()
        // A step once asked for runs to its end: an operator's cancel of the workflow is seen
        // between steps (a payment then closes), never halfway through one.
        .cancellation_token(WorkflowCancellationToken::new())
        .start_to_close_timeout(Duration::from_secs(30))
        // Retried like the regular activity, i.e. until the database is back; past a minute
        // between tries the SDK waits on durable timers, not in the workflow task.
        .schedule_to_close_timeout(LOCAL_RETRY_LIMIT)
        .retry_policy(retry_policy())
        .summary(summary)
        .build();
    ctx.execute_local_activity(activity, input, options).await
}

/// How long a local step keeps retrying before the workflow fails it (regular activities
/// retry without a limit; a local one needs one).
const LOCAL_RETRY_LIMIT: Duration = Duration::from_secs(30 * 24 * 3600);

fn retry_policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(500))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(60))
        .build()
}

/// A side effect that must not be repeated blindly (a payout submit): one attempt; a failure
/// or timeout means "unknown", which the workflow resolves by querying.
pub fn single_attempt(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
        .summary(summary.into())
        .build()
}

/// `opts` for a step of a workflow that finishes what it started whatever an operator cancels
/// (refunds, payouts and transfers move money in several steps; stopped between two of them,
/// a hold would stay held or a refund submitted would never be made definite): the step gets
/// a token of its own instead of the workflow's, so a cancel request never cancels it.
pub fn to_the_end(mut opts: ActivityOptions) -> ActivityOptions {
    opts.cancellation_token = Some(WorkflowCancellationToken::new());
    opts
}

/// A timer such a workflow waits out whatever an operator cancels (see [`to_the_end`]); one
/// cancelled with the workflow would fire at once, every time it is started again.
pub fn timer_to_the_end(duration: Duration) -> TimerOptions {
    TimerOptions::builder(duration)
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// A wait for workflow state that an operator's cancel does not end (by default a condition
/// takes the workflow's cancellation and fails with it).
pub fn wait_to_the_end() -> WaitConditionOptions {
    WaitConditionOptions::builder()
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Deterministic "now" in unix milliseconds, from the workflow's clock.
pub fn now_ms(time: Option<std::time::SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

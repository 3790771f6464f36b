//! Activity options shared by payflow workflows.

use std::time::Duration;

use temporalio_common::RetryPolicy;
use temporalio_sdk::ActivityOptions;

/// Side-effect activities: bounded per attempt, retried with backoff until they succeed or
/// fail definitely (definite outcomes are return values, not failures).
pub fn side_effect(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
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

/// A side effect that must not be repeated blindly (a payout submit): one attempt; a failure
/// or timeout means "unknown", which the workflow resolves by querying.
pub fn single_attempt(summary: impl Into<String>) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
        .summary(summary.into())
        .build()
}

/// Deterministic "now" in unix milliseconds, from the workflow's clock.
pub fn now_ms(time: Option<std::time::SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

//! Patches that a run's input version implies (`payflow_client::Versioned`).
//!
//! A run started at a version that includes a patch asks no patch: it records no marker and no
//! `TemporalChangeVersion` upsert. Replay still asks, because a worker from before versioned
//! inputs ignores the version and records the marker; the SDK's `patched` in replay answers
//! from the history and issues no command when the marker is absent, so both kinds of history
//! replay with the same code.

use temporalio_sdk::WorkflowContext;

/// Whether this run has `patch`, for a run started at version `started_at` where every run
/// started at `since` or later has it from birth.
pub fn patched_since<W>(
    ctx: &WorkflowContext<W>,
    started_at: u32,
    since: u32,
    patch: &str,
) -> bool {
    if started_at < since {
        return ctx.patched(patch);
    }
    if ctx.is_replaying() {
        // Consumes an older worker's marker if it recorded one; the answer is the version's.
        let _ = ctx.patched(patch);
    }
    true
}

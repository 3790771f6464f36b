//! Puts every activity execution in a `tracing` span carrying the workflow id, run id,
//! activity type and attempt, plus the merchant and order read from payflow's workflow ids
//! (`pay/{merchant}/{order}`, `notify/{merchant}/{event}`), so each log line says whose
//! money it is about.

use futures::FutureExt;
use temporalio_sdk::interceptors::{
    ActivityInboundInterceptor, ExecuteActivityInput, ExecuteActivityOutput, Next,
};
use tracing::Instrument;

pub struct ActivitySpans;

/// `(merchant, business id)` from a payflow workflow id.
pub fn ids_from_workflow_id(workflow_id: &str) -> (&str, &str) {
    let mut parts = workflow_id.splitn(3, '/');
    let _kind = parts.next();
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

impl ActivityInboundInterceptor for ActivitySpans {
    fn execute_activity<'a>(
        &'a self,
        input: ExecuteActivityInput,
        next: Next<'a, ExecuteActivityInput, ExecuteActivityOutput<'a>>,
    ) -> ExecuteActivityOutput<'a> {
        let info = input.activity_info();
        let workflow_id = info.workflow_id.clone().unwrap_or_default();
        let (merchant, order) = ids_from_workflow_id(&workflow_id);
        let span = tracing::info_span!(
            "activity",
            activity = %info.activity_type,
            attempt = info.attempt,
            workflow_id = %workflow_id,
            run_id = %info.workflow_run_id.as_deref().unwrap_or(""),
            merchant = %merchant,
            order = %order,
        );
        async move {
            let result = next.run(input).await;
            if let Err(e) = &result {
                tracing::warn!(error = ?e, "activity failed");
            }
            result
        }
        .instrument(span)
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_merchant_and_order() {
        assert_eq!(ids_from_workflow_id("pay/m1/o-2"), ("m1", "o-2"));
        assert_eq!(ids_from_workflow_id("notify/m1/e"), ("m1", "e"));
        assert_eq!(ids_from_workflow_id("other"), ("", ""));
    }
}

//! Sends the merchant gate's wakes: a `wake` signal to each deferred Notification whose
//! merchant has room now (`payflow_activities::merchant_gate`). Best effort by design: a wake
//! that is lost (the workflow finished meanwhile, the server was unreachable) only means the
//! workflow waits for its fallback timer.

use payflow_client::definitions::{NotificationWorkflow, Wake};
use temporalio_client::Client;
use temporalio_client::errors::WorkflowInteractionError;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;

/// Signals in flight at once: enough to keep up with slots freeing, few enough that a burst
/// (a probe closing a breaker) does not flood the server.
const IN_FLIGHT: usize = 32;

/// Runs until the gate (and so every sender) is gone.
pub async fn run(client: Client, mut wakes: UnboundedReceiver<String>) {
    let mut sending = JoinSet::new();
    while let Some(workflow_id) = wakes.recv().await {
        while sending.len() >= IN_FLIGHT {
            sending.join_next().await;
        }
        let client = client.clone();
        sending.spawn(async move {
            let handle = client.get_workflow_handle::<NotificationWorkflow>(workflow_id.clone());
            match handle.signal(Wake, (), Default::default()).await {
                Ok(()) => {}
                Err(WorkflowInteractionError::NotFound(_)) => {
                    tracing::debug!(workflow_id, "wake: the delivery has finished");
                }
                Err(e) => tracing::warn!(workflow_id, error = %e, "wake not sent"),
            }
        });
    }
    while sending.join_next().await.is_some() {}
}

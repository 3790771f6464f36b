//! Merchant callbacks from any workflow: a Notification workflow per event, started by a local
//! activity through the client, so it is nobody's child: a workflow finishing, or being reset,
//! never cancels a callback on its way. (Runs recorded before started it as an abandoned child,
//! which costs the parent a workflow task to learn that the child started.)

use payflow_client::definitions::task_queues;
use payflow_client::{EventId, MerchantId, NotificationRequest, Priority};
use serde::Serialize;
use temporalio_sdk::{
    ApplicationFailure, ChildWorkflowOptions, ParentClosePolicy, WorkflowContext, WorkflowResult,
};

use payflow_activities::notification::{
    FirstTry, FirstTryOutcome, NotifyActivities, StartNotification,
};

use crate::notification::Notification;
use crate::options::local_step;

/// One event for a merchant.
pub struct MerchantEvent<'a, T: Serialize> {
    pub merchant: &'a MerchantId,
    /// Stable for the business event: the callback's `webhook-id` and its workflow's id.
    pub event_id: String,
    pub event_type: &'a str,
    pub data: &'a T,
    pub priority: Priority,
    pub notify_url: Option<String>,
    /// One line for operators (the child's summary in the UI).
    pub summary: String,
}

/// Starts the callback; starting it again (a replayed or retried step) is a no-op.
pub async fn notify<W, T: Serialize>(
    ctx: &mut WorkflowContext<W>,
    event: MerchantEvent<'_, T>,
) -> WorkflowResult<()> {
    let by_client = ctx.patched(START_BY_CLIENT_PATCH);
    start(ctx, event, by_client).await
}

/// [`notify`] for runs whose own patch already says callbacks are started by the client (each
/// patch costs the server a marker and a search attribute upsert).
pub async fn notify_by_client<W, T: Serialize>(
    ctx: &mut WorkflowContext<W>,
    event: MerchantEvent<'_, T>,
) -> WorkflowResult<()> {
    start(ctx, event, true).await
}

/// Makes the event's first delivery attempt in the calling workflow's task (a local
/// activity), and starts the Notification workflow of an event it does not deliver (see
/// `NotifyActivities::first_try`), in a second step. The calling workflow's history holds the
/// attempt. Whether the merchant accepted it.
pub async fn first_try<W, T: Serialize>(
    ctx: &mut WorkflowContext<W>,
    event: MerchantEvent<'_, T>,
    event_time_ms: i64,
) -> WorkflowResult<bool> {
    let summary = event.summary.clone();
    let request = request(event)?;
    let outcome = local_step(
        ctx,
        true,
        NotifyActivities::first_try,
        FirstTry {
            request,
            event_time_ms,
        },
        format!("{summary} (first try)"),
    )
    .await
    .map_err(|e| invalid(&e))?;
    let request = match outcome {
        FirstTryOutcome::Delivered(_) => return Ok(true),
        FirstTryOutcome::NotDelivered(request) => request,
    };
    local_step(
        ctx,
        true,
        NotifyActivities::start_notification,
        StartNotification { request },
        summary,
    )
    .await
    .map_err(|e| invalid(&e))?;
    Ok(false)
}

fn invalid(e: &dyn std::fmt::Display) -> ApplicationFailure {
    ApplicationFailure::non_retryable(e.to_string())
}

/// The event as its Notification workflow takes it.
fn request<T: Serialize>(event: MerchantEvent<'_, T>) -> WorkflowResult<NotificationRequest> {
    let event_id = EventId::parse(event.event_id).map_err(|e| invalid(&e))?;
    let data = serde_json::to_value(event.data).map_err(|e| invalid(&e))?;
    Ok(NotificationRequest {
        merchant_id: event.merchant.clone(),
        event_id,
        event_type: event.event_type.to_string(),
        data,
        priority: event.priority,
        notify_url: event.notify_url,
        resume: None,
    })
}

async fn start<W, T: Serialize>(
    ctx: &mut WorkflowContext<W>,
    event: MerchantEvent<'_, T>,
    by_client: bool,
) -> WorkflowResult<()> {
    let queue = match event.priority {
        Priority::Realtime => task_queues::NOTIFY_REALTIME,
        Priority::Batch => task_queues::NOTIFY_BATCH,
    };
    let summary = event.summary.clone();
    let request = request(event)?;
    let workflow_id =
        payflow_client::ids::notification_workflow_id(&request.merchant_id, &request.event_id);
    if by_client {
        local_step(
            ctx,
            true,
            NotifyActivities::start_notification,
            StartNotification { request },
            summary,
        )
        .await
        .map_err(|e| invalid(&e))?;
        return Ok(());
    }
    let started = ctx
        .start_child_workflow(
            Notification::run,
            // As such runs started it: unversioned, the plain request.
            payflow_client::Versioned::unversioned(request),
            ChildWorkflowOptions::builder()
                .workflow_id(workflow_id)
                .task_queue(queue.to_string())
                .parent_close_policy(ParentClosePolicy::Abandon)
                .static_summary(summary)
                .build(),
        )
        .await;
    match started {
        Ok(_) => Ok(()),
        // Already started by an earlier run of this step: the event is on its way.
        Err(e) if e.to_string().contains("already") => Ok(()),
        Err(e) => Err(invalid(&e).into()),
    }
}

/// Marks runs that start callbacks through the client (see the module doc).
const START_BY_CLIENT_PATCH: &str = "notify-started-by-client";

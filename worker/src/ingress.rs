//! Channel notification ingress: `POST /channels/{channel}/notify`.
//!
//! Checks, in this order: body size, source IP allowlist, signature, `notify_time` window,
//! replay (a notify id seen before is acknowledged and changes nothing); then the payment's
//! workflow is signalled. The channel's acknowledgement is sent only after Temporal accepted
//! the signal; otherwise 503 so the channel retries. A notification for an unknown order is
//! recorded for operators, not dropped. A payment notice for an order already closed starts a
//! late-payment refund instead. Errors map to HTTP in one place ([`IngressError`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payflow_activities::Services;
use payflow_activities::channels::NoticeError;
use payflow_activities::store::notices::NoticeRecord;
use payflow_activities::store::orders::Order;
use payflow_client::definitions::{ChannelNotified, PaymentWorkflow, RefundWorkflow, task_queues};
use payflow_client::ids::{payment_workflow_id, refund_workflow_id};
use payflow_client::{
    ChannelNotice, MerchantId, OrderNo, PayState, Payflow, RefundKind, RefundNo, RefundRequest,
};
use temporalio_client::errors::{WorkflowInteractionError, WorkflowStartError};
use temporalio_client::{
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowSignalOptions, WorkflowStartOptions,
};

use crate::config::IngressConfig;

#[derive(Clone)]
pub struct IngressState {
    services: Arc<Services>,
    payflow: Payflow,
    allowed_ips: Arc<Vec<IpAddr>>,
    window_ms: i64,
    max_body: usize,
}

impl IngressState {
    pub fn new(cfg: &IngressConfig, services: Arc<Services>, payflow: Payflow) -> Self {
        IngressState {
            services,
            payflow,
            allowed_ips: Arc::new(cfg.allowed_ips.clone()),
            window_ms: cfg.notify_time_window_secs as i64 * 1000,
            max_body: cfg.max_body_bytes,
        }
    }
}

pub fn router(state: IngressState) -> Router {
    let limit = state.max_body;
    Router::new()
        .route("/channels/{channel}/notify", post(notify))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("unknown channel")]
    UnknownChannel,
    #[error("source address not allowed")]
    Forbidden,
    #[error("bad notification: {0}")]
    Bad(String),
    #[error("signature does not verify")]
    Signature,
    #[error("notify_time outside the accepted window")]
    Stale,
    #[error("temporarily unavailable")]
    Unavailable,
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let status = match self {
            IngressError::UnknownChannel => StatusCode::NOT_FOUND,
            IngressError::Forbidden => StatusCode::FORBIDDEN,
            IngressError::Bad(_) | IngressError::Stale => StatusCode::BAD_REQUEST,
            IngressError::Signature => StatusCode::UNAUTHORIZED,
            IngressError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        // The body says what class of problem it was, never internals.
        (status, self.to_string()).into_response()
    }
}

async fn notify(
    State(st): State<IngressState>,
    Path(channel_name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, IngressError> {
    if !st.allowed_ips.is_empty() && !st.allowed_ips.contains(&peer.ip()) {
        tracing::warn!(%peer, channel = %channel_name, "notification from a source not allowed");
        return Err(IngressError::Forbidden);
    }
    let channel = st
        .services
        .channels
        .get(&channel_name)
        .ok_or(IngressError::UnknownChannel)?
        .clone();
    // Each protocol reads what it signs: Alipay a form body, WeChat Pay headers + JSON.
    let header_map: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let notice = channel
        .verify_notice_http(&header_map, &body)
        .map_err(|e| match e {
            NoticeError::BadSignature => IngressError::Signature,
            NoticeError::WrongApp => IngressError::Signature,
            NoticeError::Malformed(m) => IngressError::Bad(m),
        })?;
    let now = chrono::Utc::now().timestamp_millis();
    if (now - notice.notify_time_ms).abs() > st.window_ms {
        return Err(IngressError::Stale);
    }
    let ack = channel.ack_body();
    let store = &st.services.store;
    let seen = store
        .notice_seen(&channel_name, &notice.notify_id)
        .await
        .map_err(|e| unavailable("store", e))?;
    if seen {
        tracing::info!(channel = %channel_name, notify_id = %notice.notify_id, "replayed notification acknowledged");
        return Ok(ack.into_response());
    }
    let order = store
        .order(&notice.out_trade_no)
        .await
        .map_err(|e| unavailable("store", e))?;
    let mut record = NoticeRecord {
        channel: channel_name.clone(),
        notify_id: notice.notify_id.clone(),
        out_trade_no: notice.out_trade_no.clone(),
        trade_status: notice.trade_status.clone(),
        total_amount: notice.total_amount.clone(),
        workflow_id: None,
    };
    match order.filter(|o| o.channel == channel_name) {
        None => {
            tracing::warn!(channel = %channel_name, out_trade_no = %notice.out_trade_no, "notification for an unknown order recorded for operators");
        }
        // The customer paid an order we already closed: its payment workflow has decided, so
        // the money goes back through a late-payment refund, which first confirms with the
        // channel that it really was paid.
        Some(order) if order.state == PayState::Closed && claims_paid(&notice.trade_status) => {
            let workflow_id = start_late_payment_refund(&st, &order).await?;
            tracing::warn!(%workflow_id, notify_id = %notice.notify_id, "payment after close: late-payment refund started");
            record.workflow_id = Some(workflow_id);
        }
        Some(order) => {
            let merchant =
                MerchantId::parse(&order.merchant_id).map_err(|e| unavailable("order", e))?;
            let order_no =
                OrderNo::parse(&order.merchant_order_no).map_err(|e| unavailable("order", e))?;
            let workflow_id = payment_workflow_id(&merchant, &order_no);
            let signalled = st
                .payflow
                .temporal()
                .get_workflow_handle::<PaymentWorkflow>(workflow_id.clone())
                .signal(
                    ChannelNotified,
                    ChannelNotice {
                        channel: channel_name.clone(),
                        notify_id: notice.notify_id.clone(),
                        channel_trade_no: notice.channel_trade_no.clone(),
                        trade_status: notice.trade_status.clone(),
                        total_amount: notice.total_amount.clone(),
                    },
                    WorkflowSignalOptions::default(),
                )
                .await;
            match signalled {
                Ok(()) => {
                    tracing::info!(%workflow_id, notify_id = %notice.notify_id, trade_status = %notice.trade_status, "channel notification signalled");
                }
                // The payment already finished: acknowledge (retrying cannot help) and keep
                // the notice on record for operators and reconciliation.
                Err(WorkflowInteractionError::NotFound(_)) => {
                    tracing::warn!(%workflow_id, notify_id = %notice.notify_id, trade_status = %notice.trade_status, "notification for a finished payment recorded");
                }
                Err(e) => return Err(unavailable("temporal", e)),
            }
            record.workflow_id = Some(workflow_id);
        }
    }
    store
        .record_notice(&record)
        .await
        .map_err(|e| unavailable("store", e))?;
    Ok(ack.into_response())
}

/// Whether the channel's status word says the customer paid (Alipay's `TRADE_SUCCESS` /
/// `TRADE_FINISHED`, WeChat Pay's `SUCCESS`); a notice is still only a claim until the refund
/// workflow's query confirms it.
fn claims_paid(trade_status: &str) -> bool {
    matches!(trade_status, "TRADE_SUCCESS" | "TRADE_FINISHED" | "SUCCESS")
}

/// Starts (or finds) `refund/{merchant}/late-{order_id}` for the whole collected amount.
async fn start_late_payment_refund(
    st: &IngressState,
    order: &Order,
) -> Result<String, IngressError> {
    let merchant = MerchantId::parse(&order.merchant_id).map_err(|e| unavailable("order", e))?;
    let order_no = OrderNo::parse(&order.merchant_order_no).map_err(|e| unavailable("order", e))?;
    let refund_no =
        RefundNo::parse(format!("late-{}", order.order_id)).map_err(|e| unavailable("order", e))?;
    let workflow_id = refund_workflow_id(&merchant, &refund_no);
    let request = RefundRequest {
        merchant_id: merchant,
        merchant_order_no: order_no,
        merchant_refund_no: refund_no,
        // A hint only: the refund returns what the channel confirms it collected.
        amount: order.amount,
        reason: "payment received after the order was closed".into(),
        kind: RefundKind::LatePayment,
    };
    let options = WorkflowStartOptions::new(task_queues::PAYMENTS, workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .static_summary(format!(
            "return a late payment on closed order {}",
            order.merchant_order_no
        ))
        .build();
    match st
        .payflow
        .temporal()
        .start_workflow(RefundWorkflow, request, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(workflow_id),
        Err(e) => Err(unavailable("temporal", e)),
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> IngressError {
    tracing::error!(error = %e, "ingress: {what} unavailable");
    IngressError::Unavailable
}

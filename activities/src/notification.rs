//! Notification activities: start an event's Notification workflow, build the signed callback
//! body and make one delivery attempt.

use std::sync::Arc;

use payflow_client::{DeliveryAttempt, NotificationRequest};
use serde::{Deserialize, Serialize};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::merchants::MerchantStatus;
use crate::metrics::NotifyOutcome;
use crate::notify::Callback;
use crate::payment::transient;
use crate::services::SharedServices;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deliver {
    pub request: NotificationRequest,
    pub attempt: u32,
    /// Unix ms of the event, fixed by the workflow so every attempt sends the same body.
    pub event_time_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum DeliverOutcome {
    /// One attempt was made; `retry_schedule_ms` is the configured wait before each retry.
    Attempted {
        attempt: DeliveryAttempt,
        retry_schedule_ms: Vec<u64>,
        /// The workflow continues as new once its history has this many events.
        #[serde(default = "default_continue_after_events")]
        continue_after_events: u32,
    },
    /// The merchant is blocked: nothing was sent.
    Held,
    /// Not attempted: the merchant has too many deliveries under way or its circuit breaker
    /// is open. Try again after this long; it is not an attempt and uses no retry.
    Deferred {
        retry_after_ms: u64,
        #[serde(default = "default_continue_after_events")]
        continue_after_events: u32,
        /// The merchant's breaker is open until `retry_after_ms` from now (else: it is busy).
        #[serde(default)]
        breaker_open: bool,
    },
    /// The event cannot be delivered as configured (unknown merchant, URL not allowed).
    Undeliverable(String),
}

fn default_continue_after_events() -> u32 {
    crate::services::DEFAULT_CONTINUE_AFTER_EVENTS
}

/// An event to hand to its own Notification workflow (`notify/{merchant}/{event_id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartNotification {
    pub request: NotificationRequest,
}

/// What the merchant receives: `{"type", "timestamp", "data"}`.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a serde_json::Value,
}

pub struct NotifyActivities {
    services: SharedServices,
}

impl NotifyActivities {
    pub fn new(services: SharedServices) -> Self {
        NotifyActivities { services }
    }
}

#[activities]
impl NotifyActivities {
    /// Starts the event's Notification workflow; an event already started is left as it is
    /// (idempotent by workflow id), so a retried or replayed step sends nothing twice.
    #[activity]
    pub async fn start_notification(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: StartNotification,
    ) -> Result<(), ActivityError> {
        let payflow = self
            .services
            .temporal
            .get()
            .ok_or_else(|| transient("the worker has no Temporal client yet"))?;
        payflow.notify(input.request).await.map_err(transient)
    }

    #[activity]
    pub async fn deliver(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: Deliver,
    ) -> Result<DeliverOutcome, ActivityError> {
        let s = &self.services;
        let req = &input.request;
        let merchant = match s.merchants.get(&req.merchant_id) {
            Ok(m) => m,
            Err(e) => return Ok(DeliverOutcome::Undeliverable(e.to_string())),
        };
        if merchant.status == MerchantStatus::Blocked {
            return Ok(DeliverOutcome::Held);
        }
        let url = match merchant.notify_url(req.notify_url.as_deref()) {
            Ok(u) => u,
            Err(e) => return Ok(DeliverOutcome::Undeliverable(e.to_string())),
        };
        let timestamp = chrono::DateTime::from_timestamp_millis(input.event_time_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::to_vec(&Body {
            event_type: &req.event_type,
            timestamp,
            data: &req.data,
        })
        .map_err(|e| {
            ActivityError::application(ApplicationFailure::non_retryable(e.to_string()))
        })?;
        // Deferred, this workflow waits in the merchant's line and is woken (signal `wake`)
        // when the merchant has room.
        let waiter = ctx.info().workflow_id.as_deref();
        let pass = match s.gate.enter(req.merchant_id.as_str(), waiter) {
            Ok(pass) => pass,
            Err(deferral) => {
                s.metrics
                    .notification(req.merchant_id.as_str(), NotifyOutcome::Deferred, None);
                return Ok(DeliverOutcome::Deferred {
                    retry_after_ms: deferral.wait().as_millis() as u64,
                    continue_after_events: s.notify_continue_after_events,
                    breaker_open: matches!(deferral, crate::merchant_gate::Deferral::Open(_)),
                });
            }
        };
        let delivery = s
            .deliverer
            .deliver(
                &req.merchant_id,
                Callback {
                    url: &url,
                    event_id: req.event_id.as_str(),
                    body: &body,
                    secret: &merchant.webhook_secret,
                    expect_body: merchant.expect_body.as_deref(),
                    attempt: input.attempt,
                },
            )
            .await;
        if let Some(refusal) = delivery.refused {
            // Nothing was sent and retrying cannot help (e.g. the URL resolves to a private
            // address): park for an operator. Not the merchant's fault: the breaker ignores it.
            drop(pass);
            return Ok(DeliverOutcome::Undeliverable(refusal.to_string()));
        }
        let attempt = delivery.attempt;
        pass.finish(attempt.delivered);
        s.metrics.notification(
            req.merchant_id.as_str(),
            if attempt.delivered {
                NotifyOutcome::Delivered
            } else {
                NotifyOutcome::Failed
            },
            Some(std::time::Duration::from_millis(attempt.latency_ms)),
        );
        Ok(DeliverOutcome::Attempted {
            attempt,
            retry_schedule_ms: s.notify_schedule_ms.clone(),
            continue_after_events: s.notify_continue_after_events,
        })
    }
}

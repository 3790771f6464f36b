//! Notification activities: start an event's Notification workflow, build the signed callback
//! body and make one delivery attempt.

use std::sync::Arc;

use payflow_client::{DeliveryAttempt, NotificationRequest, NotificationResume};
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

/// A realtime event's first try, made by the business workflow itself (seed 000's synchronous
/// layer: request the URL first, keep a record after); only an event that try does not
/// deliver gets a Notification workflow, the compensating-retry layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstTry {
    pub request: NotificationRequest,
    /// Unix ms of the event, fixed by the calling workflow: a retry sends the same body.
    pub event_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FirstTryOutcome {
    /// The merchant accepted the callback; no workflow was started for it.
    Delivered(DeliveryAttempt),
    /// Not delivered: start this request's Notification workflow (a step of its own, so a
    /// start that must be retried never repeats the delivery), which takes it from here.
    NotDelivered(NotificationRequest),
}

/// Longest wait before a retry (the Notification workflow's own `MAX_DELAY`).
const MAX_RETRY_WAIT_MS: u64 = 24 * 3600 * 1000;

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
        self.start(input.request).await
    }

    /// One delivery attempt of a new event and, unless it was delivered, the request for the
    /// event's Notification workflow: after a failed attempt on the retry queue, with that
    /// attempt and the event time on record and the schedule's first retry to wait for (as
    /// the workflow would have continued itself); anything else (deferred by the merchant
    /// gate, held, undeliverable) as a new event. At least once: a retried step may deliver
    /// twice, with the same `webhook-id` and body.
    #[activity]
    pub async fn first_try(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: FirstTry,
    ) -> Result<FirstTryOutcome, ActivityError> {
        let deliver = Deliver {
            request: input.request.clone(),
            attempt: 1,
            event_time_ms: input.event_time_ms,
        };
        // No waiter: a deferred first try does not wait here, its workflow waits in line.
        let mut request = input.request;
        match self.attempt(deliver, None).await? {
            DeliverOutcome::Attempted { attempt, .. } if attempt.delivered => {
                return Ok(FirstTryOutcome::Delivered(attempt));
            }
            DeliverOutcome::Attempted {
                attempt,
                retry_schedule_ms,
                ..
            } => {
                // With no retry in the schedule the workflow tries once more at once (same
                // body) and parks.
                let wait = retry_schedule_ms.first().copied();
                request.resume = Some(NotificationResume {
                    attempts: vec![attempt],
                    in_cycle: u32::from(wait.is_some()),
                    event_time_ms: input.event_time_ms,
                    runs: 0,
                    wait_ms: wait.map_or(0, |ms| ms.clamp(1, MAX_RETRY_WAIT_MS)),
                    deferrals: 0,
                    v2: true,
                    on_retry_queue: true,
                });
            }
            DeliverOutcome::Deferred { .. }
            | DeliverOutcome::Held
            | DeliverOutcome::Undeliverable(_) => {}
        }
        Ok(FirstTryOutcome::NotDelivered(request))
    }

    #[activity]
    pub async fn deliver(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: Deliver,
    ) -> Result<DeliverOutcome, ActivityError> {
        let waiter = ctx.info().workflow_id.clone();
        self.attempt(input, waiter.as_deref()).await
    }
}

impl NotifyActivities {
    /// Starts the event's Notification workflow (idempotent by workflow id).
    async fn start(&self, request: NotificationRequest) -> Result<(), ActivityError> {
        let payflow = self
            .services
            .temporal
            .get()
            .ok_or_else(|| transient("the worker has no Temporal client yet"))?;
        payflow.notify(request).await.map_err(transient)
    }

    /// One delivery attempt through the merchant gate; `waiter` (a Notification workflow's
    /// id) joins the merchant's waiting line when the gate defers it.
    async fn attempt(
        &self,
        input: Deliver,
        waiter: Option<&str>,
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

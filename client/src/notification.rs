//! Merchant notification contract: an event payflow must deliver to a merchant's notify URL.

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, MerchantId};

/// Realtime events (scan-code, online banking) and batch events (withholding, payouts,
/// recharges) run on separate task queues so a batch never delays realtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Realtime,
    Batch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRequest {
    pub merchant_id: MerchantId,
    /// Stable across attempts; the `webhook-id` header.
    pub event_id: EventId,
    /// e.g. `payment.succeeded`
    pub event_type: String,
    pub data: serde_json::Value,
    #[serde(default)]
    pub priority: Priority,
    /// Overrides the merchant's configured notify URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// Set by payflow only: what an earlier run of this workflow did before it continued as a
    /// new run (long-lived deliveries keep their history small this way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<NotificationResume>,
}

/// The state a Notification run hands to the next one when it continues as new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationResume {
    pub attempts: Vec<DeliveryAttempt>,
    /// Attempts made in the current retry cycle.
    pub in_cycle: u32,
    /// The event's time: every run sends the same body.
    pub event_time_ms: i64,
    /// Runs before this one.
    pub runs: u32,
    /// Wait this long before the run's first attempt (a run moved to the retry queue starts
    /// with the wait its predecessor was about to begin). `retry_now` skips it.
    #[serde(default)]
    pub wait_ms: u64,
    /// Consecutive deferrals so far (the merchant busy or its breaker open), for the backoff.
    #[serde(default)]
    pub deferrals: u32,
    /// The chain began under the workflow's `notify-v2` patch, so this run has what it
    /// marks without a marker of its own (each costs the server two history events).
    #[serde(default)]
    pub v2: bool,
    /// This run is on the retry queue (moved there by a predecessor). Carried, not read from
    /// the task, so a replay on any queue decides the same (`notify-v2` runs only).
    #[serde(default)]
    pub on_retry_queue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotifyState {
    Pending,
    Delivering,
    Retrying,
    Delivered,
    Exhausted,
    /// The merchant is blocked: nothing is sent, the event is kept.
    Held,
}

impl NotifyState {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyState::Pending => "Pending",
            NotifyState::Delivering => "Delivering",
            NotifyState::Retrying => "Retrying",
            NotifyState::Delivered => "Delivered",
            NotifyState::Exhausted => "Exhausted",
            NotifyState::Held => "Held",
        }
    }
}

/// One delivery attempt, as recorded in the workflow and shown by its `status` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub number: u32,
    pub at_ms: i64,
    pub url: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub delivered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationStatus {
    pub workflow_id: String,
    pub merchant_id: MerchantId,
    pub event_id: EventId,
    pub event_type: String,
    pub state: NotifyState,
    pub attempts: Vec<DeliveryAttempt>,
    /// Earlier runs of this workflow (it continues as new when its history grows).
    #[serde(default)]
    pub runs: u32,
}

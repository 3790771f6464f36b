//! What every activity can reach: the store, channels, merchants, routing and the HTTP
//! deliverer, built once at worker start-up and shared by `Arc`.

use std::sync::Arc;

use crate::channels::Channels;
use crate::merchants::Merchants;
use crate::notify::Deliverer;
use crate::routing::Routing;
use crate::store::Store;

/// Timing policy handed to payment workflows (scaled down in tests).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PaymentTiming {
    /// Delays between active channel queries while waiting for payment, in milliseconds; the
    /// last one repeats until expiry.
    pub query_schedule_ms: Vec<u64>,
    /// Percent of the requested expiry actually applied: 100 in production, less in tests so
    /// a 60 s minimum expiry passes in well under a second.
    pub expiry_scale_percent: u32,
}

impl PaymentTiming {
    pub fn scaled_expiry_ms(&self, expires_in_secs: u64) -> i64 {
        (expires_in_secs as i64) * 10 * i64::from(self.expiry_scale_percent)
    }
}

impl Default for PaymentTiming {
    fn default() -> Self {
        // 10s, 30s, 1m, 2m, 5m, then every 5m until expiry.
        PaymentTiming {
            query_schedule_ms: vec![10_000, 30_000, 60_000, 120_000, 300_000],
            expiry_scale_percent: 100,
        }
    }
}

/// Payout policy handed to payout workflows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PayoutPolicy {
    /// Payouts above this amount wait for an operator's review.
    pub review_above: Option<rust_decimal::Decimal>,
    /// How long a payout waits for its review before it is rejected.
    pub review_timeout_ms: u64,
    /// Waits between channel queries while a payout's outcome is unknown (ms); the last
    /// repeats.
    pub query_schedule_ms: Vec<u64>,
}

/// Well under Temporal's own warning threshold (10k events), so a delivery that waits for a
/// merchant for days never grows a history that is slow to replay.
pub const DEFAULT_CONTINUE_AFTER_EVENTS: u32 = 2_000;

pub struct Services {
    pub store: Store,
    pub channels: Channels,
    pub merchants: Merchants,
    pub routing: Routing,
    /// Channels marked down after repeated transient failures (refused at routing).
    pub health: crate::health::ChannelHealth,
    pub deliverer: Deliverer,
    /// Per-merchant delivery bound and circuit breaker.
    pub gate: crate::merchant_gate::MerchantGate,
    /// Our public ingress base URL; channels post notifications to
    /// `{ingress_base_url}/channels/{channel}/notify`.
    pub ingress_base_url: url::Url,
    pub payment_timing: PaymentTiming,
    pub payout_policy: PayoutPolicy,
    /// Merchant callback retry schedule in milliseconds.
    pub notify_schedule_ms: Vec<u64>,
    /// A Notification workflow continues as new past this many history events.
    pub notify_continue_after_events: u32,
    /// The worker's own Temporal client, set once it is connected: workflows start the
    /// merchant callbacks of their events through it (a local activity).
    pub temporal: std::sync::OnceLock<payflow_client::Payflow>,
    /// Business metrics (disabled unless the worker exports metrics); see
    /// [`Services::with_metrics`].
    pub metrics: crate::metrics::Metrics,
}

pub type SharedServices = Arc<Services>;

impl Services {
    /// Records business metrics through `metrics`, here and in the store.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Services {
        self.store.set_metrics(metrics.clone());
        self.metrics = metrics;
        self
    }

    pub fn notify_url_for(&self, channel: &str) -> String {
        let base = self.ingress_base_url.as_str().trim_end_matches('/');
        format!("{base}/channels/{channel}/notify")
    }
}

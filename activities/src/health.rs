//! Channel health: after a run of consecutive transient failures a channel is marked down for
//! a cool-down, and new payments routed to it are refused at once with a clear reason instead
//! of waiting through prepay retries; the merchant can offer the payer another method. The
//! first call after the cool-down is the probe: a success clears the mark, a failure renews it.
//!
//! Per worker process, in memory: each worker learns on its own, which is enough to stop a
//! pile-up and needs no shared state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive transient failures that mark a channel down.
    pub failures_to_trip: u32,
    pub cool_down: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failures_to_trip: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct ChannelState {
    consecutive_failures: u32,
    down_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct ChannelHealth {
    policy: HealthPolicy,
    channels: Mutex<HashMap<String, ChannelState>>,
}

impl ChannelHealth {
    pub fn new(policy: HealthPolicy) -> Self {
        ChannelHealth {
            policy,
            channels: Mutex::default(),
        }
    }

    /// Whether new payments may be routed to `channel` now.
    pub fn is_up(&self, channel: &str) -> bool {
        self.is_up_at(channel, Instant::now())
    }

    pub fn record_success(&self, channel: &str) {
        let mut map = self.channels.lock().expect("health lock");
        map.remove(channel);
    }

    pub fn record_failure(&self, channel: &str) {
        self.record_failure_at(channel, Instant::now());
    }

    fn is_up_at(&self, channel: &str, now: Instant) -> bool {
        let map = self.channels.lock().expect("health lock");
        map.get(channel)
            .and_then(|s| s.down_until)
            .is_none_or(|until| now >= until)
    }

    fn record_failure_at(&self, channel: &str, now: Instant) {
        let mut map = self.channels.lock().expect("health lock");
        let state = map.entry(channel.to_string()).or_default();
        state.consecutive_failures += 1;
        if state.consecutive_failures >= self.policy.failures_to_trip {
            state.down_until = Some(now + self.policy.cool_down);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_consecutive_failures_and_recovers_after_a_successful_probe() {
        let h = ChannelHealth::new(HealthPolicy {
            failures_to_trip: 3,
            cool_down: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        h.record_failure_at("alipay", t0);
        h.record_failure_at("alipay", t0);
        assert!(h.is_up_at("alipay", t0), "two failures are not a trend");
        h.record_failure_at("alipay", t0);
        assert!(!h.is_up_at("alipay", t0));
        assert!(h.is_up_at("wechat", t0), "other channels are unaffected");
        // After the cool-down one call may probe; its failure renews the mark ...
        let later = t0 + Duration::from_secs(10);
        assert!(h.is_up_at("alipay", later));
        h.record_failure_at("alipay", later);
        assert!(!h.is_up_at("alipay", later + Duration::from_secs(1)));
        // ... and a success clears it.
        h.record_success("alipay");
        assert!(h.is_up_at("alipay", later + Duration::from_secs(1)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let h = ChannelHealth::new(HealthPolicy {
            failures_to_trip: 2,
            cool_down: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        h.record_failure_at("alipay", t0);
        h.record_success("alipay");
        h.record_failure_at("alipay", t0);
        assert!(h.is_up_at("alipay", t0));
    }
}

//! Isolation between merchants for callbacks: a bound on concurrent deliveries per merchant and
//! a per-merchant circuit breaker, so a slow or dead endpoint only ever holds a bounded share of
//! the delivery workers. A delivery that may not go now is deferred (not attempted, not
//! counted), and the Notification workflow waits for the merchant on a durable timer while
//! the worker slot serves other merchants.
//!
//! The breaker opens after `failures_to_open` consecutive failed attempts, for a cool-down that
//! doubles on each failed probe up to `max_open`; after the cool-down one delivery probes
//! (half-open) and its outcome closes or re-opens the breaker. State is in memory per worker
//! process: each worker protects its own slots, which is what the bound is for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    pub max_in_flight: u32,
    pub failures_to_open: u32,
    pub open_for: Duration,
    pub max_open: Duration,
    /// How long a delivery deferred by the concurrency bound waits before trying again.
    pub busy_wait: Duration,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            max_in_flight: 4,
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
            max_open: Duration::from_secs(600),
            busy_wait: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default)]
struct MerchantState {
    in_flight: u32,
    consecutive_failures: u32,
    /// Open until then; `None`: closed.
    open_until: Option<Instant>,
    /// How long the next opening lasts (doubles on failed probes).
    next_open_for: Option<Duration>,
    probe_in_flight: bool,
}

/// Why a delivery must wait, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// The merchant already has `max_in_flight` deliveries under way.
    Busy(Duration),
    /// The merchant's breaker is open.
    Open(Duration),
}

impl Deferral {
    pub fn wait(self) -> Duration {
        match self {
            Deferral::Busy(d) | Deferral::Open(d) => d,
        }
    }
}

#[derive(Debug, Default)]
pub struct MerchantGate {
    policy: GatePolicy,
    merchants: Arc<Mutex<HashMap<String, MerchantState>>>,
}

/// The right to make one delivery; report its outcome with [`Pass::finish`]. Dropped without
/// finishing (a panic, a cancelled activity), it frees the slot and counts as nothing.
#[derive(Debug)]
pub struct Pass {
    merchant: String,
    probe: bool,
    policy: GatePolicy,
    merchants: Arc<Mutex<HashMap<String, MerchantState>>>,
    finished: bool,
}

impl MerchantGate {
    pub fn new(policy: GatePolicy) -> Self {
        MerchantGate {
            policy,
            merchants: Arc::default(),
        }
    }

    pub fn enter(&self, merchant: &str) -> Result<Pass, Deferral> {
        self.enter_at(merchant, Instant::now())
    }

    fn enter_at(&self, merchant: &str, now: Instant) -> Result<Pass, Deferral> {
        let mut map = self.merchants.lock().expect("gate lock");
        let st = map.entry(merchant.to_string()).or_default();
        let mut probe = false;
        if let Some(until) = st.open_until {
            if now < until {
                return Err(Deferral::Open(until - now));
            }
            // Half-open: one probe at a time.
            if st.probe_in_flight {
                return Err(Deferral::Open(self.policy.busy_wait));
            }
            probe = true;
        }
        if st.in_flight >= self.policy.max_in_flight {
            return Err(Deferral::Busy(self.policy.busy_wait));
        }
        st.in_flight += 1;
        st.probe_in_flight |= probe;
        Ok(Pass {
            merchant: merchant.to_string(),
            probe,
            policy: self.policy,
            merchants: self.merchants.clone(),
            finished: false,
        })
    }
}

impl Pass {
    /// Records the attempt's outcome for the breaker.
    pub fn finish(mut self, delivered: bool) {
        self.finish_at(delivered, Instant::now());
    }

    fn finish_at(&mut self, delivered: bool, now: Instant) {
        self.finished = true;
        let mut map = self.merchants.lock().expect("gate lock");
        let st = map.entry(self.merchant.clone()).or_default();
        st.in_flight = st.in_flight.saturating_sub(1);
        if self.probe {
            st.probe_in_flight = false;
        }
        if delivered {
            st.consecutive_failures = 0;
            st.open_until = None;
            st.next_open_for = None;
            return;
        }
        st.consecutive_failures += 1;
        // Deliveries that were already under way when the breaker opened report their failures
        // late: they must not extend (or double) the opening; only a failed probe does.
        let already_open = st.open_until.is_some_and(|until| now < until);
        if self.probe || (!already_open && st.consecutive_failures >= self.policy.failures_to_open)
        {
            let open_for = st.next_open_for.unwrap_or(self.policy.open_for);
            st.open_until = Some(now + open_for);
            st.next_open_for = Some((open_for * 2).min(self.policy.max_open));
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if !self.finished {
            let mut map = self.merchants.lock().expect("gate lock");
            if let Some(st) = map.get_mut(&self.merchant) {
                st.in_flight = st.in_flight.saturating_sub(1);
                if self.probe {
                    st.probe_in_flight = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> MerchantGate {
        MerchantGate::new(GatePolicy {
            max_in_flight: 2,
            failures_to_open: 3,
            open_for: Duration::from_secs(10),
            max_open: Duration::from_secs(25),
            busy_wait: Duration::from_secs(1),
        })
    }

    #[test]
    fn bounds_concurrent_deliveries_per_merchant_only() {
        let g = gate();
        let t = Instant::now();
        let a = g.enter_at("slow", t).unwrap();
        let _b = g.enter_at("slow", t).unwrap();
        assert_eq!(
            g.enter_at("slow", t).unwrap_err(),
            Deferral::Busy(Duration::from_secs(1))
        );
        assert!(
            g.enter_at("other", t).is_ok(),
            "other merchants are not affected"
        );
        drop(a);
        assert!(
            g.enter_at("slow", t).is_ok(),
            "a dropped pass frees its slot"
        );
    }

    #[test]
    fn opens_after_consecutive_failures_probes_and_backs_off() {
        let g = gate();
        let t0 = Instant::now();
        for _ in 0..3 {
            g.enter_at("down", t0).unwrap().finish_at(false, t0);
        }
        assert_eq!(
            g.enter_at("down", t0).unwrap_err(),
            Deferral::Open(Duration::from_secs(10))
        );
        // After the cool-down, one probe; a second waits for it.
        let t1 = t0 + Duration::from_secs(10);
        let mut probe = g.enter_at("down", t1).unwrap();
        assert!(matches!(g.enter_at("down", t1), Err(Deferral::Open(_))));
        // The probe fails: open again, twice as long.
        probe.finish_at(false, t1);
        drop(probe);
        assert_eq!(
            g.enter_at("down", t1).unwrap_err(),
            Deferral::Open(Duration::from_secs(20))
        );
        // Doubling stops at max_open.
        let t2 = t1 + Duration::from_secs(20);
        g.enter_at("down", t2).unwrap().finish_at(false, t2);
        assert_eq!(
            g.enter_at("down", t2).unwrap_err(),
            Deferral::Open(Duration::from_secs(25))
        );
        // A successful probe closes it.
        let t3 = t2 + Duration::from_secs(25);
        g.enter_at("down", t3).unwrap().finish_at(true, t3);
        assert!(g.enter_at("down", t3).is_ok());
        assert!(g.enter_at("down", t3).is_ok());
    }

    #[test]
    fn late_failures_of_deliveries_in_flight_do_not_extend_the_opening() {
        let g = gate();
        let t0 = Instant::now();
        // Two deliveries go out, then three failures open the breaker ...
        let mut late_a = g.enter_at("down", t0).unwrap();
        let mut late_b = g.enter_at("down", t0).unwrap();
        late_a.finish_at(false, t0);
        late_b.finish_at(false, t0);
        drop((late_a, late_b));
        g.enter_at("down", t0).unwrap().finish_at(false, t0);
        assert_eq!(
            g.enter_at("down", t0).unwrap_err(),
            Deferral::Open(Duration::from_secs(10))
        );
        // ... and a delivery that was in flight before it opened fails afterwards: the
        // opening stays 10 s, it is not doubled.
        let t1 = t0 + Duration::from_secs(1);
        let mut st = g.merchants.lock().unwrap();
        st.get_mut("down").unwrap().in_flight += 1;
        drop(st);
        let mut in_flight = Pass {
            merchant: "down".into(),
            probe: false,
            policy: g.policy,
            merchants: g.merchants.clone(),
            finished: false,
        };
        in_flight.finish_at(false, t1);
        assert_eq!(
            g.enter_at("down", t1).unwrap_err(),
            Deferral::Open(Duration::from_secs(9))
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let g = gate();
        let t = Instant::now();
        g.enter_at("m", t).unwrap().finish_at(false, t);
        g.enter_at("m", t).unwrap().finish_at(false, t);
        g.enter_at("m", t).unwrap().finish_at(true, t);
        g.enter_at("m", t).unwrap().finish_at(false, t);
        assert!(
            g.enter_at("m", t).is_ok(),
            "one failure after a success is not a trend"
        );
    }
}

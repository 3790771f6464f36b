//! Isolation between merchants for callbacks: a bound on concurrent deliveries per merchant and
//! a per-merchant circuit breaker, so a slow or dead endpoint only ever holds a bounded share of
//! the delivery workers. A delivery that may not go now is deferred (not attempted, not
//! counted), and the Notification workflow waits for the merchant while the worker slot serves
//! other merchants.
//!
//! Waiting must cost the Temporal server nothing, or a dead merchant's backlog slows every
//! merchant down (issue 5's benchmark: 400 events polling a busy merchant cost more server work
//! than all the healthy events together). So deferred deliveries wait in line here, per
//! merchant, by workflow id: when a slot frees (or a probe closes the breaker) the gate wakes
//! the next in line through [`MerchantGate::take_wakes`] (the worker signals that workflow),
//! and holds the freed slot for it for [`WAKE_HOLD`]. Each waiting workflow also sleeps on a
//! long fallback timer, for wakes that are lost (a worker restarted, another worker's gate).
//!
//! The breaker opens after `failures_to_open` consecutive failed attempts, for a cool-down that
//! doubles on each failed probe up to `max_open`; after the cool-down one delivery probes
//! (half-open) and its outcome closes or re-opens the breaker. State is in memory per worker
//! process: each worker protects its own slots, which is what the bound is for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    pub max_in_flight: u32,
    pub failures_to_open: u32,
    pub open_for: Duration,
    pub max_open: Duration,
    /// How long a delivery deferred by the concurrency bound sleeps when no wake comes first
    /// (normally the gate wakes it as soon as the merchant has room).
    pub busy_wait: Duration,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            max_in_flight: 4,
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
            max_open: Duration::from_secs(600),
            busy_wait: Duration::from_secs(30),
        }
    }
}

/// How long a freed slot is kept for the delivery woken to take it.
pub const WAKE_HOLD: Duration = Duration::from_secs(10);

/// At most this many deliveries wait in line per merchant; more sleep on their timers only.
const MAX_LINE: usize = 10_000;

#[derive(Debug, Default)]
struct MerchantState {
    in_flight: u32,
    consecutive_failures: u32,
    /// Open until then; `None`: closed.
    open_until: Option<Instant>,
    /// How long the next opening lasts (doubles on failed probes).
    next_open_for: Option<Duration>,
    probe_in_flight: bool,
    /// Deferred deliveries (workflow ids) in the order they were deferred. An id leaves
    /// `queued` when it is woken or gets in by itself; stale entries in `line` are skipped.
    line: VecDeque<String>,
    queued: HashSet<String>,
    /// Woken and expected back: each holds a slot until it comes or [`WAKE_HOLD`] passes.
    woken: HashMap<String, Instant>,
}

impl MerchantState {
    fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    fn half_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now >= until)
    }

    /// Slots in use or held for a woken delivery.
    fn taken(&self) -> u32 {
        self.in_flight + self.woken.len() as u32
    }

    fn queue(&mut self, waiter: &str) {
        if self.queued.len() < MAX_LINE && self.queued.insert(waiter.to_string()) {
            self.line.push_back(waiter.to_string());
        }
    }

    /// Wakes as many of the line as the merchant has room for: none while the breaker is
    /// open (the timers wait for the cool-down), one to probe when it is half-open.
    fn wake(&mut self, policy: &GatePolicy, now: Instant, wakes: &UnboundedSender<String>) {
        self.woken
            .retain(|_, at| now.duration_since(*at) < WAKE_HOLD);
        let mut room = if self.is_open(now) {
            0
        } else if self.half_open(now) {
            u32::from(!self.probe_in_flight && self.woken.is_empty())
        } else {
            policy.max_in_flight.saturating_sub(self.taken())
        };
        while room > 0 {
            let Some(id) = self.line.pop_front() else {
                break;
            };
            if self.queued.remove(&id) {
                // A closed receiver (no worker signalling) only means the timers wake them.
                tracing::debug!(workflow_id = %id, "gate: wake the next in line");
                let _ = wakes.send(id.clone());
                self.woken.insert(id, now);
                room -= 1;
            }
        }
    }
}

/// Why a delivery must wait, and for how long at most.
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

type Merchants = Arc<Mutex<HashMap<String, MerchantState>>>;

#[derive(Debug)]
pub struct MerchantGate {
    policy: GatePolicy,
    merchants: Merchants,
    wakes: UnboundedSender<String>,
    wakes_rx: Mutex<Option<UnboundedReceiver<String>>>,
}

impl Default for MerchantGate {
    fn default() -> Self {
        MerchantGate::new(GatePolicy::default())
    }
}

/// The right to make one delivery; report its outcome with [`Pass::finish`]. Dropped without
/// finishing (a panic, a cancelled activity), it frees the slot and counts as nothing.
#[derive(Debug)]
pub struct Pass {
    merchant: String,
    probe: bool,
    policy: GatePolicy,
    merchants: Merchants,
    wakes: UnboundedSender<String>,
    finished: bool,
}

impl MerchantGate {
    pub fn new(policy: GatePolicy) -> Self {
        let (wakes, rx) = unbounded_channel();
        MerchantGate {
            policy,
            merchants: Arc::default(),
            wakes,
            wakes_rx: Mutex::new(Some(rx)),
        }
    }

    pub fn policy(&self) -> GatePolicy {
        self.policy
    }

    /// The workflow ids to wake, in order, as the merchants they wait for get room. The
    /// worker takes it once and signals each; without a taker the waiting rely on their timers.
    pub fn take_wakes(&self) -> Option<UnboundedReceiver<String>> {
        self.wakes_rx.lock().expect("gate lock").take()
    }

    /// Asks to deliver to `merchant` now. `waiter` (the delivering workflow's id) is put in
    /// the merchant's line when the answer is to wait, and woken when its turn comes.
    pub fn enter(&self, merchant: &str, waiter: Option<&str>) -> Result<Pass, Deferral> {
        self.enter_at(merchant, waiter, Instant::now())
    }

    fn enter_at(
        &self,
        merchant: &str,
        waiter: Option<&str>,
        now: Instant,
    ) -> Result<Pass, Deferral> {
        let mut map = self.merchants.lock().expect("gate lock");
        let st = map.entry(merchant.to_string()).or_default();
        st.woken.retain(|_, at| now.duration_since(*at) < WAKE_HOLD);
        // A woken delivery comes for the slot held for it; it is no longer in line either way.
        let held = waiter.is_some_and(|w| st.woken.remove(w).is_some());
        let deferral = Self::admit(&self.policy, st, now);
        match deferral {
            Some(deferral) => {
                tracing::debug!(
                    merchant,
                    waiter,
                    held,
                    ?deferral,
                    in_flight = st.in_flight,
                    woken = st.woken.len(),
                    "gate: deferred"
                );
                if let Some(w) = waiter {
                    st.queue(w);
                }
                // A held slot given back (its delivery was turned away) goes to the next.
                if held {
                    st.wake(&self.policy, now, &self.wakes);
                }
                Err(deferral)
            }
            None => {
                if let Some(w) = waiter {
                    st.queued.remove(w);
                }
                let probe = st.half_open(now);
                tracing::debug!(
                    merchant,
                    waiter,
                    held,
                    probe,
                    in_flight = st.in_flight,
                    "gate: admitted"
                );
                st.in_flight += 1;
                st.probe_in_flight |= probe;
                Ok(Pass {
                    merchant: merchant.to_string(),
                    probe,
                    policy: self.policy,
                    merchants: self.merchants.clone(),
                    wakes: self.wakes.clone(),
                    finished: false,
                })
            }
        }
    }

    /// Whether a delivery may go now (`None`) or must wait. Slots held for woken deliveries
    /// count as taken, so newcomers do not overtake the line.
    fn admit(policy: &GatePolicy, st: &MerchantState, now: Instant) -> Option<Deferral> {
        if let Some(until) = st.open_until {
            if now < until {
                return Some(Deferral::Open(until - now));
            }
            // Half-open: one probe at a time.
            if st.probe_in_flight {
                return Some(Deferral::Open(policy.busy_wait));
            }
        }
        (st.taken() >= policy.max_in_flight).then_some(Deferral::Busy(policy.busy_wait))
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
        } else {
            st.consecutive_failures += 1;
            // Deliveries that were already under way when the breaker opened report their
            // failures late: they must not extend (or double) the opening; only a failed probe
            // does.
            let already_open = st.is_open(now);
            if self.probe
                || (!already_open && st.consecutive_failures >= self.policy.failures_to_open)
            {
                let open_for = st.next_open_for.unwrap_or(self.policy.open_for);
                st.open_until = Some(now + open_for);
                st.next_open_for = Some((open_for * 2).min(self.policy.max_open));
            }
        }
        st.wake(&self.policy, now, &self.wakes);
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if !self.finished {
            let now = Instant::now();
            let mut map = self.merchants.lock().expect("gate lock");
            if let Some(st) = map.get_mut(&self.merchant) {
                st.in_flight = st.in_flight.saturating_sub(1);
                if self.probe {
                    st.probe_in_flight = false;
                }
                st.wake(&self.policy, now, &self.wakes);
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
        let a = g.enter_at("slow", None, t).unwrap();
        let _b = g.enter_at("slow", None, t).unwrap();
        assert_eq!(
            g.enter_at("slow", None, t).unwrap_err(),
            Deferral::Busy(Duration::from_secs(1))
        );
        assert!(
            g.enter_at("other", None, t).is_ok(),
            "other merchants are not affected"
        );
        drop(a);
        assert!(
            g.enter_at("slow", None, t).is_ok(),
            "a dropped pass frees its slot"
        );
    }

    #[test]
    fn opens_after_consecutive_failures_probes_and_backs_off() {
        let g = gate();
        let t0 = Instant::now();
        for _ in 0..3 {
            g.enter_at("down", None, t0).unwrap().finish_at(false, t0);
        }
        assert_eq!(
            g.enter_at("down", None, t0).unwrap_err(),
            Deferral::Open(Duration::from_secs(10))
        );
        // After the cool-down, one probe; a second waits for it.
        let t1 = t0 + Duration::from_secs(10);
        let mut probe = g.enter_at("down", None, t1).unwrap();
        assert!(matches!(
            g.enter_at("down", None, t1),
            Err(Deferral::Open(_))
        ));
        // The probe fails: open again, twice as long.
        probe.finish_at(false, t1);
        drop(probe);
        assert_eq!(
            g.enter_at("down", None, t1).unwrap_err(),
            Deferral::Open(Duration::from_secs(20))
        );
        // Doubling stops at max_open.
        let t2 = t1 + Duration::from_secs(20);
        g.enter_at("down", None, t2).unwrap().finish_at(false, t2);
        assert_eq!(
            g.enter_at("down", None, t2).unwrap_err(),
            Deferral::Open(Duration::from_secs(25))
        );
        // A successful probe closes it.
        let t3 = t2 + Duration::from_secs(25);
        g.enter_at("down", None, t3).unwrap().finish_at(true, t3);
        assert!(g.enter_at("down", None, t3).is_ok());
        assert!(g.enter_at("down", None, t3).is_ok());
    }

    #[test]
    fn late_failures_of_deliveries_in_flight_do_not_extend_the_opening() {
        let g = gate();
        let t0 = Instant::now();
        // Two deliveries go out, then three failures open the breaker ...
        let mut late_a = g.enter_at("down", None, t0).unwrap();
        let mut late_b = g.enter_at("down", None, t0).unwrap();
        late_a.finish_at(false, t0);
        late_b.finish_at(false, t0);
        drop((late_a, late_b));
        g.enter_at("down", None, t0).unwrap().finish_at(false, t0);
        assert_eq!(
            g.enter_at("down", None, t0).unwrap_err(),
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
            wakes: g.wakes.clone(),
            finished: false,
        };
        in_flight.finish_at(false, t1);
        assert_eq!(
            g.enter_at("down", None, t1).unwrap_err(),
            Deferral::Open(Duration::from_secs(9))
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let g = gate();
        let t = Instant::now();
        g.enter_at("m", None, t).unwrap().finish_at(false, t);
        g.enter_at("m", None, t).unwrap().finish_at(false, t);
        g.enter_at("m", None, t).unwrap().finish_at(true, t);
        g.enter_at("m", None, t).unwrap().finish_at(false, t);
        assert!(
            g.enter_at("m", None, t).is_ok(),
            "one failure after a success is not a trend"
        );
    }

    fn drain(rx: &mut UnboundedReceiver<String>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn the_deferred_are_woken_in_line_as_slots_free_and_newcomers_do_not_overtake() {
        let g = gate();
        let mut wakes = g.take_wakes().unwrap();
        assert!(g.take_wakes().is_none(), "one taker");
        let t = Instant::now();
        let a = g.enter_at("m", Some("wa"), t).unwrap();
        let b = g.enter_at("m", Some("wb"), t).unwrap();
        for w in ["w1", "w2", "w3"] {
            assert!(matches!(
                g.enter_at("m", Some(w), t),
                Err(Deferral::Busy(_))
            ));
        }
        // Deferred twice, still one place in line.
        assert!(g.enter_at("m", Some("w1"), t).is_err());
        assert!(
            drain(&mut wakes).is_empty(),
            "nobody is woken while the slots are taken"
        );
        a.finish_at_for_test(true, t);
        assert_eq!(drain(&mut wakes), ["w1"]);
        // The freed slot is held for w1: a newcomer waits, w1 gets in.
        assert!(matches!(
            g.enter_at("m", Some("new"), t),
            Err(Deferral::Busy(_))
        ));
        let w1 = g.enter_at("m", Some("w1"), t).unwrap();
        drop(b);
        assert_eq!(
            drain(&mut wakes),
            ["w2"],
            "a dropped pass wakes the next too"
        );
        w1.finish_at_for_test(true, t);
        assert_eq!(drain(&mut wakes), ["w3"]);
        let _w2 = g.enter_at("m", Some("w2"), t).unwrap();
        let _w3 = g.enter_at("m", Some("w3"), t).unwrap();
        assert_eq!(
            g.merchants.lock().unwrap()["m"]
                .line
                .iter()
                .collect::<Vec<_>>(),
            ["new"]
        );
    }

    #[test]
    fn a_held_slot_lapses_when_its_delivery_does_not_come() {
        let g = gate();
        let mut wakes = g.take_wakes().unwrap();
        let t = Instant::now();
        let a = g.enter_at("m", None, t).unwrap();
        let _b = g.enter_at("m", None, t).unwrap();
        assert!(g.enter_at("m", Some("gone"), t).is_err());
        a.finish_at_for_test(true, t);
        assert_eq!(drain(&mut wakes), ["gone"]);
        assert!(g.enter_at("m", None, t + WAKE_HOLD / 2).is_err());
        assert!(g.enter_at("m", None, t + WAKE_HOLD).is_ok());
    }

    #[test]
    fn an_open_breaker_wakes_nobody_and_a_good_probe_wakes_as_many_as_have_room() {
        let g = gate();
        let mut wakes = g.take_wakes().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            g.enter_at("down", None, t0).unwrap().finish_at(false, t0);
        }
        for w in ["w1", "w2", "w3"] {
            assert!(matches!(
                g.enter_at("down", Some(w), t0),
                Err(Deferral::Open(_))
            ));
        }
        assert!(drain(&mut wakes).is_empty());
        // The cool-down is over; a waiter whose timer fired first probes, the others wait.
        let t1 = t0 + Duration::from_secs(10);
        let probe = g.enter_at("down", Some("w2"), t1).unwrap();
        assert!(matches!(
            g.enter_at("down", Some("late"), t1),
            Err(Deferral::Open(_))
        ));
        probe.finish_at_for_test(true, t1);
        assert_eq!(drain(&mut wakes), ["w1", "w3"], "closed: room for two");
        // A failed probe re-opens it and wakes nobody.
        let g = gate();
        let mut wakes = g.take_wakes().unwrap();
        for _ in 0..3 {
            g.enter_at("down", None, t0).unwrap().finish_at(false, t0);
        }
        assert!(g.enter_at("down", Some("w1"), t0).is_err());
        g.enter_at("down", None, t1).unwrap().finish_at(false, t1);
        assert!(drain(&mut wakes).is_empty());
    }

    impl Pass {
        fn finish_at_for_test(mut self, delivered: bool, now: Instant) {
            self.finish_at(delivered, now);
        }
    }
}

//! Retry timing as data: a schedule of waits and a pure `next_delay`.

use std::time::Duration;

/// Merchant callback retries by default: 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h,
/// 3h, 3h, 6h, 6h (15 retries after the first attempt).
pub const DEFAULT_NOTIFY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600,
];

/// The wait before retry number `retry` (0-based) of a cycle, or `None` when the schedule is
/// exhausted. Waits are clamped to at least 1 ms and at most a day.
pub fn next_delay(schedule_ms: &[u64], retry: usize) -> Option<Duration> {
    schedule_ms.get(retry).map(|ms| {
        Duration::from_millis((*ms).clamp(1, crate::notification::MAX_DELAY.as_millis() as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_the_schedule_then_stops() {
        let s: Vec<u64> = DEFAULT_NOTIFY_SCHEDULE_SECS
            .iter()
            .map(|s| s * 1000)
            .collect();
        assert_eq!(next_delay(&s, 0), Some(Duration::from_secs(15)));
        assert_eq!(next_delay(&s, 3), Some(Duration::from_secs(180)));
        assert_eq!(next_delay(&s, 14), Some(Duration::from_secs(21600)));
        assert_eq!(next_delay(&s, 15), None);
        assert_eq!(next_delay(&[], 0), None);
        assert_eq!(next_delay(&[0], 0), Some(Duration::from_millis(1)));
    }
}

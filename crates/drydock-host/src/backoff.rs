//! Jittered, doubling retry delays with a cap: how the clients reconnect to a service
//! that is away, without synchronising every node of a fleet.

use std::time::Duration;

/// Doubling backoff from `base` up to `max`, with "equal jitter": each delay is half the
/// nominal value plus a random part of the other half.
#[derive(Debug, Clone)]
#[must_use]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// A backoff starting at `base`, never above `max`. `seed` makes the jitter
    /// reproducible (use something per node, like the boot id's hash).
    pub fn new(base: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
            seed: seed | 1,
        }
    }

    /// The nominal (unjittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, and advance.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        // xorshift64: small, deterministic, good enough for spreading retries.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = nominal / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if jitter_nanos == 0 {
            0
        } else {
            self.seed % jitter_nanos
        };
        self.attempt = self.attempt.saturating_add(1);
        half + Duration::from_nanos(jitter)
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_half_to_full() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 42);
        let nominal: Vec<u128> = (0..7)
            .map(|_| {
                let n = b.nominal();
                let d = b.next_delay();
                assert!(d >= n / 2 && d <= n, "{d:?} outside [{:?}, {n:?}]", n / 2);
                n.as_millis()
            })
            .collect();
        assert_eq!(nominal, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.nominal(), Duration::from_millis(100));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn different_seeds_spread_the_retries() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 2);
        let da: Vec<Duration> = (0..5).map(|_| a.next_delay()).collect();
        let db: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_ne!(da, db);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 7);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}

//! Fault injection for `drydockctl demo --chaos SEED`: which faults a run injects, in
//! which order and when, all drawn from the seed, so a run that found a problem is
//! reproduced by running the same seed again.
//!
//! Every run injects each kind of fault once, in a seeded order and at seeded moments
//! after the release; targets (which agent, which node) are drawn from the same
//! generator when the fault fires.

use std::time::Duration;

/// SplitMix64: small, fast, and the same sequence for the same seed on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi.saturating_sub(lo) + 1))
    }
}

/// A fault the chaos run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL the leading operator replica; it is started again a moment later.
    KillLeader,
    /// SIGKILL a node's agent; it is started again after a few seconds.
    KillAgent,
    /// Hold a node drydock is rebooting or verifying NotReady for a few seconds.
    NodeNotReady,
    /// SIGKILL the API server and start it again.
    RestartApiServer,
    /// Freeze a node's host at its next power-off for longer than `readyTimeout`.
    DelayReboot,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 5] = [
        Fault::KillLeader,
        Fault::KillAgent,
        Fault::NodeNotReady,
        Fault::RestartApiServer,
        Fault::DelayReboot,
    ];

    /// The name in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillAgent => "kill-agent",
            Fault::NodeNotReady => "node-not-ready",
            Fault::RestartApiServer => "restart-apiserver",
            Fault::DelayReboot => "delay-reboot",
        }
    }
}

/// The run's schedule: each kind once, in a seeded order, the first 2–4 s after the
/// release and the next ones 3–6 s apart (offsets from the release), so every fault
/// lands while a small fleet is still rolling.
pub fn schedule(rng: &mut Rng) -> Vec<(Duration, Fault)> {
    let mut kinds = Fault::ALL.to_vec();
    // Fisher–Yates.
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i + 1);
        kinds.swap(i, j);
    }
    let mut at = rng.millis(2_000, 4_000);
    let mut out = Vec::new();
    for k in kinds {
        out.push((at, k));
        at += rng.millis(3_000, 6_000);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_every_time_and_every_kind_once() {
        let a = schedule(&mut Rng::new(7));
        assert_eq!(a, schedule(&mut Rng::new(7)));
        assert_ne!(a, schedule(&mut Rng::new(8)));
        let mut kinds: Vec<Fault> = a.iter().map(|(_, k)| *k).collect();
        kinds.sort();
        assert_eq!(kinds, Fault::ALL.to_vec());
        assert!(
            a.windows(2)
                .all(|w| w[1].0 >= w[0].0 + Duration::from_secs(3))
        );
        assert!(a[0].0 >= Duration::from_secs(2) && a[0].0 <= Duration::from_secs(4));
        // The first numbers of seed 0 are SplitMix64's published ones.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    }
}

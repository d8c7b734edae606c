//! When a node's new wording is written, while it waits or while its drain goes on.
//!
//! What a node that stays in one phase shows — its reason's code and sentence — follows
//! the fleet: a queued node is held back by the pool's limit one moment and by a budget
//! the next, a draining node waits for five pods to terminate, then four. Each change
//! written is a node patch, and most last seconds. So a node whose phase does not change
//! and whose new reason only follows the fleet, as did the old one or the action that
//! began the phase ([`ReasonCode::is_fleet_flicker`]), gets the new one written only once it has held for
//! [`SETTLE`]; a change of phase, a node's first reason, anything that carries a command
//! to the agent and any other reason (a halt, a pause, a window) are written at once.
//! A drain under way whose sentence alone changes as its pods go ("5 pod(s) left to
//! evict", then 4, with the same code) is held the same way: its evictions go out at
//! once, only its node patch waits. A flicker shorter than [`SETTLE`] is never written.
//! Only the leader's memory holds this: a new leader starts the count again.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::Duration;

use drydock_core::planner::Reason;
use tokio::time::Instant;

#[cfg(doc)]
use drydock_core::planner::ReasonCode;

/// How long a waiting node's new reason must hold before it is written.
pub const SETTLE: Duration = Duration::from_secs(10);

/// The new reasons seen and not yet written, by node.
#[derive(Debug, Default)]
pub struct Settling {
    /// Node name → fingerprint of the reason seen and when it was first seen.
    seen: HashMap<String, (u64, Instant)>,
    /// Nodes asked about in the current pass.
    asked: HashSet<String>,
    hasher: std::collections::hash_map::RandomState,
}

impl Settling {
    /// Whether `node`'s new reason (`code`, `message`) may be written `now`: `Ok` when it
    /// has held for [`SETTLE`], else `Err` with when it will have.
    pub fn ready(
        &mut self,
        node: &str,
        code: &str,
        message: &str,
        now: Instant,
    ) -> Result<(), Instant> {
        let fp = self.hasher.hash_one((code, message));
        self.asked.insert(node.to_string());
        match self.seen.get(node) {
            Some(&(f, since)) if f == fp => {
                if now.saturating_duration_since(since) >= SETTLE {
                    self.seen.remove(node);
                    Ok(())
                } else {
                    Err(since + SETTLE)
                }
            }
            _ => {
                self.seen.insert(node.to_string(), (fp, now));
                Err(now + SETTLE)
            }
        }
    }

    /// [`Self::ready`] for a planner's reason, now: whether it must still wait, with
    /// `wake` brought forward to when it will have held.
    pub fn holds(&mut self, node: &str, reason: &Reason, wake: &mut Option<Instant>) -> bool {
        match self.ready(node, reason.code.as_str(), &reason.message, Instant::now()) {
            Ok(()) => false,
            Err(at) => {
                *wake = Some(wake.map_or(at, |t| t.min(at)));
                true
            }
        }
    }

    /// Ends a pass: forgets the nodes not asked about in it (their reason changed back,
    /// their phase changed, or they are gone).
    pub fn end_pass(&mut self) {
        let asked = std::mem::take(&mut self.asked);
        self.seen.retain(|node, _| asked.contains(node));
    }

    /// How many nodes have a new reason waiting to settle.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no node has a new reason waiting to settle.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_written_once_it_has_held_for_the_settle_time() {
        let mut s = Settling::default();
        let t0 = Instant::now();
        assert_eq!(s.ready("a", "PdbBlocked", "PDB x", t0), Err(t0 + SETTLE));
        s.end_pass();
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(s.ready("a", "PdbBlocked", "PDB x", t1), Err(t0 + SETTLE));
        s.end_pass();
        assert_eq!(s.ready("a", "PdbBlocked", "PDB x", t0 + SETTLE), Ok(()));
        s.end_pass();
        assert!(s.is_empty(), "a written reason is forgotten");
    }

    #[test]
    fn a_reason_that_must_wait_brings_the_wake_forward_to_when_it_will_have_held() {
        let mut s = Settling::default();
        let reason = Reason {
            code: drydock_core::planner::ReasonCode::DrainInProgress,
            message: "2 pod(s) left to evict: a, b".into(),
        };
        let before = Instant::now();
        let far = before + Duration::from_secs(3600);
        let mut wake = Some(far);
        assert!(s.holds("a", &reason, &mut wake));
        let at = wake.expect("a wake");
        assert!(at >= before + SETTLE && at < far, "{at:?}");
        let mut none = None;
        assert!(s.holds("a", &reason, &mut none), "not yet held for SETTLE");
        assert_eq!(none, Some(at), "counted from when it was first seen");
    }

    #[test]
    fn a_flicker_restarts_the_count_and_a_reason_gone_is_forgotten() {
        let mut s = Settling::default();
        let t0 = Instant::now();
        let _ = s.ready("a", "PdbBlocked", "PDB x", t0);
        let _ = s.ready("b", "PdbBlocked", "PDB x", t0);
        s.end_pass();
        // a's reason changed again before it settled: counted from now.
        let t1 = t0 + Duration::from_secs(8);
        assert_eq!(s.ready("a", "PoolAtCapacity", "pool", t1), Err(t1 + SETTLE));
        s.end_pass();
        // b was not asked about (its old reason came back, or its phase changed).
        assert_eq!(s.len(), 1);
        let t2 = t0 + SETTLE;
        assert_eq!(s.ready("a", "PoolAtCapacity", "pool", t2), Err(t1 + SETTLE));
        assert_eq!(s.ready("b", "PdbBlocked", "PDB x", t2), Err(t2 + SETTLE));
    }
}

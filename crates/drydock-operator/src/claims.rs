//! Who may write a node now: the passes, which plan the whole fleet on a reading taken
//! at their start, or the steps, which follow one node's own reboot as its watch events
//! come (`planner::step`).
//!
//! Both write a node's operator state with server-side apply and no precondition, so two
//! writers on one node must not each act on what they read: a pass that planned on the
//! node before a step marked it Rebooting or Done would write its stale action over the
//! step's. So every write claims its node first, and is refused when:
//!
//! - the node is being written by the other side right now;
//! - for a pass: a step wrote the node after the pass took its reading (the pass planned
//!   on what the node was before); the next pass, which reads the step's write, decides;
//! - for a step: the leader's latest write on the node is one the node cache has not seen
//!   yet, or one whose outcome is unknown (it failed: it may have taken effect); the step
//!   would decide on what the node was before it. The write's own watch event brings the
//!   node back to the steps once the cache has it.
//!
//! A step's writes are handed to the next pass, with the pass's reading point, in one
//! move ([`Claims::pass_starts`]), so a pass either reads a step's write or is refused
//! the node.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::slim::FleetNode;

/// Which side claims a node, with what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A pass whose reading was taken at `since` ([`Claims::pass_starts`]).
    Pass {
        /// The pass's reading point.
        since: u64,
    },
    /// A step, decided on the node cache's reading at this resource version.
    Step {
        /// The cache's version of the node; None when it is not a comparable integer.
        cache_rv: Option<u64>,
    },
}

/// The leader's writes per node while they matter, and who is writing which node now.
#[derive(Debug, Default)]
pub struct Claims {
    inner: Mutex<Inner>,
    /// Poked when a step frees a slot (its node Done, Held or Failed): only a pass can
    /// give the slot to the next node, so the next pass starts as soon as it can.
    pub freed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Counts writes: a write's tick orders it against the passes' reading points.
    tick: u64,
    nodes: HashMap<String, Entry>,
    /// Steps' writes the passes have not taken yet.
    stepped: Vec<FleetNode>,
}

#[derive(Debug, Default)]
struct Entry {
    busy: bool,
    /// The version the leader's latest write made; None when its outcome is unknown.
    rv: Option<u64>,
    /// When the latest write was made, and whether a step made it.
    tick: u64,
    by_step: bool,
}

/// A node claimed for one write; let go when dropped, recorded by [`Claim::written`].
#[derive(Debug)]
pub struct Claim<'a> {
    claims: &'a Claims,
    name: String,
    writer: Writer,
    recorded: bool,
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The lock guards plain bookkeeping that no panic leaves half done.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pass takes its reading now: returns its reading point and the steps' writes
    /// since the last pass (to read in place of the cache's older readings).
    pub fn pass_starts(&self) -> (u64, Vec<FleetNode>) {
        let mut inner = self.lock();
        let stepped = std::mem::take(&mut inner.stepped);
        (inner.tick, stepped)
    }

    /// Claims `name` for one write by `writer`, or None when it must not write it (see
    /// the module documentation).
    pub fn claim(&self, name: &str, writer: Writer) -> Option<Claim<'_>> {
        let mut inner = self.lock();
        let entry = inner.nodes.entry(name.to_string()).or_default();
        if entry.busy {
            return None;
        }
        let refused = match writer {
            Writer::Pass { since } => entry.by_step && entry.tick > since,
            Writer::Step { cache_rv } => {
                entry.tick > 0
                    && match (entry.rv, cache_rv) {
                        (Some(written), Some(cached)) => written > cached,
                        _ => true,
                    }
            }
        };
        if refused {
            return None;
        }
        entry.busy = true;
        Some(Claim {
            claims: self,
            name: name.to_string(),
            writer,
            recorded: false,
        })
    }

    /// Forgets what no claim can be refused for any more: nodes not being written whose
    /// latest write was before `since` (the current pass's reading point) and the cache
    /// has seen (`cached_rv` gives the cache's version of a node, None when it has none).
    pub fn forget_seen(&self, since: u64, cached_rv: impl Fn(&str) -> Option<u64>) {
        let mut inner = self.lock();
        inner.nodes.retain(|name, e| {
            if e.busy || e.tick > since {
                return true;
            }
            match (e.rv, cached_rv(name)) {
                (Some(written), Some(cached)) => written > cached,
                // An unknown outcome is kept until a later write settles it, unless the
                // node is gone.
                (None, Some(_)) => true,
                (_, None) => false,
            }
        });
    }

    /// How many nodes the ledger keeps.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Whether it keeps none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Claim<'_> {
    /// Records the write's outcome: the node as written (with its version), or None when
    /// it failed and whether it took effect is unknown.
    pub fn written(mut self, written: Option<&FleetNode>) {
        self.record(written);
        self.recorded = true;
    }

    /// Ends the claim: the node is free again, its latest write `written` (None: outcome
    /// unknown) counted from a new tick; a step's write is kept for the next pass.
    fn record(&self, written: Option<&FleetNode>) {
        let by_step = matches!(self.writer, Writer::Step { .. });
        let mut inner = self.claims.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if by_step && let Some(n) = written {
            inner.stepped.push(n.clone());
        }
        inner.nodes.insert(
            self.name.clone(),
            Entry {
                busy: false,
                rv: written.and_then(crate::own_writes::version_of),
                tick,
                by_step,
            },
        );
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        // Not recorded (the task was cancelled mid-request): if the request went out,
        // its outcome is unknown.
        self.record(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, rv: &str) -> FleetNode {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "resourceVersion": rv},
        });
        serde_json::from_value(json).expect("a node")
    }

    const CACHE_10: Writer = Writer::Step { cache_rv: Some(10) };

    #[test]
    fn a_pass_is_refused_a_node_a_step_wrote_after_its_reading_and_reads_it_next_time() {
        let c = Claims::default();
        let (since, stepped) = c.pass_starts();
        assert!(stepped.is_empty());
        c.claim("a", CACHE_10)
            .expect("free")
            .written(Some(&node("a", "11")));
        assert!(c.claim("a", Writer::Pass { since }).is_none());
        // Other nodes are the pass's.
        assert!(c.claim("b", Writer::Pass { since }).is_some());
        let (since, stepped) = c.pass_starts();
        assert_eq!(stepped.len(), 1);
        assert!(c.pass_starts().1.is_empty(), "handed over once");
        assert!(c.claim("a", Writer::Pass { since }).is_some());
    }

    #[test]
    fn a_node_being_written_is_refused_to_the_other_side() {
        let c = Claims::default();
        let (since, _) = c.pass_starts();
        let held = c.claim("a", Writer::Pass { since }).expect("free");
        assert!(c.claim("a", CACHE_10).is_none());
        assert!(c.claim("a", Writer::Pass { since }).is_none());
        held.written(Some(&node("a", "12")));
        // The cache has not seen the pass's write yet.
        assert!(c.claim("a", CACHE_10).is_none());
        assert!(c.claim("a", Writer::Step { cache_rv: None }).is_none());
        assert!(c.claim("a", Writer::Step { cache_rv: Some(12) }).is_some());
    }

    #[test]
    fn a_write_of_unknown_outcome_keeps_steps_off_the_node_until_a_later_write() {
        let c = Claims::default();
        let (since, _) = c.pass_starts();
        c.claim("a", Writer::Pass { since })
            .expect("free")
            .written(None);
        assert!(c.claim("a", Writer::Step { cache_rv: Some(99) }).is_none());
        // Dropped unrecorded (cancelled mid-request): also unknown.
        let (since, _) = c.pass_starts();
        drop(c.claim("a", Writer::Pass { since }).expect("free"));
        assert!(c.claim("a", Writer::Step { cache_rv: Some(99) }).is_none());
        let (since, _) = c.pass_starts();
        c.claim("a", Writer::Pass { since })
            .expect("free")
            .written(Some(&node("a", "100")));
        assert!(
            c.claim(
                "a",
                Writer::Step {
                    cache_rv: Some(100)
                }
            )
            .is_some()
        );
        // A step's failed write is not handed to the passes, and the next pass is not
        // refused for it once it reads after it.
        let c = Claims::default();
        c.claim("b", CACHE_10).expect("free").written(None);
        let (since, stepped) = c.pass_starts();
        assert!(stepped.is_empty());
        assert!(c.claim("b", Writer::Pass { since }).is_some());
    }

    #[test]
    fn a_never_written_node_is_free_to_both() {
        let c = Claims::default();
        assert!(c.claim("a", Writer::Step { cache_rv: None }).is_some());
        let (since, _) = c.pass_starts();
        assert!(c.claim("a", Writer::Pass { since }).is_some());
    }

    #[test]
    fn what_the_cache_has_seen_is_forgotten() {
        let c = Claims::default();
        let (since, _) = c.pass_starts();
        c.claim("seen", Writer::Pass { since })
            .expect("free")
            .written(Some(&node("seen", "5")));
        c.claim("unseen", Writer::Pass { since })
            .expect("free")
            .written(Some(&node("unseen", "9")));
        c.claim("unknown", Writer::Pass { since })
            .expect("free")
            .written(None);
        c.claim("gone", Writer::Pass { since })
            .expect("free")
            .written(None);
        let _busy = c.claim("busy", Writer::Pass { since }).expect("free");
        let (since, _) = c.pass_starts();
        c.forget_seen(since, |name| match name {
            "gone" => None,
            _ => Some(5),
        });
        let mut kept: Vec<_> = c.lock().nodes.keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["busy", "unknown", "unseen"]);
    }
}

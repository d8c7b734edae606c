//! Which of the nodes next in line are listed ahead, and which not again.
//!
//! While a pool is full, each pass names the nodes next in line whose pods it has not
//! listed ([`drydock_core::planner::Plan::list_ahead`]), and the leader's lister reads
//! them beside the passes. Passes come every few hundred milliseconds and name the same
//! nodes until a slot frees, so the lister must list each node once: not while its
//! list is under way, and not again for a while after it came back (a pass that planned
//! before the list came names it again). A list that failed is forgotten, so the next
//! pass that names the node has it listed again. Only the leader's memory holds this.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Where a node's list ahead stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Queued or being listed.
    UnderWay,
    /// Listed; its list was asked for at this time.
    Listed(Instant),
}

/// The nodes listed ahead lately or under way, by name.
#[derive(Debug)]
pub struct Ahead {
    nodes: HashMap<String, Listing>,
    /// How long a node listed is not listed again.
    fresh_for: Duration,
}

impl Ahead {
    /// A ledger in which a listed node is not listed again for `fresh_for`.
    pub fn new(fresh_for: Duration) -> Self {
        Ahead {
            nodes: HashMap::new(),
            fresh_for,
        }
    }

    /// Of the nodes a pass `asked` for at `now`, those to list: neither under way nor
    /// listed in the last `fresh_for`, each once, in the order asked. They are under
    /// way from here until [`Ahead::ended`].
    pub fn to_list(&mut self, asked: Vec<String>, now: Instant) -> Vec<String> {
        let fresh_for = self.fresh_for;
        self.nodes.retain(|_, l| match l {
            Listing::UnderWay => true,
            Listing::Listed(at) => now.saturating_duration_since(*at) < fresh_for,
        });
        let mut list = Vec::new();
        for name in asked {
            if !self.nodes.contains_key(&name) {
                self.nodes.insert(name.clone(), Listing::UnderWay);
                list.push(name);
            }
        }
        list
    }

    /// `name`'s list ended: listed, asked for at `asked_at`, or failed (`None`), in which
    /// case the node may be listed at the next ask.
    pub fn ended(&mut self, name: &str, asked_at: Option<Instant>) {
        match asked_at {
            Some(at) => {
                self.nodes.insert(name.to_string(), Listing::Listed(at));
            }
            None => {
                self.nodes.remove(name);
            }
        }
    }

    /// How many nodes are under way or listed lately (what the ledger holds).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ledger holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_is_listed_once_while_under_way_and_for_a_while_after() {
        let t0 = Instant::now();
        let fresh = Duration::from_secs(10);
        let mut a = Ahead::new(fresh);
        // Asked twice in one ask: listed once, in the order asked.
        assert_eq!(
            a.to_list(names(&["n2", "n1", "n2"]), t0),
            names(&["n2", "n1"])
        );
        // The next pass asks again while both are under way: nothing new.
        assert_eq!(a.to_list(names(&["n1", "n2", "n3"]), t0), names(&["n3"]));
        a.ended("n1", Some(t0));
        a.ended("n2", Some(t0 + Duration::from_secs(2)));
        // Listed: not again before `fresh` has passed since each was asked for.
        assert!(
            a.to_list(names(&["n1", "n2"]), t0 + Duration::from_secs(9))
                .is_empty()
        );
        assert_eq!(a.to_list(names(&["n1", "n2"]), t0 + fresh), names(&["n1"]));
        assert_eq!(
            a.to_list(names(&["n2"]), t0 + Duration::from_secs(12)),
            names(&["n2"])
        );
        // n3 is still under way however long it takes.
        assert!(
            a.to_list(names(&["n3"]), t0 + Duration::from_secs(60))
                .is_empty()
        );
    }

    #[test]
    fn a_failed_list_is_listed_at_the_next_ask_and_old_entries_are_forgotten() {
        let t0 = Instant::now();
        let mut a = Ahead::new(Duration::from_secs(10));
        assert_eq!(a.to_list(names(&["n1", "n2"]), t0), names(&["n1", "n2"]));
        a.ended("n1", None);
        a.ended("n2", Some(t0));
        assert_eq!(a.len(), 1, "the failed one is forgotten");
        assert_eq!(a.to_list(names(&["n1", "n2"]), t0), names(&["n1"]));
        a.ended("n1", Some(t0));
        // Any ask after they went stale drops them, asked for or not.
        assert!(
            a.to_list(Vec::new(), t0 + Duration::from_secs(10))
                .is_empty()
        );
        assert!(a.is_empty(), "stale entries are dropped: {a:?}");
    }
}

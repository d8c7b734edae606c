//! The leader's own writes, until its node cache has seen them.
//!
//! A pass plans on the node cache, which a watch fills; the API server sends a write's
//! watch event after it has answered the write, and on a busy server seconds after. A
//! pass that followed its predecessor's writes sooner than the watch would otherwise
//! plan on what the nodes were before those writes: it would count a node whose drain it
//! just started as still queued — a free slot of the pool, over `maxUnavailable` if
//! another node took it — and write again what it had written. So what each write
//! returned (the node as written) is kept and read in place of the cache's older reading,
//! until the cache holds that version or a later one. Versions are compared as the
//! integers they are (Kubernetes' comparable resource versions, KEP-5504, stable since
//! v1.35); a version that is not such an integer is never held newer than the cache.

use std::collections::HashMap;
use std::sync::Arc;

use drydock_core::snapshot::ReadNode;
use kube::ResourceExt;

use crate::slim::FleetNode;

/// A Node's `metadata.resourceVersion` as an integer, when it is one (no sign, no
/// leading zeros, not zero).
pub fn resource_version(rv: &str) -> Option<u64> {
    if rv.is_empty() || rv.starts_with('0') || !rv.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rv.parse().ok()
}

/// `node`'s resource version as an integer ([`resource_version`]), when it has one.
pub fn version_of(node: &FleetNode) -> Option<u64> {
    node.resource_version()
        .as_deref()
        .and_then(resource_version)
}

/// Nodes as the leader last wrote them, by name, with the version each write made.
#[derive(Debug, Default)]
pub struct OwnWrites {
    by_node: HashMap<String, (u64, Arc<ReadNode>)>,
}

impl OwnWrites {
    /// Keeps `written` (a write's reply) until the cache has seen it. A reply without a
    /// comparable version is not kept: the cache's reading is all there is to go on.
    pub fn record(&mut self, written: &FleetNode) {
        let Some(read) = written.read() else {
            return;
        };
        let Some(rv) = version_of(written) else {
            self.by_node.remove(&read.name);
            return;
        };
        match self.by_node.get(&read.name) {
            Some((kept, _)) if *kept >= rv => {}
            _ => {
                self.by_node
                    .insert(read.name.clone(), (rv, Arc::clone(read)));
            }
        }
    }

    /// The newest reading of `cached` (the cache's node): what the leader wrote, if the
    /// cache has not seen that yet, else the cache's own. A write the cache has caught up
    /// with is forgotten.
    pub fn freshest(&mut self, cached: &FleetNode) -> Option<Arc<ReadNode>> {
        let read = cached.read()?;
        let Some((kept, written)) = self.by_node.get(&read.name) else {
            return Some(Arc::clone(read));
        };
        let cache_rv = version_of(cached);
        match cache_rv {
            Some(rv) if rv < *kept => Some(Arc::clone(written)),
            _ => {
                self.by_node.remove(&read.name);
                Some(Arc::clone(read))
            }
        }
    }

    /// Forgets the nodes for which `keep` is false (nodes gone from the cache).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.by_node.retain(|name, _| keep(name));
    }

    /// How many written nodes the cache has not seen yet.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether the cache has seen every write.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(rv: &str, phase: &str) -> FleetNode {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "n1",
                "uid": "u1",
                "resourceVersion": rv,
                "labels": {"drydock.dev/phase": phase},
            },
        });
        serde_json::from_value(json).expect("a Node")
    }

    fn phase(r: &ReadNode) -> String {
        r.state().operator.phase().as_str().to_string()
    }

    #[test]
    fn a_write_is_read_until_the_cache_has_seen_it() {
        let mut w = OwnWrites::default();
        w.record(&node("120", "Draining"));
        // The cache is behind: the write is what the pass reads.
        let r = w.freshest(&node("100", "Queued")).expect("a reading");
        assert_eq!(phase(&r), "Draining");
        assert_eq!(w.len(), 1);
        // The cache has it, or something later: the cache is read, the write forgotten.
        let r = w
            .freshest(&node("125", "RebootGranted"))
            .expect("a reading");
        assert_eq!(phase(&r), "RebootGranted");
        assert!(w.is_empty());
    }

    #[test]
    fn an_older_reply_does_not_replace_a_newer_one() {
        let mut w = OwnWrites::default();
        w.record(&node("130", "RebootGranted"));
        w.record(&node("120", "Draining"));
        let r = w.freshest(&node("100", "Queued")).expect("a reading");
        assert_eq!(phase(&r), "RebootGranted");
    }

    #[test]
    fn versions_that_are_not_integers_leave_the_cache_in_charge() {
        for bad in ["", "0", "007", "12a", "-5", "+5"] {
            assert_eq!(resource_version(bad), None, "{bad:?}");
        }
        assert_eq!(resource_version("18446744073709551615"), Some(u64::MAX));
        assert_eq!(resource_version("18446744073709551616"), None, "over u64");
        let mut w = OwnWrites::default();
        w.record(&node("x1", "Draining"));
        assert!(
            w.is_empty(),
            "a reply without a comparable version is not kept"
        );
        w.record(&node("120", "Draining"));
        let r = w.freshest(&node("x1", "Queued")).expect("a reading");
        assert_eq!(phase(&r), "Queued", "an incomparable cache version wins");
        assert!(w.is_empty());
    }

    #[test]
    fn nodes_gone_are_forgotten() {
        let mut w = OwnWrites::default();
        w.record(&node("120", "Draining"));
        w.retain(|name| name != "n1");
        assert!(w.is_empty());
    }
}

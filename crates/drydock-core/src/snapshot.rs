//! The planner's view of the cluster: nodes, the pods on them, and the budgets.
//!
//! A [`Snapshot`] is plain data, built by whoever reads the cluster (the operator from its
//! watches, `drydockctl plan` from a `kubectl get -o json` dump). Building it indexes pods
//! by node and resolves which PodDisruptionBudgets cover each pod, once, so a planner pass
//! only walks what it needs.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use jiff::Timestamp;

use crate::protocol::{NodeState, ProtocolError, parse_node_state};
use crate::selector::{LabelSelector, Labels};
use crate::strmap::StrMap;

/// A node as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// Name.
    pub name: String,
    /// UID (seeds the node's stable place in the rollout order).
    pub uid: String,
    /// Labels (pool selection, drydock labels), held compactly: the operator holds
    /// every node's.
    pub labels: StrMap,
    /// Annotations (drydock state, hooks), held compactly.
    pub annotations: StrMap,
    /// `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
}

/// A node with its drydock state read from its labels and annotations. Reading is done
/// once, when the node is taken in, so a caller that keeps these across passes (the
/// operator, keyed by the node's resourceVersion) reads each node once per change of
/// it, not once per pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadNode {
    node: NodeSnapshot,
    state: NodeState,
    errors: Vec<ProtocolError>,
}

impl ReadNode {
    /// Reads `node`'s drydock state.
    pub fn new(node: NodeSnapshot) -> ReadNode {
        let (state, errors) = parse_node_state(&node.labels, &node.annotations);
        ReadNode {
            node,
            state,
            errors,
        }
    }

    /// The node as given.
    pub fn node(&self) -> &NodeSnapshot {
        &self.node
    }

    /// Its drydock state: every field that parsed.
    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// What did not parse, or contradicts the rest.
    pub fn errors(&self) -> &[ProtocolError] {
        &self.errors
    }
}

/// A read node is read as the node it was made from.
impl Deref for ReadNode {
    type Target = NodeSnapshot;

    fn deref(&self) -> &NodeSnapshot {
        &self.node
    }
}

/// What owns a pod, as far as draining cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodOwner {
    /// A DaemonSet: skipped by drains (it would be recreated on the same node).
    DaemonSet,
    /// A static (mirror) pod: cannot be evicted through the API; skipped.
    Mirror,
    /// Another controller (ReplicaSet, StatefulSet, Job, ...) that recreates it elsewhere.
    Controller {
        /// Controller kind.
        kind: String,
        /// Controller name.
        name: String,
    },
    /// No controller: evicting it deletes it for good.
    Unmanaged,
}

/// Pod lifecycle phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Not running yet.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with failure.
    Failed,
    /// Unknown to the API server.
    Unknown,
}

/// A pod as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSnapshot {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Node it is bound to.
    pub node: Option<String>,
    /// Labels (PDB selection).
    pub labels: Labels,
    /// Owner.
    pub owner: PodOwner,
    /// Phase.
    pub phase: PodPhase,
    /// `Ready` condition is `True`.
    pub ready: bool,
    /// Its deletion timestamp, set once its deletion began (it is terminating): when its
    /// grace period ends, the moment a drain waiting for it should look again rather
    /// than at its next poll.
    pub deleted_by: Option<Timestamp>,
    /// Mounts an `emptyDir` volume (data lost on eviction).
    pub has_empty_dir: bool,
}

/// How long until the first of `pods` still terminating should be gone: the earliest
/// deletion timestamp (the end of a grace period) ahead of `now`. A drain waits for
/// those pods; when they use their whole grace period this is when it can go on. None
/// when no pod's grace period ends after `now`.
pub fn first_gone<'a>(
    pods: impl IntoIterator<Item = &'a PodSnapshot>,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let first = pods
        .into_iter()
        .filter_map(|p| p.deleted_by)
        .filter(|t| *t > now)
        .min()?;
    first.duration_since(now).try_into().ok()
}

/// Whether one of `pods` is past its deletion timestamp, by less than `within`, and still
/// there: its deletion should reach the API server any moment. A deletion timestamp is
/// shown to the second, rounded down, and the kubelet deletes the pod only once its
/// containers have stopped, so a drain that looked when the timestamp came often finds
/// the pod still there; it looks again soon rather than at its next poll, for a while.
pub fn overdue<'a>(
    pods: impl IntoIterator<Item = &'a PodSnapshot>,
    now: Timestamp,
    within: std::time::Duration,
) -> bool {
    let Ok(within) = jiff::SignedDuration::try_from(within) else {
        return false;
    };
    pods.into_iter()
        .filter_map(|p| p.deleted_by)
        .any(|t| t <= now && now.duration_since(t) < within)
}

impl PodSnapshot {
    /// Whether the pod is already on its way out (it has a deletion timestamp).
    pub fn terminating(&self) -> bool {
        self.deleted_by.is_some()
    }

    /// Whether a drain has to evict this pod: not a DaemonSet or mirror pod, not finished,
    /// not already terminating.
    pub fn needs_eviction(&self) -> bool {
        !matches!(self.owner, PodOwner::DaemonSet | PodOwner::Mirror)
            && !matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
            && !self.terminating()
    }

    /// Whether the drain must still wait for this pod to go: everything but DaemonSet,
    /// mirror and finished pods, including pods already terminating.
    pub fn blocks_drain(&self) -> bool {
        !matches!(self.owner, PodOwner::DaemonSet | PodOwner::Mirror)
            && !matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A PodDisruptionBudget as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdbSnapshot {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Selector; None selects nothing (as in `policy/v1`), an empty one every pod of the
    /// namespace.
    pub selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: u32,
    /// Whether the status is current (`observedGeneration` ≥ `generation`); a stale
    /// status is trusted for nothing, like the Eviction API does.
    pub status_current: bool,
}

impl PdbSnapshot {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Disruptions the planner may count on.
    pub fn allowed(&self) -> u32 {
        if self.status_current {
            self.disruptions_allowed
        } else {
            0
        }
    }
}

/// Nodes, pods and budgets, indexed.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<Arc<ReadNode>>,
    pods: Vec<Arc<PodSnapshot>>,
    pdbs: Vec<PdbSnapshot>,
    pods_by_node: Vec<Vec<u32>>,
    pod_pdbs: Vec<Vec<u32>>,
    node_index: HashMap<String, usize>,
    by_name: Vec<u32>,
    /// Nodes whose pods were not listed (by index; empty when every node's were).
    unlisted: Vec<bool>,
}

impl Snapshot {
    /// Reads each node's drydock state and indexes the given objects. Pods bound to nodes
    /// not in `nodes` are kept but belong to no node; duplicate node names keep the first.
    pub fn new(
        nodes: Vec<NodeSnapshot>,
        pods: Vec<PodSnapshot>,
        pdbs: Vec<PdbSnapshot>,
    ) -> Snapshot {
        Snapshot::from_read(
            nodes
                .into_iter()
                .map(|n| Arc::new(ReadNode::new(n)))
                .collect(),
            pods.into_iter().map(Arc::new).collect(),
            pdbs,
        )
    }

    /// Indexes nodes already read and pods (both shared with the caller, who may keep
    /// them for the next snapshot: a pass plans more than once, and the operator keeps a
    /// waiting node's pods for a while) and budgets, as [`Snapshot::new`] does.
    pub fn from_read(
        nodes: Vec<Arc<ReadNode>>,
        pods: Vec<Arc<PodSnapshot>>,
        pdbs: Vec<PdbSnapshot>,
    ) -> Snapshot {
        let mut node_index = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            node_index.entry(n.name.clone()).or_insert(i);
        }
        let mut pods_by_node = vec![Vec::new(); nodes.len()];
        for (i, p) in pods.iter().enumerate() {
            if let Some(&ni) = p.node.as_ref().and_then(|n| node_index.get(n)) {
                pods_by_node[ni].push(i as u32);
            }
        }
        for list in &mut pods_by_node {
            list.sort_by(|&a, &b| {
                let (pa, pb) = (&pods[a as usize], &pods[b as usize]);
                (&pa.namespace, &pa.name, &pa.uid).cmp(&(&pb.namespace, &pb.name, &pb.uid))
            });
        }
        // PDB index: per namespace, by one matchLabels pair (most PDBs select app=x), plus
        // the PDBs that have none and must be checked against every pod.
        let mut by_label: HashMap<(&str, &str, &str), Vec<u32>> = HashMap::new();
        let mut unkeyed: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, pdb) in pdbs.iter().enumerate() {
            let Some(sel) = &pdb.selector else { continue };
            match sel.match_labels.iter().next() {
                Some((k, v)) => by_label
                    .entry((pdb.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(i as u32),
                None => unkeyed
                    .entry(pdb.namespace.as_str())
                    .or_default()
                    .push(i as u32),
            }
        }
        let mut pod_pdbs = vec![Vec::new(); pods.len()];
        for (i, pod) in pods.iter().enumerate() {
            let mut cover = Vec::new();
            let ns = pod.namespace.as_str();
            for (k, v) in &pod.labels {
                if let Some(cands) = by_label.get(&(ns, k.as_str(), v.as_str())) {
                    cover.extend(cands.iter().copied().filter(|&c| {
                        pdbs[c as usize]
                            .selector
                            .as_ref()
                            .is_some_and(|s| s.matches(&pod.labels))
                    }));
                }
            }
            if let Some(cands) = unkeyed.get(ns) {
                cover.extend(cands.iter().copied().filter(|&c| {
                    pdbs[c as usize]
                        .selector
                        .as_ref()
                        .is_some_and(|s| s.matches(&pod.labels))
                }));
            }
            cover.sort_unstable();
            cover.dedup();
            pod_pdbs[i] = cover;
        }
        let mut by_name: Vec<u32> = (0..nodes.len() as u32).collect();
        by_name.sort_by(|&a, &b| {
            nodes[a as usize]
                .name
                .cmp(&nodes[b as usize].name)
                .then(a.cmp(&b))
        });
        Snapshot {
            nodes,
            pods,
            pdbs,
            pods_by_node,
            pod_pdbs,
            node_index,
            by_name,
            unlisted: Vec::new(),
        }
    }

    /// Marks the named nodes as having their pods not listed. The caller lists pods only
    /// where the plan reads them: a node that waits its turn has them read only once it
    /// is a candidate to drain, and the planner asks for them then
    /// ([`crate::planner::Plan::list_pods`]) rather than take "no pods" for an answer.
    /// Unknown names are ignored.
    pub fn with_pods_unlisted<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Snapshot {
        for name in names {
            if let Some(&i) = self.node_index.get(name) {
                if self.unlisted.is_empty() {
                    self.unlisted = vec![false; self.nodes.len()];
                }
                self.unlisted[i] = true;
            }
        }
        self
    }

    /// Whether node `node`'s pods are in the snapshot (see [`Snapshot::with_pods_unlisted`]).
    pub fn pods_listed(&self, node: usize) -> bool {
        !self.unlisted.get(node).copied().unwrap_or(false)
    }

    /// All nodes, with their drydock state.
    pub fn nodes(&self) -> &[Arc<ReadNode>] {
        &self.nodes
    }

    /// All pods.
    pub fn pods(&self) -> &[Arc<PodSnapshot>] {
        &self.pods
    }

    /// All PDBs.
    pub fn pdbs(&self) -> &[PdbSnapshot] {
        &self.pdbs
    }

    /// Index of a node by name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.node_index.get(name).copied()
    }

    /// Node indices in name order (ties in input order).
    pub fn nodes_by_name(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_name.iter().map(|&i| i as usize)
    }

    /// Indices of the pods on node `node` (an index into [`Snapshot::nodes`]).
    pub fn pods_on(&self, node: usize) -> impl Iterator<Item = (usize, &PodSnapshot)> {
        self.pods_by_node[node]
            .iter()
            .map(move |&i| (i as usize, &*self.pods[i as usize]))
    }

    /// Indices of the PDBs covering pod `pod`.
    pub fn pdbs_of(&self, pod: usize) -> &[u32] {
        &self.pod_pdbs[pod]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{SelectorOp, SelectorRequirement};

    fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> PodSnapshot {
        PodSnapshot {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node: Some(node.into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owner: PodOwner::Controller {
                kind: "ReplicaSet".into(),
                name: "rs".into(),
            },
            phase: PodPhase::Running,
            ready: true,
            deleted_by: None,
            has_empty_dir: false,
        }
    }

    fn node(name: &str) -> NodeSnapshot {
        NodeSnapshot {
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: StrMap::new(),
            annotations: StrMap::new(),
            ready: true,
            unschedulable: false,
        }
    }

    fn pdb(ns: &str, name: &str, selector: Option<LabelSelector>) -> PdbSnapshot {
        PdbSnapshot {
            namespace: ns.into(),
            name: name.into(),
            selector,
            disruptions_allowed: 1,
            status_current: true,
        }
    }

    #[test]
    fn pdbs_cover_pods_by_namespace_and_selector() {
        let app_web = LabelSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
            match_expressions: vec![],
        };
        let tier_exists = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![SelectorRequirement {
                key: "tier".into(),
                operator: SelectorOp::Exists,
                values: vec![],
            }],
        };
        let s = Snapshot::new(
            vec![node("n1"), node("n2")],
            vec![
                pod("shop", "web-1", "n1", &[("app", "web"), ("tier", "front")]),
                pod("other", "web-2", "n1", &[("app", "web")]),
                pod("shop", "db-1", "n2", &[("app", "db")]),
                pod("shop", "ghost", "n9", &[]),
            ],
            vec![
                pdb("shop", "web", Some(app_web)),
                pdb("shop", "tiers", Some(tier_exists)),
                pdb("shop", "all", Some(LabelSelector::default())),
                pdb("shop", "none", None),
            ],
        );
        assert_eq!(s.pdbs_of(0), &[0, 1, 2]);
        assert_eq!(s.pdbs_of(1), &[] as &[u32], "other namespace");
        assert_eq!(s.pdbs_of(2), &[2]);
        assert_eq!(s.pods_on(0).count(), 2);
        assert_eq!(s.pods_on(1).count(), 1);
        assert_eq!(s.node_index("n2"), Some(1));
    }

    #[test]
    fn a_drain_looks_again_when_the_first_grace_period_still_ahead_ends() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().expect("a time");
        let at = |s: &str| Some(s.parse::<Timestamp>().expect("a time"));
        let mut pods: Vec<PodSnapshot> = (0..4)
            .map(|i| pod("a", &format!("p{i}"), "n", &[]))
            .collect();
        assert_eq!(first_gone(&pods, now), None, "nothing terminating");
        pods[0].deleted_by = at("2026-12-06T09:59:58Z"); // overdue: the poll looks
        pods[1].deleted_by = at("2026-12-06T10:00:05Z");
        pods[2].deleted_by = at("2026-12-06T10:00:03Z");
        assert_eq!(
            first_gone(&pods, now),
            Some(std::time::Duration::from_secs(3))
        );
        pods[1].deleted_by = None;
        pods[2].deleted_by = at("2026-12-06T10:00:00Z");
        assert_eq!(
            first_gone(&pods, now),
            None,
            "due now or before is not ahead"
        );
    }

    #[test]
    fn a_pod_just_past_its_deletion_timestamp_is_overdue_for_a_while() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().expect("a time");
        let at = |s: &str| Some(s.parse::<Timestamp>().expect("a time"));
        let within = std::time::Duration::from_secs(3);
        let mut pods: Vec<PodSnapshot> = (0..3)
            .map(|i| pod("a", &format!("p{i}"), "n", &[]))
            .collect();
        assert!(!overdue(&pods, now, within), "nothing terminating");
        pods[0].deleted_by = at("2026-12-06T10:00:04Z");
        assert!(!overdue(&pods, now, within), "still in its grace period");
        pods[1].deleted_by = at("2026-12-06T09:59:55Z");
        assert!(
            !overdue(&pods, now, within),
            "late for long: the poll looks"
        );
        pods[2].deleted_by = at("2026-12-06T09:59:58Z");
        assert!(overdue(&pods, now, within), "2 s late");
        pods[2].deleted_by = at("2026-12-06T10:00:00Z");
        assert!(overdue(&pods, now, within), "due now");
        assert!(
            !overdue(&pods, now, std::time::Duration::ZERO),
            "no window, nothing overdue"
        );
    }

    #[test]
    fn which_pods_a_drain_evicts_and_waits_for() {
        let mut p = pod("a", "b", "n", &[]);
        assert!(p.needs_eviction() && p.blocks_drain());
        p.deleted_by = Some(Timestamp::UNIX_EPOCH); // terminating
        assert!(p.terminating());
        assert!(!p.needs_eviction() && p.blocks_drain());
        p.deleted_by = None;
        assert!(!p.terminating());
        p.owner = PodOwner::DaemonSet;
        assert!(!p.needs_eviction() && !p.blocks_drain());
        p.owner = PodOwner::Unmanaged;
        p.phase = PodPhase::Succeeded;
        assert!(!p.needs_eviction() && !p.blocks_drain());
    }

    #[test]
    fn stale_pdb_status_allows_nothing() {
        let mut b = pdb("a", "b", None);
        b.disruptions_allowed = 3;
        b.status_current = false;
        assert_eq!(b.allowed(), 0);
    }
}

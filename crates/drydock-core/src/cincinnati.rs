//! The Cincinnati update graph that Fedora CoreOS publishes at `/v1/graph`, and the choice
//! of the release a node stages next under its pool's pin.
//!
//! The graph lists releases (`nodes`: version, payload, string metadata) and the allowed
//! transitions between them (`edges`: pairs of node indices). Upstream expresses an update
//! barrier by its edges alone: no release older than the barrier has an edge past it, so a
//! client that only ever follows edges from its booted release goes through the barrier.
//! A dead-end release (`org.fedoraproject.coreos.updates.deadend`) has no way on; drydock
//! never moves a node onto one, and reports it when a node runs one.
//!
//! [`choose`] follows one edge from the booted release: the newest target (by age index)
//! that the pin allows. When updates are offered but none fits the pin, it says why,
//! naming a barrier the pin skips past.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::Value;

use crate::pin::VersionPin;
use crate::version::{OsFamily, OsVersion};

/// Metadata key: how `payload` is to be read (drydock follows `checksum`, an OSTree commit).
pub const SCHEME_KEY: &str = "org.fedoraproject.coreos.scheme";
/// The `checksum` payload scheme.
pub const CHECKSUM_SCHEME: &str = "checksum";
/// Metadata key: the release's position in its stream's history (higher is newer).
pub const AGE_INDEX_KEY: &str = "org.fedoraproject.coreos.releases.age_index";
/// Metadata key: `"true"` on a dead-end release.
pub const DEADEND_KEY: &str = "org.fedoraproject.coreos.updates.deadend";
/// Metadata key: why a release is a dead-end (often a tracker URL).
pub const DEADEND_REASON_KEY: &str = "org.fedoraproject.coreos.updates.deadend_reason";
/// Metadata key: `"true"` on an update barrier.
pub const BARRIER_KEY: &str = "org.fedoraproject.coreos.updates.barrier";
/// Metadata key: why a release is a barrier.
pub const BARRIER_REASON_KEY: &str = "org.fedoraproject.coreos.updates.barrier_reason";

/// One release in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its version label.
    pub version: String,
    /// The payload: an OSTree commit checksum under the `checksum` scheme.
    pub payload: String,
    /// Everything else upstream says about it.
    pub metadata: BTreeMap<String, String>,
}

impl Release {
    fn flag(&self, key: &str) -> bool {
        self.metadata.get(key).is_some_and(|v| v == "true")
    }

    fn reason(&self, key: &str) -> String {
        match self.metadata.get(key).map(|s| s.trim()) {
            Some(r) if !r.is_empty() => r.to_string(),
            _ => "no reason given".into(),
        }
    }

    /// Why the release is a dead-end, if it is one.
    pub fn deadend(&self) -> Option<String> {
        self.flag(DEADEND_KEY)
            .then(|| self.reason(DEADEND_REASON_KEY))
    }

    /// Why the release is a barrier, if it is one.
    pub fn barrier(&self) -> Option<String> {
        self.flag(BARRIER_KEY)
            .then(|| self.reason(BARRIER_REASON_KEY))
    }

    fn age_index(&self) -> Option<u64> {
        self.metadata
            .get(AGE_INDEX_KEY)
            .and_then(|s| s.parse().ok())
    }

    fn is_checksum(&self) -> bool {
        self.metadata.get(SCHEME_KEY).map(String::as_str) == Some(CHECKSUM_SCHEME)
    }
}

/// A parsed, checked update graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// The releases.
    pub nodes: Vec<Release>,
    /// Allowed transitions, as indices into `nodes`.
    pub edges: Vec<(usize, usize)>,
}

/// Why a graph document was refused; names the place in the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Not JSON at all.
    #[error("the update graph is not JSON: {0}")]
    Json(String),
    /// JSON, but not a graph.
    #[error("the update graph's {at}: {what}")]
    Invalid {
        /// Where (`nodes[3].payload`, `edges[7]`).
        at: String,
        /// What is wrong there.
        what: String,
    },
}

fn invalid(at: impl Into<String>, what: impl Into<String>) -> GraphError {
    GraphError::Invalid {
        at: at.into(),
        what: what.into(),
    }
}

impl Graph {
    /// Parses a `/v1/graph` answer, refusing anything that is not exactly the protocol's
    /// shape (a missing field, an edge out of range, a non-string metadata value).
    pub fn parse(bytes: &[u8]) -> Result<Graph, GraphError> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| GraphError::Json(e.to_string()))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| invalid("top level", "is not an object"))?;
        let raw_nodes = obj
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("nodes", "is missing or not an array"))?;
        let mut nodes = Vec::with_capacity(raw_nodes.len());
        let mut seen = BTreeSet::new();
        for (i, n) in raw_nodes.iter().enumerate() {
            let at = |f: &str| format!("nodes[{i}]{f}");
            let text = |f: &str| -> Result<String, GraphError> {
                match n.get(f) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(invalid(at(&format!(".{f}")), "is not a string")),
                    None => Err(invalid(at(&format!(".{f}")), "is missing")),
                }
            };
            let version = text("version")?;
            if version.is_empty() {
                return Err(invalid(at(".version"), "is empty"));
            }
            if !seen.insert(version.clone()) {
                return Err(invalid(
                    at(".version"),
                    format!("{version:?} appears twice"),
                ));
            }
            let payload = text("payload")?;
            let meta = n
                .get("metadata")
                .and_then(Value::as_object)
                .ok_or_else(|| invalid(at(".metadata"), "is missing or not an object"))?;
            let mut metadata = BTreeMap::new();
            for (k, v) in meta {
                let Value::String(s) = v else {
                    return Err(invalid(at(&format!(".metadata[{k:?}]")), "is not a string"));
                };
                metadata.insert(k.clone(), s.clone());
            }
            nodes.push(Release {
                version,
                payload,
                metadata,
            });
        }
        let raw_edges = obj
            .get("edges")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("edges", "is missing or not an array"))?;
        let mut edges = Vec::with_capacity(raw_edges.len());
        for (i, e) in raw_edges.iter().enumerate() {
            let pair = e
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| invalid(format!("edges[{i}]"), "is not a pair of indices"))?;
            let mut ends = [0usize; 2];
            for (j, v) in pair.iter().enumerate() {
                let idx = v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| {
                        invalid(format!("edges[{i}][{j}]"), "is not a non-negative integer")
                    })?;
                if idx >= nodes.len() {
                    return Err(invalid(
                        format!("edges[{i}][{j}]"),
                        format!("{idx} is out of range ({} nodes)", nodes.len()),
                    ));
                }
                ends[j] = idx;
            }
            edges.push((ends[0], ends[1]));
        }
        Ok(Graph { nodes, edges })
    }

    fn targets(&self, from: usize) -> BTreeSet<usize> {
        self.edges
            .iter()
            .filter(|(s, _)| *s == from)
            .map(|(_, d)| *d)
            .collect()
    }

    /// The releases reachable from `from` (itself excluded), never through a dead-end.
    fn reachable(&self, from: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            for t in self.targets(n) {
                if seen.insert(t) && self.nodes[t].deadend().is_none() {
                    queue.push_back(t);
                }
            }
        }
        seen.remove(&from);
        seen
    }
}

/// The release to stage next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its version.
    pub version: OsVersion,
    /// The commit to stage (`set-revision`).
    pub checksum: String,
}

/// What [`choose`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Stage this release.
    Stage(Target),
    /// Nothing newer is offered.
    UpToDate,
    /// Updates are offered, none may be staged; why (for the node's status and logs).
    Wait(String),
    /// The booted commit is not in the graph (a local build, or another stream's graph).
    NotInGraph,
}

/// [`choose`]'s answer: the decision, and whether the booted release is a dead-end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub choice: Choice,
    /// The dead-end reason when the booted release is a dead-end.
    pub booted_deadend: Option<String>,
}

fn newer(a: &Release, b: &Release) -> Ordering {
    match (a.age_index(), b.age_index()) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => match (
            OsVersion::parse(OsFamily::Fcos, &a.version),
            OsVersion::parse(OsFamily::Fcos, &b.version),
        ) {
            (Ok(x), Ok(y)) => x.compare(&y).unwrap_or(Ordering::Equal),
            _ => Ordering::Equal,
        },
    }
}

/// Chooses what a node booted on commit `booted` stages next, following one edge of the
/// graph: the newest target that is newer than the booted release, not a dead-end, a
/// CoreOS version, and allowed by `pin` (no pin allows everything).
pub fn choose(graph: &Graph, booted: &str, pin: Option<&VersionPin>) -> Decision {
    let Some(here) = graph
        .nodes
        .iter()
        .position(|n| n.is_checksum() && n.payload == booted)
    else {
        return Decision {
            choice: Choice::NotInGraph,
            booted_deadend: None,
        };
    };
    let current = &graph.nodes[here];
    let booted_deadend = current.deadend();
    let decide = |choice| Decision {
        choice,
        booted_deadend: booted_deadend.clone(),
    };
    let mut offered: Vec<(usize, OsVersion)> = Vec::new();
    let mut deadends = Vec::new();
    for t in graph.targets(here) {
        let r = &graph.nodes[t];
        if !r.is_checksum() || newer(r, current) != Ordering::Greater {
            continue;
        }
        let Ok(version) = OsVersion::parse(OsFamily::Fcos, &r.version) else {
            continue;
        };
        if r.deadend().is_some() {
            deadends.push(r.version.clone());
            continue;
        }
        offered.push((t, version));
    }
    let allowed = |v: &OsVersion| pin.is_none_or(|p| p.allows(v) == Ok(true));
    let best = offered
        .iter()
        .filter(|(_, v)| allowed(v))
        .max_by(|a, b| newer(&graph.nodes[a.0], &graph.nodes[b.0]));
    if let Some((t, version)) = best {
        return decide(Choice::Stage(Target {
            version: version.clone(),
            checksum: graph.nodes[*t].payload.clone(),
        }));
    }
    if offered.is_empty() {
        if deadends.is_empty() {
            return decide(Choice::UpToDate);
        }
        return decide(Choice::Wait(format!(
            "the only update(s) offered, {}, are dead-end releases; drydock does not move a node onto one",
            deadends.join(", ")
        )));
    }
    let pin_text = pin.map(|p| p.to_string()).unwrap_or_default();
    let newest = offered
        .iter()
        .max_by(|a, b| newer(&graph.nodes[a.0], &graph.nodes[b.0]))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    // A barrier the pin does not admit, beyond which a release the pin admits lies.
    let blocking = offered.iter().find(|(t, _)| {
        graph.nodes[*t].barrier().is_some()
            && graph.reachable(*t).iter().any(|r| {
                OsVersion::parse(OsFamily::Fcos, &graph.nodes[*r].version)
                    .is_ok_and(|v| allowed(&v))
            })
    });
    if let Some((t, v)) = blocking {
        let reason = graph.nodes[*t].barrier().unwrap_or_default();
        return decide(Choice::Wait(format!(
            "the pin {pin_text} admits only releases beyond the update barrier {v} ({reason}); every node must pass through {v}, so widen the pin to admit it"
        )));
    }
    decide(Choice::Wait(format!(
        "{} update(s) offered, up to {newest}; none inside the pin {pin_text}",
        offered.len()
    )))
}

/// The graph document to give a client that should stage exactly `target` from its booted
/// commit `booted`: the booted release and the target, with upstream's metadata, joined by
/// one edge. With no target, the booted release alone (no update). A client that follows
/// edges, as Zincati does, then stages what [`choose`] chose and nothing else; a booted
/// commit upstream does not list gives an empty graph.
pub fn offer_document(graph: &Graph, booted: &str, target: Option<&Target>) -> Value {
    let release = |r: &Release| serde_json::json!({"version": r.version, "payload": r.payload, "metadata": r.metadata});
    let Some(here) = graph
        .nodes
        .iter()
        .find(|n| n.is_checksum() && n.payload == booted)
    else {
        return serde_json::json!({"nodes": [], "edges": []});
    };
    let there = target.and_then(|t| {
        graph
            .nodes
            .iter()
            .find(|n| n.is_checksum() && n.payload == t.checksum)
    });
    match there {
        Some(t) => serde_json::json!({"nodes": [release(here), release(t)], "edges": [[0, 1]]}),
        None => serde_json::json!({"nodes": [release(here)], "edges": []}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "41.20251001.3.0";
    const B: &str = "41.20251015.3.0";
    const C: &str = "41.20251029.3.0";
    const D: &str = "41.20251112.3.0";
    const E: &str = "41.20251126.3.0";

    fn sum(v: &str) -> String {
        format!("commit-{v}")
    }

    /// A..E as upstream's graph builder would serve them: C is a barrier, E a dead-end.
    fn graph() -> Graph {
        let vs = [A, B, C, D, E];
        let nodes: Vec<Value> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut m = json!({SCHEME_KEY: CHECKSUM_SCHEME, AGE_INDEX_KEY: i.to_string()});
                if *v == C {
                    m[BARRIER_KEY] = json!("true");
                    m[BARRIER_REASON_KEY] = json!("https://example.test/barrier");
                }
                if *v == E {
                    m[DEADEND_KEY] = json!("true");
                    m[DEADEND_REASON_KEY] = json!("https://example.test/deadend");
                }
                json!({"version": v, "payload": sum(v), "metadata": m})
            })
            .collect();
        // Every older → newer, none across the barrier C from below it, none out of E.
        let edges = json!([[0, 1], [0, 2], [1, 2], [2, 3], [2, 4], [3, 4]]);
        Graph::parse(
            json!({"nodes": nodes, "edges": edges})
                .to_string()
                .as_bytes(),
        )
        .expect("graph")
    }

    fn pin(s: &str) -> VersionPin {
        VersionPin::parse(s).expect("pin")
    }

    fn staged(d: Decision) -> String {
        match d.choice {
            Choice::Stage(t) => {
                assert_eq!(t.checksum, sum(&t.version.to_string()));
                t.version.to_string()
            }
            other => panic!("expected a target, got {other:?}"),
        }
    }

    #[test]
    fn the_newest_edge_inside_the_pin_is_chosen_and_barriers_are_not_skipped() {
        let g = graph();
        // From A only B and the barrier C are reachable in one step.
        assert_eq!(staged(choose(&g, &sum(A), None)), C);
        assert_eq!(staged(choose(&g, &sum(A), Some(&pin(B)))), B);
        assert_eq!(staged(choose(&g, &sum(A), Some(&pin("<=41.20251126")))), C);
        // Past the barrier, the dead-end E is never a target.
        assert_eq!(staged(choose(&g, &sum(C), None)), D);
        assert_eq!(choose(&g, &sum(D), None).choice, Choice::Wait(
            "the only update(s) offered, 41.20251126.3.0, are dead-end releases; drydock does not move a node onto one".into()
        ));
        let top = choose(&g, &sum(E), None);
        assert_eq!(top.choice, Choice::UpToDate);
        assert_eq!(
            top.booted_deadend.as_deref(),
            Some("https://example.test/deadend")
        );
        assert_eq!(choose(&g, "not-there", None).choice, Choice::NotInGraph);
    }

    #[test]
    fn a_pin_beyond_a_barrier_waits_and_names_the_barrier() {
        let g = graph();
        match choose(&g, &sum(B), Some(&pin(D))).choice {
            Choice::Wait(why) => {
                assert!(why.contains("barrier 41.20251029.3.0"), "{why}");
                assert!(why.contains("https://example.test/barrier"), "{why}");
                assert!(why.contains("widen the pin"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        match choose(&g, &sum(A), Some(&pin("<41.20251010"))).choice {
            Choice::Wait(why) => assert_eq!(
                why,
                "2 update(s) offered, up to 41.20251029.3.0; none inside the pin <41.20251010"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_graphs_are_refused_naming_the_place() {
        let err = |v: Value| {
            Graph::parse(v.to_string().as_bytes())
                .expect_err("refused")
                .to_string()
        };
        assert!(
            Graph::parse(b"<html>")
                .expect_err("refused")
                .to_string()
                .starts_with("the update graph is not JSON")
        );
        assert_eq!(
            err(json!([])),
            "the update graph's top level: is not an object"
        );
        assert_eq!(
            err(json!({"nodes": [{"version": A, "metadata": {}}], "edges": []})),
            "the update graph's nodes[0].payload: is missing"
        );
        assert_eq!(
            err(
                json!({"nodes": [{"version": A, "payload": "x", "metadata": {"k": 1}}], "edges": []})
            ),
            "the update graph's nodes[0].metadata[\"k\"]: is not a string"
        );
        assert_eq!(
            err(
                json!({"nodes": [{"version": A, "payload": "x", "metadata": {}}], "edges": [[0, 3]]})
            ),
            "the update graph's edges[0][1]: 3 is out of range (1 nodes)"
        );
        assert_eq!(
            err(json!({"nodes": [{"version": A, "payload": "x", "metadata": {}}], "edges": [[0]]})),
            "the update graph's edges[0]: is not a pair of indices"
        );
        assert_eq!(
            err(
                json!({"nodes": [{"version": A, "payload": "x", "metadata": {}}, {"version": A, "payload": "y", "metadata": {}}], "edges": []})
            ),
            "the update graph's nodes[1].version: \"41.20251001.3.0\" appears twice"
        );
        assert_eq!(
            err(json!({"nodes": []})),
            "the update graph's edges: is missing or not an array"
        );
    }

    #[test]
    fn an_offer_document_leads_an_edge_following_client_to_the_chosen_release_only() {
        let g = graph();
        let pinned = choose(&g, &sum(A), Some(&pin(B)));
        let Choice::Stage(t) = pinned.choice else {
            panic!("expected a target");
        };
        let doc = offer_document(&g, &sum(A), Some(&t));
        let back = Graph::parse(doc.to_string().as_bytes()).expect("a valid graph");
        assert_eq!(back.nodes.len(), 2);
        assert_eq!(back.edges, vec![(0, 1)]);
        assert_eq!(back.nodes[1].version, B);
        // Upstream's metadata travels with the releases.
        assert_eq!(back.nodes[0], g.nodes[0]);
        assert_eq!(back.nodes[1], g.nodes[1]);
        // What a client chooses from it is what drydock chose.
        assert_eq!(staged(choose(&back, &sum(A), None)), B);
        let none =
            Graph::parse(offer_document(&g, &sum(E), None).to_string().as_bytes()).expect("graph");
        assert_eq!((none.nodes.len(), none.edges.len()), (1, 0));
        let unknown = offer_document(&g, "not-a-commit", None);
        assert_eq!(unknown, serde_json::json!({"nodes": [], "edges": []}));
    }
}

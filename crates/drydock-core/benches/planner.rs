//! Planner cost at fleet scale: `cargo bench -p drydock-core`.
//!
//! One pass over 5,000 nodes, 100,000 pods and 2,000 PDBs (goal: under 20 ms on a 2-core
//! machine), plus the same fleet with 50,000 and 200,000 pods to show how the cost grows
//! with pods. Prints median and worst of repeated passes. Reading the nodes' drydock state
//! (done by the operator once per change of a node, not per pass) and indexing the
//! snapshot (done per pass) are reported separately.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drydock_core::protocol::keys;
use drydock_core::selector::LabelSelector;
use drydock_core::snapshot::{
    NodeSnapshot, PdbSnapshot, PodOwner, PodPhase, PodSnapshot, ReadNode,
};
use drydock_core::{Policy, Snapshot, plan};

const NODES: usize = 5_000;
const PDBS: usize = 2_000;
const NAMESPACES: usize = 200;

fn fleet(pods_total: usize) -> (Vec<NodeSnapshot>, Vec<PodSnapshot>, Vec<PdbSnapshot>) {
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let name = format!("node-{i:05}");
        let mut ann = BTreeMap::new();
        ann.insert(keys::OS.to_string(), "flatcar".to_string());
        ann.insert(keys::BOOTED_VERSION.to_string(), "4081.2.0".to_string());
        ann.insert(keys::BOOTED_SLOT.to_string(), "a".to_string());
        ann.insert(keys::BOOT_ID.to_string(), format!("boot-{i}"));
        let mut labels = BTreeMap::new();
        labels.insert(
            "topology.kubernetes.io/zone".to_string(),
            format!("zone-{}", i % 3),
        );
        labels.insert("pool".to_string(), format!("p{}", i % 4));
        // Most nodes have an update staged; a few are mid-drain.
        if i % 10 != 0 {
            ann.insert(keys::STAGED_VERSION.to_string(), "4230.0.0".to_string());
            labels.insert(keys::REBOOT_NEEDED.to_string(), "true".to_string());
        }
        let mut unschedulable = false;
        if i % 250 == 1 {
            labels.insert(keys::PHASE.to_string(), "Draining".to_string());
            ann.insert(
                keys::PHASE_SINCE.to_string(),
                "2026-11-25T11:55:00Z".to_string(),
            );
            ann.insert(
                keys::DRAIN_STARTED.to_string(),
                "2026-11-25T11:55:00Z".to_string(),
            );
            ann.insert(keys::CORDONED.to_string(), "true".to_string());
            unschedulable = true;
        }
        nodes.push(NodeSnapshot {
            uid: format!("uid-{name}"),
            name,
            labels: labels.into(),
            annotations: ann.into(),
            ready: i % 97 != 0,
            unschedulable,
        });
    }
    let mut pods = Vec::with_capacity(pods_total);
    for i in 0..pods_total {
        let ns = format!("ns-{}", i % NAMESPACES);
        let app = format!("app-{}", (i / NAMESPACES) % (PDBS / NAMESPACES + 5));
        let node = format!("node-{:05}", (i * 7919) % NODES);
        pods.push(PodSnapshot {
            namespace: ns,
            name: format!("pod-{i}"),
            uid: format!("uid-pod-{i}"),
            node: Some(node),
            labels: [
                ("app".to_string(), app.clone()),
                ("tier".to_string(), "backend".to_string()),
            ]
            .into(),
            owner: if i % 50 == 0 {
                PodOwner::DaemonSet
            } else {
                PodOwner::Controller {
                    kind: "ReplicaSet".into(),
                    name: app,
                }
            },
            phase: PodPhase::Running,
            ready: true,
            deleted_by: None,
            has_empty_dir: false,
        });
    }
    let pdbs = (0..PDBS)
        .map(|i| PdbSnapshot {
            namespace: format!("ns-{}", i % NAMESPACES),
            name: format!("pdb-{i}"),
            selector: Some(LabelSelector {
                match_labels: [("app".to_string(), format!("app-{}", i / NAMESPACES))].into(),
                match_expressions: vec![],
            }),
            disruptions_allowed: (i % 4) as u32,
            status_current: true,
        })
        .collect();
    (nodes, pods, pdbs)
}

fn measure(label: &str, pods_total: usize, policy: &Policy, runs: usize) -> Duration {
    let (nodes, pods, pdbs) = fleet(pods_total);
    let t = Instant::now();
    let read: Vec<Arc<ReadNode>> = nodes
        .into_iter()
        .map(|n| Arc::new(ReadNode::new(n)))
        .collect();
    let reading = t.elapsed();
    let pods: Vec<Arc<PodSnapshot>> = pods.into_iter().map(Arc::new).collect();
    let t = Instant::now();
    let snapshot = Snapshot::from_read(read, pods, pdbs);
    let index = t.elapsed();
    let now: jiff::Timestamp = "2026-11-25T12:00:00Z".parse().expect("constant timestamp");
    let mut times = Vec::with_capacity(runs);
    let mut actions = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let p = black_box(plan(black_box(&snapshot), policy, now));
        times.push(t.elapsed());
        actions = p.actions.len();
    }
    times.sort();
    let median = times[runs / 2];
    println!(
        "{label:<34} nodes {NODES:>5}  pods {pods_total:>7}  pdbs {PDBS:>5}  read {:>6.2} ms  index {:>7.2} ms  plan median {:>6.2} ms  worst {:>6.2} ms  ({actions} actions)",
        reading.as_secs_f64() * 1e3,
        index.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
    );
    median
}

fn main() {
    // `cargo test --benches` runs this binary with --bench absent: keep that quick.
    let runs = if std::env::args().any(|a| a == "--bench") {
        21
    } else {
        3
    };
    let policy = Policy::from_yaml(
        "maxUnavailable: 10%\npools:\n  - {name: p0, nodeSelector: {pool: p0}, canary: 5}\n  - {name: p1, nodeSelector: {pool: p1}, maxUnavailable: 50}\n  - {name: p2, nodeSelector: {pool: p2}, windows: [{days: [Wed], start: '11:00', length: 4h}]}\n",
    )
    .expect("bench policy is valid");
    let base = measure("planner pass", 100_000, &policy, runs);
    let half = measure("planner pass, half the pods", 50_000, &policy, runs);
    let double = measure("planner pass, twice the pods", 200_000, &policy, runs);
    println!(
        "growth with pods: 50k→100k ×{:.2}, 100k→200k ×{:.2} (linear would be ×2.00 or less)",
        base.as_secs_f64() / half.as_secs_f64(),
        double.as_secs_f64() / base.as_secs_f64()
    );
    let goal = Duration::from_millis(20);
    println!(
        "goal: planner pass under 20 ms at 5,000 nodes / 100,000 pods / 2,000 PDBs: {} ({:.2} ms)",
        if base < goal { "met" } else { "MISSED" },
        base.as_secs_f64() * 1e3
    );
}

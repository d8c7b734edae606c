//! Fedora CoreOS pinning on the real control plane: simulated CoreOS hosts (rpm-ostree on
//! a private bus), real agents that read a fake Cincinnati graph, and one operator replica.
//!
//! The graph offers A → B → C (a barrier) → D → E (a dead-end), as upstream's graph
//! builder serves it: nothing older than C has an edge past C, nothing leaves E.
//! - With the pool pinned to B, every node stages B (locked) and reboots into it one at a
//!   time, though the graph offers C.
//! - With the pin widened to admit E, each node goes B → C → D: through the barrier, never
//!   onto the dead-end, and again never more than one node unavailable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drydock_core::protocol::keys;
use drydock_sim::cincinnati::{CincinnatiServer, ReleaseSpec};
use drydock_sim::host::{FcosOptions, fcos_ref};

mod common;
use common::machines::*;
use common::*;

const A: &str = "41.20251001.3.0";
const B: &str = "41.20251015.3.0";
const C: &str = "41.20251029.3.0";
const D: &str = "41.20251112.3.0";
const E: &str = "41.20251126.3.0";

fn policy(pin: &str) -> String {
    format!(
        "health: {{bake: 0s, readyTimeout: 1m}}\npools:\n  - name: workers\n    nodeSelector: {{node-role.kubernetes.io/worker: \"\"}}\n    maxUnavailable: 1\n    version: \"{pin}\"\n"
    )
}

fn releases() -> Vec<ReleaseSpec> {
    vec![
        ReleaseSpec::new(A),
        ReleaseSpec::new(B),
        ReleaseSpec::new(C).barrier("https://example.test/barrier-c"),
        ReleaseSpec::new(D),
        ReleaseSpec::new(E).deadend("https://example.test/deadend-e"),
    ]
}

/// Every version each machine booted, in order (the first boot included).
type Boots = Arc<Mutex<HashMap<String, Vec<String>>>>;

fn record_boots(machines: &[Machine]) -> Boots {
    let boots: Boots = Arc::default();
    for m in machines {
        let mut rx = m.sim.reboots();
        let name = m.name.clone();
        let b = boots.clone();
        if let Ok(mut map) = b.lock() {
            map.insert(name.clone(), vec![rx.borrow().version.clone()]);
        }
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let v = rx.borrow().version.clone();
                if let Ok(mut map) = b.lock() {
                    map.entry(name.clone()).or_default().push(v);
                }
            }
        });
    }
    boots
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coreos_agents_stage_the_pinned_release_from_the_graph_through_barriers_one_node_at_a_time()
{
    let (env, names) = workers(3).await;
    setup(&env, &policy(B)).await;
    let graph = CincinnatiServer::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake Cincinnati");
    graph.set_releases("stable", releases());
    let mut machines = Vec::new();
    for name in &names {
        let mut o = FcosOptions::new(A);
        o.step = Duration::from_millis(10);
        o.machine_id = drydock_testenv::machine_id(name);
        let m = fcos_machine(&env, name, o, &graph.url()).await;
        let ostree = m.sim.ostree().expect("rpm-ostree");
        for v in [B, C, D, E] {
            ostree.publish(&fcos_ref("stable"), v);
        }
        machines.push(m);
    }
    let boots = record_boots(&machines);
    let pool_of: HashMap<String, String> = names
        .iter()
        .map(|n| (n.clone(), "workers".to_string()))
        .collect();
    let (observed, _watch) = watch_availability(&env, pool_of);
    let _op = replica(&env, "op-0");

    // Pinned to B while the graph offers the barrier C.
    wait_all_on(&env, &names, B, 120).await;
    for n in &names {
        let a = node_annotations(&env, n).await;
        assert_eq!(a.get(keys::VERSION_PIN).map(String::as_str), Some(B), "{n}");
    }
    {
        let b = boots.lock().expect("boots");
        for n in &names {
            assert_eq!(b[n], vec![A, B], "{n} booted exactly A then B");
        }
    }
    let requests = graph.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    for name in &names {
        assert!(
            requests.iter().any(|r| {
                r.params.get("stream").map(String::as_str) == Some("stable")
                    && r.params.get("basearch").map(String::as_str) == Some(std::env::consts::ARCH)
                    && r.params.get("os_checksum") == Some(&drydock_sim::rpm_ostree::checksum_of(A))
                    && r.params.get("os_version").map(String::as_str) == Some(A)
            }),
            "{name}: no graph request from A with stream, basearch and the booted commit: {requests:?}"
        );
    }

    // Widened to admit everything up to the dead-end E: through the barrier C to D.
    set_policy(&env, &policy("<=41.20251126")).await;
    wait_all_on(&env, &names, D, 240).await;
    {
        let b = boots.lock().expect("boots");
        for n in &names {
            assert_eq!(
                b[n],
                vec![A, B, C, D],
                "{n}: through the barrier, not onto E"
            );
        }
    }
    for n in &names {
        let a = node_annotations(&env, n).await;
        assert_eq!(
            a.get(keys::VERSION_PIN).map(String::as_str),
            Some("<=41.20251126")
        );
    }
    // The agent says why it stays on D once it has asked the graph from D, which may
    // come a moment after the node is reported Done.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for n in &names {
        loop {
            let a = node_annotations(&env, n).await;
            let msg = a.get(keys::AGENT_MESSAGE).cloned().unwrap_or_default();
            if msg.contains("dead-end") && msg.contains(E) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} does not say why it stays on D within 30 s: {msg:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        peak(&observed, "workers"),
        Some(1),
        "never more than maxUnavailable 1 at once"
    );
}

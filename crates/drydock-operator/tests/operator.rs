//! The operator on the real control plane, with KWOK nodes, a real drydock-agent per node
//! and a simulated Flatcar host per node (its own private dbus-daemon): rollouts with
//! budgets and a leader killed mid-drain and mid-reboot, a budget that allows nothing,
//! a rollback, a node that never returns, a drain that times out, a bad ConfigMap.
//!
//! An independent watcher (its own Node watch, not the operator's state) records, for
//! every change it sees, how many nodes of each pool are unavailable; each simulated host
//! counts its boots.

use std::collections::HashMap;
use std::time::Duration;

use drydock_core::protocol::keys;
use drydock_operator::events::Kind;
use drydock_testenv::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::task::JoinHandle;

mod common;
use common::machines::*;
use common::*;

/// A control plane with `n` Ready KWOK nodes `node-0`….
async fn env_with_nodes(n: usize) -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::start().await.expect("control plane");
    let names = env
        .add_ready_nodes("node", n, &[], Duration::from_secs(60))
        .await
        .expect("nodes");
    (env, names)
}

async fn node(env: &TestEnv, name: &str) -> Node {
    Api::<Node>::all(env.client())
        .get(name)
        .await
        .expect("node")
}

fn label(n: &Node, key: &str) -> Option<String> {
    n.metadata.labels.as_ref().and_then(|l| l.get(key)).cloned()
}

fn annotation(n: &Node, key: &str) -> Option<String> {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

/// Waits until `f` holds for the node.
async fn wait_node(
    env: &mut TestEnv,
    name: &str,
    what: &str,
    secs: u64,
    f: impl Fn(&Node) -> bool + Clone + 'static,
) {
    let api: Api<Node> = Api::all(env.client());
    let name = name.to_string();
    env.wait_for(what, Duration::from_secs(secs), move || {
        let (api, name, f) = (api.clone(), name.clone(), f.clone());
        async move { Ok(f(&api.get(&name).await?)) }
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

async fn leader_identity(env: &TestEnv) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client(), NS);
    leases
        .get_opt("drydock-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

fn phase_is(p: &'static str) -> impl Fn(&Node) -> bool + Clone {
    move |n| label(n, keys::PHASE).as_deref() == Some(p)
}

#[tokio::test]
async fn a_two_pool_rollout_survives_leader_kills_within_limits() {
    let mut env = TestEnv::start().await.expect("control plane");
    let blue = env
        .add_ready_nodes("blue", 3, &[("pool", "blue")], Duration::from_secs(60))
        .await
        .expect("blue nodes");
    let green = env
        .add_ready_nodes("green", 3, &[("pool", "green")], Duration::from_secs(60))
        .await
        .expect("green nodes");
    setup(
        &env,
        "maxUnavailable: 1\ndrain: {timeout: 3m, onTimeout: hold}\nhealth: {readyTimeout: 2m, bake: 1s, haltAfterFailures: 1}\npools:\n  - name: blue\n    nodeSelector: {pool: blue}\n    maxUnavailable: 1\n  - name: green\n    nodeSelector: {pool: green}\n    maxUnavailable: 2\n",
    )
    .await;
    apply(&env, deployment("web", 4)).await;
    apply(&env, pdb("web", json!({"minAvailable": 3}))).await;
    apply(
        &env,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}}),
    )
    .await;
    apply(&env, pdb("db", json!({"maxUnavailable": 1}))).await;
    wait_pods_ready(&mut env, 6).await;

    let mut machines = Vec::new();
    let mut pool_of = HashMap::new();
    for n in blue.iter().chain(green.iter()) {
        machines.push(machine(&env, n, Duration::from_millis(300)).await);
        pool_of.insert(
            n.clone(),
            if n.starts_with("blue") {
                "blue"
            } else {
                "green"
            }
            .to_string(),
        );
    }
    let (observed, watcher_task) = watch_availability(&env, pool_of);
    for m in &machines {
        m.stage().await;
    }
    let mut replicas: HashMap<String, JoinHandle<()>> = HashMap::new();
    for id in ["op-a", "op-b"] {
        replicas.insert(id.to_string(), replica(&env, id));
    }

    // Kill the leader while a node drains, then while one reboots; start a fresh replica
    // each time so two always run.
    let mut next_id = 0;
    for moment in [&["Draining"][..], &["RebootGranted", "Rebooting"][..]] {
        let nodes: Api<Node> = Api::all(env.client());
        let m = moment.to_vec();
        env.wait_for(
            &format!("a node in {moment:?}"),
            Duration::from_secs(120),
            move || {
                let (nodes, m) = (nodes.clone(), m.clone());
                async move {
                    Ok(nodes
                        .list(&ListParams::default())
                        .await?
                        .items
                        .iter()
                        .any(|n| label(n, keys::PHASE).is_some_and(|p| m.contains(&p.as_str()))))
                }
            },
        )
        .await
        .expect("the moment to kill the leader");
        let leader = leader_identity(&env).await.expect("a leader");
        replicas
            .remove(&leader)
            .expect("leader is one of ours")
            .abort();
        next_id += 1;
        let id = format!("op-new-{next_id}");
        replicas.insert(id.clone(), replica(&env, &id));
    }

    let nodes: Api<Node> = Api::all(env.client());
    env.wait_for(
        "every node Done on 4230.0.0 and schedulable",
        Duration::from_secs(300),
        move || {
            let nodes = nodes.clone();
            async move {
                let list = nodes.list(&ListParams::default()).await?;
                Ok(list.items.len() == 6
                    && list.items.iter().all(|n| {
                        label(n, keys::PHASE).as_deref() == Some("Done")
                            && annotation(n, keys::BOOTED_VERSION).as_deref() == Some(TO)
                            && !n
                                .spec
                                .as_ref()
                                .and_then(|s| s.unschedulable)
                                .unwrap_or(false)
                    }))
            }
        },
    )
    .await
    .expect("rollout finished");
    watcher_task.abort();
    let peak = observed.lock().expect("observations").peak.clone();
    assert!(
        peak.get("blue").copied().unwrap_or(0) <= 1,
        "blue exceeded maxUnavailable 1: {peak:?}"
    );
    assert!(
        peak.get("green").copied().unwrap_or(0) <= 2,
        "green exceeded maxUnavailable 2: {peak:?}"
    );
    assert!(
        peak.get("green").copied().unwrap_or(0) >= 1,
        "the watcher saw the rollout: {peak:?}"
    );
    for m in &machines {
        assert_eq!(
            m.boots(),
            2,
            "{} booted {} times (one reboot expected)",
            m.name,
            m.boots()
        );
    }
    // What a person sees on the nodes. Events are best effort: a leader killed between a
    // node's write and its Event loses that one Event (the next leader finds the step
    // done), so each kind must be on some node of the fleet, not on one chosen node.
    let mut reasons: Vec<String> = Vec::new();
    for m in &machines {
        reasons.extend(events_for(&env, &m.name).await.into_iter().map(|e| e.1));
    }
    for want in ["DrainStarted", "RebootGranted", "Rebooted", "Verified"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} missing from {reasons:?}"
        );
    }
    // The cordon and the uncordon are told in the drain's and the end's Event.
    let mut notes: Vec<(String, String)> = Vec::new();
    for m in &machines {
        notes.extend(
            events_for(&env, &m.name)
                .await
                .into_iter()
                .map(|e| (e.1, e.2)),
        );
    }
    for (reason, says) in [
        ("DrainStarted", "cordoned and draining"),
        ("Verified", "uncordoned the node drydock had cordoned"),
    ] {
        assert!(
            notes.iter().any(|(r, n)| r == reason && n.contains(says)),
            "no {reason} Event says {says:?}: {notes:?}"
        );
    }
    wait_pods_ready(&mut env, 6).await;
}

#[tokio::test]
async fn a_budget_that_allows_nothing_names_itself_and_the_node_proceeds_once_it_allows() {
    let (mut env, names) = env_with_nodes(2).await;
    setup(&env, "maxUnavailable: 1\nhealth: {bake: 0s}\n").await;
    // One pod, on node-0 only; its budget allows no disruption.
    let d = pinned("solo", 1, "node-0");
    apply(&env, d).await;
    apply(&env, pdb("solo", json!({"minAvailable": 1}))).await;
    wait_pods_ready(&mut env, 1).await;
    let m = machine(&env, &names[0], Duration::from_millis(300)).await;
    m.stage().await;
    let _op = replica(&env, "op-a");
    wait_node(&mut env, "node-0", "node-0 waits for shop/solo", 60, |n| {
        annotation(n, keys::REASON_CODE).as_deref() == Some("PdbBlocked")
            && annotation(n, keys::REASON).is_some_and(|r| r.contains("shop/solo"))
    })
    .await;
    let n = node(&env, "node-0").await;
    assert_eq!(label(&n, keys::PHASE).as_deref(), Some("Queued"));
    assert!(
        !n.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        "not cordoned while waiting"
    );
    assert_eq!(m.boots(), 1);
    // The budget allows one once the pod may run elsewhere and there are two of them.
    let mut d = deployment("solo", 2);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({});
    apply(&env, d).await;
    wait_node(
        &mut env,
        "node-0",
        "node-0 Done after the budget allowed it",
        120,
        |n| {
            label(n, keys::PHASE).as_deref() == Some("Done")
                && annotation(n, keys::BOOTED_VERSION).as_deref() == Some(TO)
        },
    )
    .await;
    assert_eq!(m.boots(), 2);
}

#[tokio::test]
async fn a_drain_goes_on_when_its_pods_grace_period_ends_not_at_the_next_poll() {
    let (mut env, names) = env_with_nodes(1).await;
    setup(&env, "maxUnavailable: 1\nhealth: {bake: 0s}\n").await;
    // A pod that takes its whole grace period (KWOK deletes it at its deletion timestamp).
    let mut d = pinned("slow", 1, "node-0");
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(2);
    apply(&env, d).await;
    wait_pods_ready(&mut env, 1).await;
    let m = machine(&env, &names[0], Duration::from_millis(300)).await;
    m.stage().await;
    // A poll so rare that only the pod's deletion timestamp can wake the drain in time
    // (the next wake-up otherwise: what the node shows settling, 10 s after the drain).
    let _op = replica_polling(&env, "op-a", Duration::from_secs(600));
    wait_node(
        &mut env,
        "node-0",
        "node-0 draining",
        60,
        phase_is("Draining"),
    )
    .await;
    let draining = std::time::Instant::now();
    wait_node(&mut env, "node-0", "node-0 past its drain", 60, |n| {
        label(n, keys::PHASE).as_deref() != Some("Draining")
    })
    .await;
    let took = draining.elapsed();
    assert!(
        took < Duration::from_secs(7),
        "the drain of a pod with 2 s of grace went on after {took:?}"
    );
    wait_node(&mut env, "node-0", "node-0 Done", 60, |n| {
        label(n, keys::PHASE).as_deref() == Some("Done")
            && annotation(n, keys::BOOTED_VERSION).as_deref() == Some(TO)
    })
    .await;
    assert_eq!(m.boots(), 2);
}

#[tokio::test]
async fn a_rollback_fails_the_node_uncordoned_and_halts_the_pool() {
    let (mut env, names) = env_with_nodes(2).await;
    setup(
        &env,
        "maxUnavailable: 1\nhealth: {bake: 0s, haltAfterFailures: 1}\n",
    )
    .await;
    let a = machine(&env, &names[0], Duration::from_millis(300)).await;
    let b = machine(&env, &names[1], Duration::from_millis(300)).await;
    a.sim.fail_next_boot();
    b.sim.fail_next_boot();
    a.stage().await;
    b.stage().await;
    let _op = replica(&env, "op-a");
    let api: Api<Node> = Api::all(env.client());
    env.wait_for("one node Failed", Duration::from_secs(120), move || {
        let api = api.clone();
        async move {
            Ok(api
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|n| label(n, keys::PHASE).as_deref() == Some("Failed")))
        }
    })
    .await
    .expect("a Failed node");
    let failed = if label(&node(&env, "node-0").await, keys::PHASE).as_deref() == Some("Failed") {
        "node-0"
    } else {
        "node-1"
    };
    let other = if failed == "node-0" {
        "node-1"
    } else {
        "node-0"
    };
    let n = node(&env, failed).await;
    assert_eq!(
        annotation(&n, keys::REASON_CODE).as_deref(),
        Some("Rollback")
    );
    assert!(
        !n.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        "uncordoned"
    );
    assert_eq!(annotation(&n, keys::BOOTED_VERSION).as_deref(), Some(FROM));
    let evs = events_for(&env, failed).await;
    assert!(
        evs.iter()
            .any(|e| e.0 == "Warning" && e.1 == "Failed" && e.2.contains("came back on 4081.2.0")),
        "{evs:?}"
    );
    // The pool halts: the other node is not started.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let o = node(&env, other).await;
    assert_eq!(
        annotation(&o, keys::REASON_CODE).as_deref(),
        Some("PoolHalted"),
        "{:?}",
        o.metadata.annotations
    );
    assert_eq!(b.boots().min(a.boots()), 1, "only one node rebooted");
    // A person looks, then releases the failed node (`drydock.dev/release` = its
    // phase-since): it leaves Failed and the pool moves on to the other node.
    let since = annotation(&n, keys::PHASE_SINCE).expect("phase-since");
    Api::<Node>::all(env.client())
        .patch(
            failed,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {keys::RELEASE: since}}})),
        )
        .await
        .expect("release");
    wait_node(&mut env, failed, "the failed node released", 60, |n| {
        matches!(label(n, keys::PHASE).as_deref(), Some("Idle"))
    })
    .await;
    let other_machine = if failed == "node-0" { &b } else { &a };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while other_machine.boots() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool did not move on after the release"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_node_that_never_returns_fails_and_a_drain_that_times_out_is_held() {
    let (mut env, names) = env_with_nodes(2).await;
    setup(
        &env,
        "maxUnavailable: 2\ndrain: {timeout: 5s, onTimeout: hold}\nhealth: {readyTimeout: 8s, bake: 0s, haltAfterFailures: 5}\n",
    )
    .await;
    // node-1 holds a pod that takes ten minutes to terminate once evicted.
    apply(&env, slow("node-1")).await;
    wait_pods_ready(&mut env, 1).await;
    // node-0's reboot takes far longer than readyTimeout.
    let lost = machine(&env, &names[0], Duration::from_secs(600)).await;
    let stuck = machine(&env, &names[1], Duration::from_millis(300)).await;
    lost.stage().await;
    stuck.stage().await;
    let _op = replica(&env, "op-a");
    wait_node(
        &mut env,
        "node-0",
        "node-0 Failed: never returned",
        90,
        phase_is("Failed"),
    )
    .await;
    let n = node(&env, "node-0").await;
    assert!(
        matches!(
            annotation(&n, keys::REASON_CODE).as_deref(),
            Some("NeverReturned")
        ),
        "{:?}",
        n.metadata.annotations
    );
    assert!(
        !n.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        "uncordoned"
    );

    wait_node(
        &mut env,
        "node-1",
        "node-1 Held after the drain timeout",
        90,
        phase_is("Held"),
    )
    .await;
    let n = node(&env, "node-1").await;
    assert_eq!(
        annotation(&n, keys::REASON_CODE).as_deref(),
        Some("DrainTimeout")
    );
    assert!(
        !n.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        "uncordoned"
    );
    assert_eq!(stuck.boots(), 1, "no reboot after a failed drain");
    let evs = events_for(&env, "node-1").await;
    assert!(
        evs.iter().any(|e| e.0 == "Warning" && e.1 == "Held"),
        "{evs:?}"
    );
    assert!(
        evs.iter()
            .any(|e| e.1 == "Held" && e.2.contains("uncordoned the node drydock had cordoned")),
        "{evs:?}"
    );
}

#[tokio::test]
async fn a_bad_configmap_is_rejected_visibly_and_the_last_good_policy_stays() {
    let (mut env, names) = env_with_nodes(1).await;
    setup(&env, "paused: true\n").await;
    let m = machine(&env, &names[0], Duration::from_millis(300)).await;
    m.stage().await;
    let port = drydock_testenv::free_port().expect("a free port");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let _op = replica_on(&env, "op-a", Some(addr));
    wait_node(&mut env, "node-0", "node-0 paused", 60, |n| {
        annotation(n, keys::REASON_CODE).as_deref() == Some("GloballyPaused")
    })
    .await;
    set_policy(&env, "paused: false\nmaxUnavailabel: 3\n").await;
    wait_config_error(&mut env, "maxUnavailabel").await;
    let evs = events_for(&env, "drydock-config").await;
    assert!(
        evs.iter()
            .any(|e| e.0 == "Warning" && e.1 == "ConfigRejected" && e.2.contains("maxUnavailable")),
        "{evs:?}"
    );
    // The last good policy (paused) stays in force.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = node(&env, "node-0").await;
    assert_eq!(
        annotation(&n, keys::REASON_CODE).as_deref(),
        Some("GloballyPaused")
    );
    assert_eq!(m.boots(), 1);
    // What Prometheus and the kubelet's probes read.
    let get = |path: &'static str| async move {
        let r = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("HTTP");
        (r.status().as_u16(), r.text().await.expect("body"))
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    for want in [
        "drydock_leader 1",
        "drydock_config_errors_total 1",
        "drydock_config_valid 0",
        "drydock_nodes{pool=\"default\",phase=\"Queued\"} 1",
        "drydock_planner_duration_seconds_count",
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }
    // A good one clears the annotation and the rollout goes on.
    set_policy(&env, "paused: false\nhealth: {bake: 0s}\n").await;
    wait_node(&mut env, "node-0", "node-0 Done", 90, phase_is("Done")).await;
    let (_, metrics) = get("/metrics").await;
    assert!(
        metrics.contains("drydock_reboots_granted_total{pool=\"default\"} 1"),
        "{metrics}"
    );
    // The node's own steps after the grant (the acknowledgement recorded, the boot
    // completed) were written as its agent reported them, by a step rather than a pass.
    let stepped: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("drydock_steps_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(stepped >= 1, "no step outside the passes:\n{metrics}");
    assert!(metrics.contains("drydock_config_valid 1"), "{metrics}");
    // Passes ran and each was timed whole.
    let passes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("drydock_pass_duration_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(passes.is_some_and(|n| n > 0), "{metrics}");
    assert_eq!(config_error(&env).await, None);
}

#[tokio::test]
async fn a_drain_that_times_out_with_on_timeout_force_deletes_what_remains() {
    let (mut env, names) = env_with_nodes(1).await;
    setup(
        &env,
        "maxUnavailable: 1\ndrain: {timeout: 4s, onTimeout: force}\nhealth: {bake: 0s}\n",
    )
    .await;
    // Two pods that can only run on node-0, behind a budget that allows one at a time:
    // once one is evicted its replacement cannot be scheduled, so the other never may be.
    let d = pinned("duo", 2, "node-0");
    apply(&env, d).await;
    apply(&env, pdb("duo", json!({"minAvailable": 1}))).await;
    wait_pods_ready(&mut env, 2).await;
    let m = machine(&env, &names[0], Duration::from_millis(300)).await;
    m.stage().await;
    let _op = replica(&env, "op-a");
    wait_node(
        &mut env,
        "node-0",
        "node-0 Done after a forced drain",
        120,
        |n| {
            label(n, keys::PHASE).as_deref() == Some("Done")
                && annotation(n, keys::BOOTED_VERSION).as_deref() == Some(TO)
                && !n
                    .spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false)
        },
    )
    .await;
    assert_eq!(m.boots(), 2);
    let evs = events_for(&env, "node-0").await;
    assert!(
        evs.iter()
            .any(|e| e.0 == "Warning" && e.1 == "DrainForced" && e.2.contains("onTimeout: force")),
        "{evs:?}"
    );
    // Both pods were asked for at once; the budget refused the second, by name.
    assert!(
        evs.iter().any(|e| e.0 == "Warning"
            && e.1 == "EvictionBlocked"
            && e.2.contains("PodDisruptionBudget shop/duo")),
        "{evs:?}"
    );
    // The workload comes back once the node is schedulable again.
    wait_pods_ready(&mut env, 2).await;
}

#[tokio::test]
async fn a_drain_that_times_out_with_on_timeout_reboot_reboots_anyway() {
    let (mut env, names) = env_with_nodes(1).await;
    setup(
        &env,
        "maxUnavailable: 1\ndrain: {timeout: 4s, onTimeout: reboot}\nhealth: {bake: 0s}\n",
    )
    .await;
    // A pod that takes ten minutes to terminate once evicted.
    apply(&env, slow("node-0")).await;
    wait_pods_ready(&mut env, 1).await;
    let m = machine(&env, &names[0], Duration::from_millis(300)).await;
    m.stage().await;
    let _op = replica(&env, "op-a");
    wait_node(
        &mut env,
        "node-0",
        "node-0 Done after rebooting anyway",
        120,
        |n| {
            label(n, keys::PHASE).as_deref() == Some("Done")
                && annotation(n, keys::BOOTED_VERSION).as_deref() == Some(TO)
        },
    )
    .await;
    assert_eq!(m.boots(), 2);
    let evs = events_for(&env, "node-0").await;
    assert!(evs.iter().any(|e| e.1 == "RebootGranted"), "{evs:?}");
    let n = node(&env, "node-0").await;
    assert!(
        !n.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        "uncordoned"
    );
}

#[tokio::test]
async fn a_repeated_event_is_counted_into_one_and_a_new_note_makes_a_new_one() {
    let (env, names) = env_with_nodes(1).await;
    let n = node(&env, &names[0]).await;
    let regarding = kube::Resource::object_ref(&n, &());
    let events = drydock_operator::events::Publisher::new(env.client(), "drydock-operator", "op-t");
    let blocked = "PDB shop/solo allows no disruption now";
    for _ in 0..3 {
        events
            .publish(&regarding, Kind::Warning, "EvictionBlocked", blocked)
            .await
            .expect("publish");
    }
    events
        .publish(
            &regarding,
            Kind::Warning,
            "EvictionBlocked",
            "PDB shop/other allows no disruption now",
        )
        .await
        .expect("publish");
    events
        .publish(
            &regarding,
            Kind::Normal,
            "DrainStarted",
            "cordoned and draining",
        )
        .await
        .expect("publish");
    assert_eq!(events.remembered(), 3, "one fingerprint per distinct Event");

    let all = Api::<Event>::namespaced(env.client(), "default")
        .list(&ListParams::default())
        .await
        .expect("events");
    let mine: Vec<&Event> = all
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(names[0].as_str()))
        .collect();
    assert_eq!(mine.len(), 3, "{mine:#?}");
    let with_note = |note: &str| {
        mine.iter()
            .find(|e| e.note.as_deref() == Some(note))
            .unwrap_or_else(|| panic!("an Event with note {note:?} in {mine:#?}"))
    };
    let repeated = with_note(blocked);
    assert_eq!(
        repeated.series.as_ref().map(|s| s.count),
        Some(3),
        "{repeated:#?}"
    );
    assert_eq!(repeated.type_.as_deref(), Some("Warning"));
    assert_eq!(
        repeated.reporting_controller.as_deref(),
        Some("drydock-operator")
    );
    assert_eq!(repeated.reporting_instance.as_deref(), Some("op-t"));
    assert_eq!(
        repeated.regarding.as_ref().and_then(|r| r.kind.as_deref()),
        Some("Node")
    );
    assert!(
        with_note("PDB shop/other allows no disruption now")
            .series
            .is_none()
    );
    let started = with_note("cordoned and draining");
    assert_eq!(started.reason.as_deref(), Some("DrainStarted"));
    assert_eq!(started.type_.as_deref(), Some("Normal"));
}

//! Helpers shared by the operator's end-to-end suites: the namespaces and policy, sample
//! workloads in `shop`, what the tests read back (pods Ready, Events, the policy's
//! rejection), and the independent availability watcher.
#![allow(dead_code)] // each suite uses its own subset

pub mod machines;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drydock_core::protocol::keys;
use drydock_testenv::{TestEnv, workload};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::task::JoinHandle;

/// The node's annotations, read now.
pub async fn node_annotations(env: &TestEnv, name: &str) -> BTreeMap<String, String> {
    Api::<Node>::all(env.client())
        .get(name)
        .await
        .expect("node")
        .metadata
        .annotations
        .unwrap_or_default()
}

/// The node's drydock phase label ("" when it has none).
pub fn phase_of(n: &Node) -> String {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::PHASE))
        .cloned()
        .unwrap_or_default()
}

/// Whether the node is cordoned.
pub fn is_cordoned(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

/// A control plane with `n` Ready worker nodes `node-0`… (label
/// `node-role.kubernetes.io/worker`).
pub async fn workers(n: usize) -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::start().await.expect("control plane");
    let names = env
        .add_ready_nodes(
            "node",
            n,
            &[("node-role.kubernetes.io/worker", "")],
            Duration::from_secs(60),
        )
        .await
        .expect("nodes");
    (env, names)
}

#[derive(Debug, Default)]
pub struct Observed {
    /// Highest number of unavailable nodes per pool at any observed moment.
    pub peak: BTreeMap<String, usize>,
}

/// The most nodes of `pool` the watcher saw unavailable at once (None: never any).
pub fn peak(observed: &Mutex<Observed>, pool: &str) -> Option<usize> {
    observed.lock().expect("observed").peak.get(pool).copied()
}

/// The independent watcher: its own Node watch; a node is unavailable when cordoned,
/// NotReady, or in a disrupting phase.
pub fn watch_availability(
    env: &TestEnv,
    pool_of: HashMap<String, String>,
) -> (Arc<Mutex<Observed>>, JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Observed::default()));
    let s = seen.clone();
    let api: Api<Node> = Api::all(env.client());
    let task = tokio::spawn(async move {
        let mut current: HashMap<String, bool> = HashMap::new();
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).touched_objects());
        while let Some(Ok(n)) = stream.next().await {
            let name = n.metadata.name.clone().unwrap_or_default();
            let phase = phase_of(&n);
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let cordoned = is_cordoned(&n);
            let disrupting = matches!(
                phase.as_str(),
                "Draining" | "RebootGranted" | "Rebooting" | "Verifying"
            );
            current.insert(name, cordoned || !ready || disrupting);
            let mut per_pool: BTreeMap<String, usize> = BTreeMap::new();
            for (node, unavailable) in &current {
                if *unavailable && let Some(p) = pool_of.get(node) {
                    *per_pool.entry(p.clone()).or_default() += 1;
                }
            }
            if let Ok(mut o) = s.lock() {
                for (p, c) in per_pool {
                    let e = o.peak.entry(p).or_default();
                    *e = (*e).max(c);
                }
            }
        }
    });
    (seen, task)
}

/// drydock's namespace.
pub const NS: &str = "drydock-system";

/// Creates drydock's namespace and `shop`, and sets the policy.
pub async fn setup(env: &TestEnv, policy: &str) {
    let client = env.client();
    let ns: Api<Namespace> = Api::all(client.clone());
    for n in [NS, "shop"] {
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": n}})).expect("namespace"),
        )
        .await
        .expect("namespace");
    }
    set_policy(env, policy).await;
}

/// Applies `policy` as the drydock-config ConfigMap.
pub async fn set_policy(env: &TestEnv, policy: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), NS);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "drydock-config", "namespace": NS},
        "data": {"config.yaml": policy}});
    cms.patch(
        "drydock-config",
        &PatchParams::apply("test").force(),
        &Patch::Apply(&cm),
    )
    .await
    .expect("ConfigMap");
}

/// Server-side applies a Deployment, StatefulSet or PodDisruptionBudget.
pub async fn apply(env: &TestEnv, doc: serde_json::Value) {
    env.apply(&doc)
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", doc["metadata"]["name"]));
}

/// A Deployment of pause pods in `shop`.
pub fn deployment(name: &str, replicas: u32) -> serde_json::Value {
    workload::deployment("shop", name, replicas)
}

/// A Deployment whose pods may only run on `node`.
pub fn pinned(name: &str, replicas: u32, node: &str) -> serde_json::Value {
    let mut d = deployment(name, replicas);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    d
}

/// A PodDisruptionBudget in `shop` over the pods of `name`.
pub fn pdb(name: &str, spec: serde_json::Value) -> serde_json::Value {
    workload::pdb("shop", name, spec)
}

/// Waits until every pod in `shop` is Running and Ready and `count` in all.
pub async fn wait_pods_ready(env: &mut TestEnv, count: usize) {
    env.wait_pods_ready("shop", count, Duration::from_secs(120))
        .await
        .expect("workload Ready");
}

/// (type, reason, note) of every Event about the object named `name`.
pub async fn events_for(env: &TestEnv, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::all(env.client());
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// A Deployment of one pod on `node` that takes ten minutes to terminate once evicted.
pub fn slow(node: &str) -> serde_json::Value {
    let mut d = pinned("slow", 1, node);
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(600);
    d
}

/// The operator's report of a rejected policy on the ConfigMap, if any.
pub async fn config_error(env: &TestEnv) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), NS);
    cms.get("drydock-config")
        .await
        .expect("ConfigMap")
        .metadata
        .annotations
        .unwrap_or_default()
        .get(drydock_operator::controller::CONFIG_ERROR_ANNOTATION)
        .cloned()
}

/// Waits until the operator reports a rejected policy whose errors mention `needle`.
pub async fn wait_config_error(env: &mut TestEnv, needle: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), NS);
    let needle = needle.to_string();
    env.wait_for(
        &format!("the policy's rejection mentioning {needle:?} on the ConfigMap"),
        Duration::from_secs(30),
        move || {
            let (cms, needle) = (cms.clone(), needle.clone());
            async move {
                let cm = cms.get("drydock-config").await?;
                Ok(cm
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .get(drydock_operator::controller::CONFIG_ERROR_ANNOTATION)
                    .is_some_and(|e| e.contains(&needle)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A free loopback address for a replica's HTTP endpoints.
pub fn free_addr() -> std::net::SocketAddr {
    let port = drydock_testenv::free_port().expect("a free port");
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until the replica at `addr` answers `/readyz` with 200 (its caches are synced).
pub async fn wait_proxy_ready(http: &reqwest::Client, addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the operator at {addr} did not become ready");
}

/// Waits until every node reports `version` booted and is Done (or Idle) and uncordoned;
/// on timeout, fails naming each node's version, phase, reason and agent message.
pub async fn wait_all_on(env: &TestEnv, names: &[String], version: &str, secs: u64) {
    let api: Api<Node> = Api::all(env.client());
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let mut pending = Vec::new();
        for n in names {
            let node = api.get(n).await.expect("node");
            let a = node.metadata.annotations.clone().unwrap_or_default();
            let phase = phase_of(&node);
            let cordoned = is_cordoned(&node);
            let on = a.get(keys::BOOTED_VERSION).map(String::as_str) == Some(version);
            if !(on && (phase == "Done" || phase == "Idle") && !cordoned) {
                pending.push(format!(
                    "{n}: booted {:?}, phase {phase}, cordoned {cordoned}, reason {:?}, agent {:?}",
                    a.get(keys::BOOTED_VERSION),
                    a.get(keys::REASON),
                    a.get(keys::AGENT_MESSAGE)
                ));
            }
        }
        if pending.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every node reached {version} within {secs} s:\n{}",
            pending.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

//! Fedora CoreOS nodes that run Zincati instead of a drydock agent, on the real control
//! plane: each KWOK node gets a simulated Zincati that speaks the protocols as Zincati
//! does — the Cincinnati graph (`GET /v1/graph` with its client parameters) and FleetLock
//! (`POST /v1/pre-reboot`, `/v1/steady-state`, header `fleet-lock-protocol: true`) — and
//! "reboots" the way the kubelet shows a reboot: a new `status.nodeInfo.bootID` and the
//! new version in `status.nodeInfo.osImage`.
//!
//! - Pinned to B while the upstream graph offers C, every node stages and boots B, one
//!   node at a time; lifting the pin takes every node to C, again one at a time.
//! - Wrong requests get the protocol's JSON error kinds with the exact 4xx.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drydock_core::fleetlock::{STANDIN_AGENT, zincati_id};
use drydock_core::protocol::keys;
use drydock_operator::zincati::ZincatiConfig;
use drydock_sim::cincinnati::{CincinnatiServer, ReleaseSpec};
use drydock_sim::rpm_ostree::checksum_of;
use drydock_testenv::TestEnv;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

mod common;
use common::machines::*;
use common::*;

const A: &str = "41.20251001.3.0";
const B: &str = "41.20251015.3.0";
const C: &str = "41.20251029.3.0";

fn policy(pin: Option<&str>) -> String {
    policy_with(pin, 1)
}

fn policy_with(pin: Option<&str>, max_unavailable: u32) -> String {
    let version = pin
        .map(|p| format!("    version: \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        "health: {{bake: 1s, readyTimeout: 1m}}\npools:\n  - name: workers\n    nodeSelector: {{node-role.kubernetes.io/worker: \"\"}}\n    maxUnavailable: {max_unavailable}\n{version}"
    )
}

/// What the kubelet of a node running `version` in boot `boot` reports.
async fn kubelet_reports(client: &kube::Client, node: &str, version: &str, boot: &str) {
    Api::<Node>::all(client.clone())
        .patch_status(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nodeInfo": {
                "osImage": format!("Fedora CoreOS {version}"),
                "bootID": boot,
            }}})),
        )
        .await
        .expect("patch nodeInfo");
}

/// Every version each node booted.
#[derive(Default)]
struct Log {
    boots: HashMap<String, Vec<String>>,
}

/// A simulated Zincati for one node: report steady, check the graph, stage the one
/// release it offers (following edges from the booted commit, newest age index first),
/// ask FleetLock for the reboot lock until granted, reboot, and start over.
async fn zincati(client: kube::Client, node: String, base: String, log: Arc<Mutex<Log>>) {
    let http = reqwest::Client::new();
    let id = zincati_id(&drydock_testenv::machine_id(&node)).expect("client id");
    let body = json!({"client_params": {"id": id, "group": "default"}}).to_string();
    let fleetlock = |path: &str| {
        http.post(format!("{base}/v1/{path}"))
            .header("fleet-lock-protocol", "true")
            .body(body.clone())
            .send()
    };
    let mut version = A.to_string();
    let mut boot = 0u32;
    loop {
        // Report steady until the server agrees.
        loop {
            match fleetlock("steady-state").await {
                Ok(r) if r.status() == 200 => break,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        // Check for an update until one is offered.
        let target = loop {
            let r = http
                .get(format!("{base}/v1/graph"))
                .header("accept", "application/json")
                .query(&[
                    ("basearch", "x86_64"),
                    ("stream", "stable"),
                    ("os_version", version.as_str()),
                    ("os_checksum", checksum_of(&version).as_str()),
                    ("group", "default"),
                    ("node_uuid", id.as_str()),
                    ("platform", "metal"),
                ])
                .send()
                .await;
            if let Ok(r) = r
                && r.status() == 200
                && let Ok(graph) = r
                    .text()
                    .await
                    .map_err(|_| ())
                    .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|_| ()))
                && let Some(t) = newest_edge(&graph, &checksum_of(&version))
            {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        // Staged (finalization locked); ask for the reboot lock until granted.
        loop {
            match fleetlock("pre-reboot").await {
                Ok(r) if r.status() == 200 => break,
                Ok(r) => {
                    assert_eq!(r.status(), 409, "pre-reboot refusals are conflicts");
                    let e: Value = serde_json::from_str(&r.text().await.expect("a body"))
                        .expect("a JSON error");
                    assert_eq!(e["kind"], "failed_lock", "{e}");
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Reboot: down for a moment, then the kubelet reports the new boot.
        tokio::time::sleep(Duration::from_millis(500)).await;
        boot += 1;
        version = target;
        if let Ok(mut l) = log.lock() {
            l.boots
                .entry(node.clone())
                .or_default()
                .push(version.clone());
        }
        kubelet_reports(&client, &node, &version, &format!("{node}-boot-{boot}")).await;
    }
}

/// The newest release one edge away from the booted commit, as Zincati picks it.
fn newest_edge(graph: &Value, booted: &str) -> Option<String> {
    let nodes = graph["nodes"].as_array()?;
    let here = nodes.iter().position(|n| n["payload"] == booted)?;
    graph["edges"]
        .as_array()?
        .iter()
        .filter(|e| e[0].as_u64() == Some(here as u64))
        .filter_map(|e| nodes.get(e[1].as_u64()? as usize))
        .max_by_key(|n| {
            n["metadata"]["org.fedoraproject.coreos.releases.age_index"]
                .as_str()
                .and_then(|a| a.parse::<u64>().ok())
        })
        .and_then(|n| n["version"].as_str().map(str::to_string))
}

async fn operator_for_zincati(env: &TestEnv, upstream: String) -> String {
    let addr = free_addr();
    let _op = replica_with(
        env,
        "op-0",
        Some(addr),
        Upstreams {
            omaha: None,
            zincati: Some(ZincatiConfig {
                upstream,
                timeout: Duration::from_secs(5),
            }),
        },
    );
    wait_proxy_ready(&reqwest::Client::new(), addr).await;
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zincati_nodes_reach_the_pinned_release_through_fleetlock_one_at_a_time() {
    let (env, names) = workers(3).await;
    setup(&env, &policy(Some(B))).await;
    for n in &names {
        kubelet_reports(&env.client(), n, A, &format!("{n}-boot-0")).await;
    }
    let upstream = CincinnatiServer::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake Cincinnati");
    upstream.set_releases(
        "stable",
        vec![
            ReleaseSpec::new(A),
            ReleaseSpec::new(B),
            ReleaseSpec::new(C),
        ],
    );
    let pool_of: HashMap<String, String> = names
        .iter()
        .map(|n| (n.clone(), "workers".to_string()))
        .collect();
    let (observed, _watch) = watch_availability(&env, pool_of);
    let base = operator_for_zincati(&env, upstream.url()).await;
    let log: Arc<Mutex<Log>> = Arc::default();
    let clients: Vec<_> = names
        .iter()
        .map(|n| tokio::spawn(zincati(env.client(), n.clone(), base.clone(), log.clone())))
        .collect();

    // Pinned to B though upstream offers C from A.
    wait_all_on(&env, &names, B, 120).await;
    for n in &names {
        let a = node_annotations(&env, n).await;
        assert_eq!(
            a.get(keys::AGENT_VERSION).map(String::as_str),
            Some(STANDIN_AGENT)
        );
        assert_eq!(
            a.get(keys::STAGED_VERSION),
            None,
            "{n}: nothing left staged"
        );
    }
    {
        let l = log.lock().expect("log");
        for n in &names {
            assert_eq!(l.boots[n], vec![B], "{n} booted exactly B");
        }
    }

    // Lifting the pin lets the rollout go on to C.
    set_policy(&env, &policy(None)).await;
    wait_all_on(&env, &names, C, 180).await;
    {
        let l = log.lock().expect("log");
        for n in &names {
            assert_eq!(l.boots[n], vec![B, C], "{n} booted B then C, each once");
        }
    }
    assert_eq!(
        peak(&observed, "workers"),
        Some(1),
        "never more than maxUnavailable 1 at once"
    );
    // Upstream was asked for the node's stream and architecture only.
    let requests = upstream.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        let keys: Vec<&str> = r.params.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["basearch", "stream"], "{r:?}");
    }
    for c in clients {
        c.abort();
    }
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    header: Option<&str>,
    body: String,
) -> (u16, Value) {
    let mut req = http.post(url).body(body);
    if let Some(h) = header {
        req = req.header("fleet-lock-protocol", h);
    }
    let r = req.send().await.expect("a response");
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON, got {text:?}"));
    (status, v)
}

fn error(kind: &str, value: &str) -> Value {
    json!({"kind": kind, "value": value})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_zincati_requests_get_the_protocols_error_kinds() {
    let (env, names) = workers(2).await;
    // Both nodes may download at once, so the rollout order withholds nothing here.
    setup(&env, &policy_with(None, 2)).await;
    kubelet_reports(&env.client(), &names[0], A, "boot-0").await;
    // names[1] runs a drydock agent: FleetLock never speaks for it.
    Api::<Node>::all(env.client())
        .patch(
            &names[1],
            &PatchParams::apply("drydock-agent"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": names[1], "annotations": {keys::AGENT_VERSION: "0.1.0"}},
            })),
        )
        .await
        .expect("agent status");
    let upstream = CincinnatiServer::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake Cincinnati");
    upstream.set_releases("stable", vec![ReleaseSpec::new(A), ReleaseSpec::new(B)]);
    let base = operator_for_zincati(&env, upstream.url()).await;
    let http = reqwest::Client::new();
    let id = |n: &str| zincati_id(&drydock_testenv::machine_id(n)).expect("id");
    let params =
        |id: &str, group: &str| json!({"client_params": {"id": id, "group": group}}).to_string();
    let pre = format!("{base}/v1/pre-reboot");
    let steady = format!("{base}/v1/steady-state");
    let good = params(&id(&names[0]), "default");

    for url in [&pre, &steady] {
        assert_eq!(
            post(&http, url, None, good.clone()).await,
            (
                400,
                error(
                    "missing_header",
                    "header fleet-lock-protocol: true is missing"
                )
            )
        );
        assert_eq!(
            post(&http, url, Some("false"), good.clone()).await,
            (
                400,
                error(
                    "missing_header",
                    "header fleet-lock-protocol must be \"true\", not \"false\""
                )
            )
        );
        let (status, e) = post(&http, url, Some("true"), "{\"client_params\":".into()).await;
        assert_eq!((status, &e["kind"]), (400, &json!("malformed_body")), "{e}");
        assert!(
            e["value"]
                .as_str()
                .is_some_and(|v| v.starts_with("the body is not JSON")),
            "{e}"
        );
        assert_eq!(
            post(
                &http,
                url,
                Some("true"),
                json!({"client_params": {"group": "default"}}).to_string()
            )
            .await,
            (400, error("malformed_body", "client_params.id is missing"))
        );
        assert_eq!(
            post(&http, url, Some("true"), params(&id(&names[0]), "a b")).await,
            (
                400,
                error("invalid_group", "group \"a b\" must match ^[a-zA-Z0-9.-]+$")
            )
        );
        assert_eq!(
            post(&http, url, Some("true"), params("", "default")).await,
            (
                400,
                error("invalid_id", "client_params.id must be 1 to 253 characters")
            )
        );
        let unknown = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            post(&http, url, Some("true"), params(unknown, "default")).await,
            (
                404,
                error(
                    "unknown_id",
                    &format!(
                        "no Node's status.nodeInfo.machineID gives Zincati client id \"{unknown}\""
                    )
                )
            )
        );
        assert_eq!(
            post(&http, url, Some("true"), " ".repeat(16 * 1024 + 1)).await,
            (413, error("body_too_large", "the body is over 16384 bytes"))
        );
        assert_eq!(
            post(&http, url, Some("true"), params(&id(&names[1]), "default")).await,
            (
                409,
                error(
                    "agent_managed",
                    &format!(
                        "node {} runs drydock-agent; FleetLock does not speak for it",
                        names[1]
                    )
                )
            )
        );
    }
    // Nothing was offered yet: the lock is refused, and the answer says what to fix.
    let (status, e) = post(&http, &pre, Some("true"), good.clone()).await;
    assert_eq!((status, &e["kind"]), (409, &json!("failed_lock")), "{e}");
    assert!(
        e["value"].as_str().is_some_and(|v| v.contains("base_url")),
        "{e}"
    );
    // steady-state is idempotent.
    for _ in 0..2 {
        assert_eq!(
            post(&http, &steady, Some("true"), good.clone()).await,
            (200, json!({}))
        );
    }

    // The graph endpoint: parameters, content type, unknown nodes, a broken upstream.
    let graph = |query: Vec<(&'static str, String)>, accept: &'static str| {
        let http = http.clone();
        let url = format!("{base}/v1/graph");
        async move {
            let r = http
                .get(url)
                .header("accept", accept)
                .query(&query)
                .send()
                .await
                .expect("a response");
            let status = r.status().as_u16();
            (
                status,
                r.text()
                    .await
                    .map_err(|_| ())
                    .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|_| ()))
                    .expect("JSON"),
            )
        }
    };
    let full = |node_uuid: String| {
        vec![
            ("basearch", "x86_64".to_string()),
            ("stream", "stable".to_string()),
            ("os_version", A.to_string()),
            ("os_checksum", checksum_of(A)),
            ("node_uuid", node_uuid),
        ]
    };
    assert_eq!(
        graph(
            vec![("basearch", "x86_64".into()), ("stream", "stable".into())],
            "application/json"
        )
        .await,
        (
            400,
            error(
                "missing_params",
                "mandatory client parameters missing: os_checksum, node_uuid"
            )
        )
    );
    assert_eq!(
        graph(full(id(&names[0])), "text/html").await,
        (
            406,
            error(
                "invalid_content_type",
                "Accept is \"text/html\"; the graph is served as application/json"
            )
        )
    );
    let unknown = "fedcba9876543210fedcba9876543210".to_string();
    assert_eq!(
        graph(full(unknown.clone()), "application/json").await.0,
        404
    );
    let (status, doc) = graph(full(id(&names[0])), "application/json").await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        newest_edge(&doc, &checksum_of(A)).as_deref(),
        Some(B),
        "{doc}"
    );
    let a = node_annotations(&env, &names[0]).await;
    assert_eq!(a.get(keys::ZINCATI_OFFER).map(String::as_str), Some(B));
    assert_eq!(a.get(keys::BOOTED_VERSION).map(String::as_str), Some(A));
    assert_eq!(a.get(keys::BOOT_ID).map(String::as_str), Some("boot-0"));

    let broken = operator_for_zincati(&env, "http://127.0.0.1:9".into()).await;
    let r = http
        .get(format!("{broken}/v1/graph"))
        .header("accept", "application/json")
        .query(&full(id(&names[0])))
        .send()
        .await
        .expect("a response");
    assert_eq!(r.status().as_u16(), 502);
    let e: Value = serde_json::from_str(&r.text().await.expect("a body")).expect("JSON");
    assert_eq!(e["kind"], "upstream_failed", "{e}");
    // The node keeps what it had; a broken upstream offers nothing new.
    let after: BTreeMap<String, String> = node_annotations(&env, &names[0]).await;
    assert_eq!(after.get(keys::ZINCATI_OFFER).map(String::as_str), Some(B));
}

//! drydockctl against the real control plane: `status`, live `plan`, `pause`/`resume`
//! (editing the policy ConfigMap without losing its comments) and `hold`/`release`, plus
//! the errors a person meets: no kubeconfig, drydock not installed, not allowed, API
//! server unreachable.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use drydock_core::protocol::{AgentStatus, OperatorState, Phase, UpdateStatus, keys};
use drydock_core::version::{OsFamily, OsVersion};
use drydock_testenv::TestEnv;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "drydock-system";
const POLICY: &str = "# test policy: blue first\nmaxUnavailable: 1   # one at a time\npools:\n  - name: blue   # zone a\n    nodeSelector: {topology.kubernetes.io/zone: zone-a}\n";

fn ctl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drydockctl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("drydockctl runs")
}

fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = ctl(kubeconfig, args);
    assert!(
        out.status.success(),
        "drydockctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(kubeconfig: &Path, args: &[&str]) -> String {
    let out = ctl(kubeconfig, args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "drydockctl {args:?} should fail"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn status_json(kubeconfig: &Path) -> Value {
    serde_json::from_str(&ok(kubeconfig, &["status", "-o", "json"])).expect("status JSON")
}

fn node_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {status}"))
}

fn pool_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("pool {name} missing from {status}"))
}

fn version(v: &str) -> Option<OsVersion> {
    Some(OsVersion::parse(OsFamily::Flatcar, v).expect("version"))
}

/// Writes what an agent (and optionally the operator) would have written on a node.
async fn report(env: &TestEnv, node: &str, booted: &str, staged: &str, op: Option<OperatorState>) {
    let status = AgentStatus {
        os: Some(OsFamily::Flatcar),
        booted_version: version(booted),
        booted_slot: Some("A".into()),
        boot_id: Some("0b6c7a29-3f7e-4a8f-9d55-2f0c1e9d4b11".into()),
        staged_version: version(staged),
        update_status: Some(if booted == staged {
            UpdateStatus::Idle
        } else {
            UpdateStatus::Staged
        }),
        agent_version: Some("0.1.0".into()),
        reboot_needed: booted != staged,
        ..Default::default()
    };
    let api: Api<Node> = Api::all(env.client());
    let (a, l) = status.to_metadata();
    let patch = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "annotations": a, "labels": l}});
    api.patch(
        node,
        &PatchParams::apply("drydock-agent").force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("agent status");
    if let Some(op) = op {
        let (a, l) = op.to_metadata();
        let patch = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "annotations": a, "labels": l}});
        api.patch(
            node,
            &PatchParams::apply("drydock-operator").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("operator state");
    }
}

async fn create_namespace(env: &TestEnv, name: &str) {
    Api::<Namespace>::all(env.client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns"),
        )
        .await
        .expect("namespace");
}

async fn policy_text(env: &TestEnv) -> String {
    Api::<ConfigMap>::namespaced(env.client(), NS)
        .get("drydock-config")
        .await
        .expect("ConfigMap")
        .data
        .and_then(|d| d.get("config.yaml").cloned())
        .unwrap_or_default()
}

async fn annotations(env: &TestEnv, node: &str) -> std::collections::BTreeMap<String, String> {
    Api::<Node>::all(env.client())
        .get(node)
        .await
        .expect("node")
        .metadata
        .annotations
        .unwrap_or_default()
}

#[tokio::test]
async fn status_plan_pause_resume_hold_release_on_a_live_cluster() {
    let mut env = TestEnv::start().await.expect("control plane");
    let nodes = env
        .add_ready_nodes("node", 3, &[], Duration::from_secs(60))
        .await
        .expect("nodes");
    let kc = env.kubeconfig().to_path_buf();
    create_namespace(&env, NS).await;
    Api::<ConfigMap>::namespaced(env.client(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "drydock-config"},
                "data": {"config.yaml": POLICY}}))
            .expect("cm"),
        )
        .await
        .expect("ConfigMap");
    // node-0 (zone-a, pool blue) and node-2 have an update staged; node-1 is current;
    // node-2 failed an earlier attempt.
    let failed_since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(300);
    report(&env, &nodes[0], "4081.2.0", "4230.0.0", None).await;
    report(&env, &nodes[1], "4230.0.0", "4230.0.0", None).await;
    report(
        &env,
        &nodes[2],
        "4081.2.0",
        "4230.0.0",
        Some(OperatorState {
            phase: Some(Phase::Failed),
            since: Some(failed_since),
            reason_code: Some("RolledBack".into()),
            reason: Some("booted 4081.2.0 again after the reboot".into()),
            ..Default::default()
        }),
    )
    .await;

    // status: a row per node, a line per pool.
    let s = status_json(&kc);
    let n0 = node_of(&s, "node-0");
    assert_eq!(n0["pool"], "blue");
    assert_eq!(n0["os"], "flatcar");
    assert_eq!(n0["booted"], "4081.2.0");
    assert_eq!(n0["target"], "4230.0.0");
    assert_eq!(n0["next"], "drain", "{s}");
    let n1 = node_of(&s, "node-1");
    assert_eq!(n1["done"], true);
    assert_eq!(n1["target"], Value::Null);
    let n2 = node_of(&s, "node-2");
    assert_eq!(n2["phase"], "Failed");
    assert_eq!(n2["attention"], true);
    assert_eq!(
        n2["waiting"]["message"],
        "booted 4081.2.0 again after the reboot"
    );
    assert!(n2["forSeconds"].as_i64().expect("age") >= 300);
    let blue = pool_of(&s, "blue");
    assert_eq!(
        (blue["nodes"].as_u64(), blue["done"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(blue["maxUnavailable"], 1);
    let default = pool_of(&s, "default");
    assert_eq!(
        (default["nodes"].as_u64(), default["done"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(default["halted"], true, "a Failed node halts its pool: {s}");

    // The table, piped: plain text, progress bars, the reason a person must act.
    let table = ok(&kc, &["status"]);
    assert!(
        !table.contains('\x1b'),
        "colour codes in piped output:\n{table}"
    );
    assert!(table.contains("POOL") && table.contains("NODE"), "{table}");
    assert!(table.contains("[--------------------]"), "{table}");
    assert!(table.contains("[##########----------]"), "{table}");
    assert!(table.contains("HALTED"), "{table}");
    assert!(table.contains("! Failed: booted 4081.2.0 again"), "{table}");

    // plan, live.
    let plan: Value = serde_json::from_str(&ok(&kc, &["plan", "-o", "json"])).expect("plan");
    let actions = plan["actions"].as_array().expect("actions");
    assert!(
        actions
            .iter()
            .any(|a| a["node"] == "node-0" && a["action"] == "drain"),
        "{plan}"
    );
    let table = ok(&kc, &["plan"]);
    assert!(
        table.contains("node-0") && table.contains("drain"),
        "{table}"
    );

    // pause everywhere: the ConfigMap keeps its comments; nothing new starts.
    let out = ok(&kc, &["pause"]);
    assert!(out.contains("paused everywhere"), "{out}");
    assert!(out.contains("blue: running -> paused"), "{out}");
    let text = policy_text(&env).await;
    assert!(
        text.starts_with("# test policy: blue first\npaused: true\n"),
        "{text}"
    );
    assert!(
        text.contains("maxUnavailable: 1   # one at a time"),
        "{text}"
    );
    let plan: Value = serde_json::from_str(&ok(&kc, &["plan", "-o", "json"])).expect("plan");
    assert!(
        !plan["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["action"] == "drain"),
        "paused, yet: {plan}"
    );
    assert_eq!(pool_of(&status_json(&kc), "blue")["paused"], true);
    let out = ok(&kc, &["resume"]);
    assert!(out.contains("blue: paused -> running"), "{out}");
    assert!(policy_text(&env).await.contains("\npaused: false\n"));

    // One pool.
    let out = ok(&kc, &["pause", "--pool", "blue"]);
    assert!(
        out.contains("blue: running -> paused") && out.contains("default: running"),
        "{out}"
    );
    assert!(
        policy_text(&env)
            .await
            .contains("  - name: blue   # zone a\n    paused: true\n")
    );
    let s = status_json(&kc);
    assert_eq!(pool_of(&s, "blue")["paused"], true);
    assert_eq!(pool_of(&s, "default")["paused"], false);
    ok(&kc, &["resume", "--pool", "blue"]);
    assert_eq!(pool_of(&status_json(&kc), "blue")["paused"], false);
    let err = failed(&kc, &["pause", "--pool", "gpu"]);
    assert!(
        err.contains("no pool \"gpu\" in the policy (pools: blue, default)"),
        "{err}"
    );

    // hold and release.
    let out = ok(&kc, &["hold", "node-0", "--reason", "disk check"]);
    assert!(out.contains("node node-0: held (\"disk check\")"), "{out}");
    assert_eq!(
        annotations(&env, "node-0")
            .await
            .get(keys::HOLD)
            .map(String::as_str),
        Some("disk check")
    );
    assert_eq!(node_of(&status_json(&kc), "node-0")["next"], "hold");
    let out = ok(&kc, &["hold", "node-0", "--reason", "disk check"]);
    assert!(out.contains("already held"), "{out}");
    let out = ok(&kc, &["release", "node-0"]);
    assert!(out.contains("hold \"disk check\" removed"), "{out}");
    assert!(!annotations(&env, "node-0").await.contains_key(keys::HOLD));

    let out = ok(&kc, &["release", "node-2"]);
    assert!(out.contains("released from Failed"), "{out}");
    assert_eq!(
        annotations(&env, "node-2")
            .await
            .get(keys::RELEASE)
            .cloned(),
        Some(failed_since.to_string())
    );
    assert_eq!(node_of(&status_json(&kc), "node-2")["next"], "release");
    let out = ok(&kc, &["release", "node-2"]);
    assert!(out.contains("already released"), "{out}");
    let out = ok(&kc, &["release", "node-1"]);
    assert!(out.contains("nothing to release"), "{out}");
    let err = failed(&kc, &["hold", "node-9"]);
    assert!(err.contains("there is no node \"node-9\""), "{err}");
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let env = TestEnv::start().await.expect("control plane");
    let kc = env.kubeconfig().to_path_buf();

    // No kubeconfig anywhere.
    let home = tempfile::tempdir().expect("home");
    let out = Command::new(env!("CARGO_BIN_EXE_drydockctl"))
        .arg("status")
        .env("KUBECONFIG", home.path().join("missing"))
        .env("HOME", home.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cluster to talk to"), "{err}");
    assert!(err.contains("--kubeconfig or $KUBECONFIG"), "{err}");

    // drydock not installed.
    let err = failed(&kc, &["status"]);
    assert!(err.contains("drydock is not installed in this cluster: there is no ConfigMap drydock-system/drydock-config"), "{err}");
    let err = failed(&kc, &["pause"]);
    assert!(err.contains("drydock is not installed"), "{err}");

    // Not allowed: a ServiceAccount with no rights.
    create_namespace(&env, "other").await;
    let sas: Api<ServiceAccount> = Api::namespaced(env.client(), "other");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "nobody"}})).expect("sa"),
    )
    .await
    .expect("sa");
    let token = env
        .service_account_token("other", "nobody", None)
        .await
        .expect("token");
    let nobody = env.token_kubeconfig(&token, None).expect("kubeconfig");
    let err = failed(&nobody, &["status"]);
    assert!(
        err.contains("not allowed reading the ConfigMap drydock-system/drydock-config"),
        "{err}"
    );
    let err = failed(&nobody, &["hold", "node-0"]);
    assert!(err.contains("not allowed reading node node-0"), "{err}");

    // Unreachable.
    let nowhere = env
        .token_kubeconfig(&token, Some("https://127.0.0.1:1"))
        .expect("kubeconfig");
    let err = failed(&nowhere, &["status"]);
    assert!(
        err.contains("cannot reach the API server at https://127.0.0.1:1"),
        "{err}"
    );
}

//! The manifests in `deploy/` on the real control plane: each overlay passes a server-side
//! dry run; the rendered objects carry the promised security settings; the agent's
//! admission policy confines a pod-bound agent token to its own Node and its own keys; and
//! the real operator binary does its work with nothing but its ServiceAccount's rights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use drydock_core::protocol::{AgentStatus, UpdateStatus, keys};
use drydock_core::version::{OsFamily, OsVersion};
use drydock_testenv::TestEnv;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use serde_yaml::Value;

mod common;
use common::{NS, apply, events_for, pdb, pinned, set_policy, wait_config_error, wait_pods_ready};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl() -> PathBuf {
    drydock_testenv::bin_dir()
        .unwrap_or_else(|e| panic!("{e}"))
        .join("kubectl")
}

/// Runs kubectl against the plane; returns stdout, panics with stderr on failure.
fn run_kubectl(env: &TestEnv, args: &[&str]) -> String {
    let out = std::process::Command::new(kubectl())
        .arg(format!("--kubeconfig={}", env.kubeconfig().display()))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl kustomize` of an overlay, as YAML documents (no cluster needed).
fn rendered(overlay: &str) -> Vec<Value> {
    let out = std::process::Command::new(kubectl())
        .args(["kustomize", &format!("deploy/overlays/{overlay}")])
        .current_dir(repo())
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("kustomize output is YAML"))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the overlay"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Mount path → read-only, for a DaemonSet/Deployment's first container.
fn mounts(workload: &Value) -> BTreeMap<String, bool> {
    workload["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().expect("mountPath").to_string(),
                m["readOnly"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn assert_hardened(workload: &Value, what: &str) {
    let pod = &workload["spec"]["template"]["spec"];
    let c = &pod["containers"][0]["securityContext"];
    assert_eq!(
        c["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{what}"
    );
    assert_eq!(c["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
    assert_eq!(strs(&c["capabilities"]["drop"]), vec!["ALL"], "{what}");
    assert!(
        c["capabilities"]["add"].is_null(),
        "{what} adds capabilities"
    );
    assert_ne!(c["privileged"].as_bool(), Some(true), "{what}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault"),
        "{what}"
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host].as_bool(), Some(true), "{what} uses {host}");
    }
}

#[test]
fn the_overlays_render_least_privilege() {
    for overlay in ["flatcar", "fcos"] {
        let docs = rendered(overlay);
        for d in &docs {
            if d["kind"].as_str() != Some("Namespace")
                && !d["kind"].as_str().unwrap_or("").starts_with("Cluster")
                && !d["kind"].as_str().unwrap_or("").starts_with("Validating")
            {
                assert_eq!(d["metadata"]["namespace"].as_str(), Some(NS), "{d:?}");
            }
        }
        // Nobody may read Secrets; the agent may touch nothing but Nodes.
        for d in &docs {
            let kind = d["kind"].as_str().unwrap_or("");
            if kind == "Role" || kind == "ClusterRole" {
                for rule in d["rules"].as_sequence().expect("rules") {
                    let resources = strs(&rule["resources"]);
                    assert!(
                        !resources.iter().any(|r| r == "secrets" || r == "*"),
                        "{d:?}"
                    );
                    assert!(!strs(&rule["verbs"]).iter().any(|v| v == "*"), "{d:?}");
                }
            }
        }
        let agent_role = find(&docs, "ClusterRole", "drydock-agent");
        let rules = agent_role["rules"].as_sequence().expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(strs(&rules[0]["resources"]), vec!["nodes"]);
        assert_eq!(
            strs(&rules[0]["verbs"]),
            vec!["get", "list", "watch", "patch"]
        );

        let operator = find(&docs, "Deployment", "drydock-operator");
        assert_hardened(operator, "operator");
        let pod = &operator["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(operator["spec"]["replicas"].as_u64(), Some(2));
        assert!(
            !pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                .is_null()
        );
        assert!(pod["volumes"].is_null(), "the operator mounts nothing");
        find(&docs, "PodDisruptionBudget", "drydock-operator");
        find(&docs, "Service", "drydock-operator");
        let cm = find(&docs, "ConfigMap", "drydock-config");
        let policy = cm["data"]["config.yaml"].as_str().expect("config.yaml");
        drydock_core::Policy::from_yaml(policy)
            .unwrap_or_else(|e| panic!("the shipped policy is invalid: {e:?}"));

        let agent = find(&docs, "DaemonSet", "drydock-agent");
        assert_hardened(agent, "agent");
        let tolerations = agent["spec"]["template"]["spec"]["tolerations"]
            .as_sequence()
            .expect("tolerations");
        assert!(
            tolerations
                .iter()
                .any(|t| t["operator"].as_str() == Some("Exists") && t["key"].is_null()),
            "the agent must tolerate every taint"
        );
        let mut expected: BTreeMap<String, bool> = [
            ("/run/dbus/system_bus_socket", false),
            ("/host/etc/os-release", true),
            ("/host/proc/cmdline", true),
            ("/host/proc/sys/kernel/random/boot_id", true),
        ]
        .into_iter()
        .map(|(p, ro)| (p.to_string(), ro))
        .collect();
        if overlay == "flatcar" {
            expected.insert("/host/etc/flatcar".into(), false);
            expected.insert("/host/usr/share/flatcar".into(), true);
        } else {
            assert_eq!(
                agent["spec"]["template"]["spec"]["securityContext"]["seLinuxOptions"]["type"]
                    .as_str(),
                Some("spc_t")
            );
        }
        assert_eq!(mounts(agent), expected, "{overlay}: the agent's mounts");
    }
}

#[tokio::test]
async fn every_overlay_passes_a_server_side_dry_run() {
    let env = TestEnv::start().await.expect("control plane");
    // A dry run creates nothing, the namespace included, so the namespaced objects of the
    // dry run need it to exist.
    let ns: Api<Namespace> = Api::all(env.client());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace"),
    )
    .await
    .expect("namespace");
    for overlay in ["flatcar", "fcos"] {
        let out = run_kubectl(
            &env,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-k",
                &format!("deploy/overlays/{overlay}"),
            ],
        );
        for object in [
            "daemonset.apps/drydock-agent",
            "deployment.apps/drydock-operator",
            "validatingadmissionpolicy.admissionregistration.k8s.io/drydock-agent-own-node",
            "validatingadmissionpolicybinding.admissionregistration.k8s.io/drydock-agent-own-node",
            "clusterrole.rbac.authorization.k8s.io/drydock-operator",
            "configmap/drydock-config",
        ] {
            assert!(
                out.contains(&format!("{object} serverside-applied (server dry run)")),
                "{overlay}: {object} missing from:\n{out}"
            );
        }
    }
    // Nothing was created.
    let ds: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(env.client(), NS);
    assert!(ds.get_opt("drydock-agent").await.expect("get").is_none());
}

/// Installs the Flatcar overlay for real, with two Ready KWOK nodes.
async fn installed() -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::start().await.expect("control plane");
    let nodes = env
        .add_ready_nodes("node", 2, &[], Duration::from_secs(60))
        .await
        .expect("nodes");
    run_kubectl(
        &env,
        &["apply", "--server-side", "-k", "deploy/overlays/flatcar"],
    );
    (env, nodes)
}

async fn client_for(env: &TestEnv, token: &str) -> kube::Client {
    let path = env.token_kubeconfig(token, None).expect("token kubeconfig");
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("token config");
    kube::Client::try_from(config).expect("client")
}

async fn token(env: &TestEnv, sa: &str, bound_pod: Option<&Pod>) -> String {
    env.service_account_token(NS, sa, bound_pod)
        .await
        .expect("TokenRequest")
}

/// The agent's pod on `node`, once the DaemonSet has one there.
async fn agent_pod(env: &mut TestEnv, node: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.client(), NS);
    let lp = ListParams::default()
        .labels("app.kubernetes.io/name=drydock-agent")
        .fields(&format!("spec.nodeName={node}"));
    let (p2, lp2) = (pods.clone(), lp.clone());
    env.wait_for("the agent pod", Duration::from_secs(60), move || {
        let (pods, lp) = (p2.clone(), lp2.clone());
        async move { Ok(!pods.list(&lp).await?.items.is_empty()) }
    })
    .await
    .expect("agent pod");
    pods.list(&lp).await.expect("pods").items.remove(0)
}

/// An agent status as the agent would report it: 4081.2.0 booted, 4230.0.0 staged.
fn staged_status() -> AgentStatus {
    AgentStatus {
        os: Some(OsFamily::Flatcar),
        booted_version: Some(OsVersion::parse(OsFamily::Flatcar, "4081.2.0").expect("version")),
        booted_slot: Some("A".into()),
        boot_id: Some("0b6c7a29-3f7e-4a8f-9d55-2f0c1e9d4b11".into()),
        staged_version: Some(OsVersion::parse(OsFamily::Flatcar, "4230.0.0").expect("version")),
        update_status: Some(UpdateStatus::Staged),
        progress: None,
        last_check: Some(jiff::Timestamp::now()),
        channel: Some("stable".into()),
        agent_version: Some("0.1.0".into()),
        reboot_ack: None,
        message: None,
        reboot_needed: true,
    }
}

/// The agent's own write: a server-side apply of its status with its field manager.
async fn agent_apply(
    client: &kube::Client,
    node: &str,
    status: &AgentStatus,
    extra_annotations: &[(&str, &str)],
    extra_labels: &[(&str, &str)],
) -> Result<(), kube::Error> {
    let (mut annotations, mut labels) = status.to_metadata();
    for (k, v) in extra_annotations {
        annotations.insert(k.to_string(), v.to_string());
    }
    for (k, v) in extra_labels {
        labels.insert(k.to_string(), v.to_string());
    }
    let patch = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "annotations": annotations, "labels": labels}});
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::apply("drydock-agent").force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
}

fn denied(result: Result<(), kube::Error>, what: &str, message: &str) {
    match result {
        Err(kube::Error::Api(s)) => {
            assert!(
                s.code == 422 || s.code == 403,
                "{what}: status {} {}",
                s.code,
                s.message
            );
            assert!(
                s.message.contains(message),
                "{what}: {:?} does not say {message:?}",
                s.message
            );
        }
        other => panic!("{what}: expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn an_agent_token_may_write_only_its_own_node_and_its_own_keys() {
    let (mut env, nodes) = installed().await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let pod = agent_pod(&mut env, a).await;
    let agent = client_for(&env, &token(&env, "drydock-agent", Some(&pod)).await).await;
    let status = staged_status();

    // An admission policy takes effect a moment after it is created: wait until a dry
    // run (which admission sees, but which changes nothing) of a foreign write is denied.
    let (probe, b2) = (agent.clone(), b.clone());
    env.wait_for("the admission policy in force", Duration::from_secs(30), move || {
        let (client, b) = (probe.clone(), b2.clone());
        async move {
            let patch = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": b, "annotations": {keys::CHANNEL: "probe"}}});
            let r = Api::<Node>::all(client)
                .patch(
                    &b,
                    &PatchParams::apply("drydock-agent").force().dry_run(),
                    &Patch::Apply(&patch),
                )
                .await;
            Ok(matches!(r, Err(kube::Error::Api(s)) if s.message.contains("may not modify node")))
        }
    })
    .await
    .expect("policy in force");

    // Reads it needs: its Node, and a watch of it.
    let own: Api<Node> = Api::all(agent.clone());
    own.get(a).await.expect("the agent reads its node");
    own.list(&ListParams::default().fields(&format!("metadata.name={a}")))
        .await
        .expect("the agent lists its node");

    agent_apply(&agent, a, &status, &[], &[])
        .await
        .expect("the agent writes its own status on its own node");
    let written = Api::<Node>::all(env.client()).get(a).await.expect("node");
    let ann = written.metadata.annotations.unwrap_or_default();
    assert_eq!(
        ann.get(keys::STAGED_VERSION).map(String::as_str),
        Some("4230.0.0")
    );
    // Clearing its label again is its own business too.
    let mut idle = status.clone();
    idle.reboot_needed = false;
    agent_apply(&agent, a, &idle, &[], &[])
        .await
        .expect("the agent updates its own label");

    denied(
        agent_apply(&agent, b, &status, &[], &[]).await,
        "another node",
        &format!("the drydock agent on node {a} may not modify node {b}"),
    );
    denied(
        agent_apply(&agent, a, &status, &[(keys::REBOOT_TOKEN, "7")], &[]).await,
        "granting itself a reboot",
        "may only change its own drydock.dev/ annotations",
    );
    denied(
        agent_apply(&agent, a, &status, &[("example.com/x", "y")], &[]).await,
        "a foreign annotation",
        "may only change its own drydock.dev/ annotations",
    );
    denied(
        agent_apply(&agent, a, &status, &[], &[(keys::POOL, "elsewhere")]).await,
        "moving to another pool",
        "may only change the label drydock.dev/reboot-needed",
    );
    let cordon = Api::<Node>::all(agent.clone())
        .patch(
            a,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .map(|_| ());
    denied(cordon, "cordoning", "may not change a Node's spec");
    let status_write = Api::<Node>::all(agent.clone())
        .patch_status(
            a,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": []}})),
        )
        .await
        .map(|_| ());
    denied(status_write, "the status subresource", "forbidden");
    let pods = Api::<Pod>::all(agent.clone())
        .list(&ListParams::default())
        .await
        .map(|_| ());
    denied(pods, "listing pods", "forbidden");
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(agent.clone(), NS)
        .list(&ListParams::default())
        .await
        .map(|_| ());
    denied(secrets, "listing secrets", "forbidden");

    // A token of the same ServiceAccount that is not bound to a pod has no node claim.
    let unbound = client_for(&env, &token(&env, "drydock-agent", None).await).await;
    denied(
        agent_apply(&unbound, a, &status, &[], &[]).await,
        "an unbound token",
        "carries no authentication.kubernetes.io/node-name claim",
    );
}

#[tokio::test]
async fn the_operator_binary_works_with_only_its_service_accounts_rights() {
    let (mut env, nodes) = installed().await;
    let a = nodes[0].clone();
    // The manifest's own operator pods do not run on KWOK nodes; this test runs the real
    // binary instead, with their ServiceAccount's token.
    Api::<Deployment>::namespaced(env.client(), NS)
        .patch(
            "drydock-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale");
    Api::<Namespace>::all(env.client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("namespace"),
        )
        .await
        .expect("namespace");
    apply(&env, pinned("web", 1, &a)).await;
    apply(&env, pdb("web", json!({"maxUnavailable": 1}))).await;
    wait_pods_ready(&mut env, 1).await;
    let shop: Api<Pod> = Api::namespaced(env.client(), "shop");
    let web_uid = shop.list(&ListParams::default()).await.expect("pods").items[0]
        .metadata
        .uid
        .clone();

    // The operator, under its ServiceAccount.
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = env
        .token_kubeconfig(&token(&env, "drydock-operator", None).await, None)
        .expect("token kubeconfig");
    let port = drydock_testenv::free_port().expect("port");
    let log_path = dir.path().join("operator.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_drydock-operator"))
        .args(["--kubeconfig", &kubeconfig.display().to_string()])
        .args(["--identity", "rbac-test", "--namespace", NS])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--lease-duration", "4s", "--renew-deadline", "3s"])
        .args(["--retry-period", "1s", "--drain-poll", "1s"])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("starting drydock-operator");
    let log_of = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    // Ready: its watches of Nodes, PDBs and the ConfigMap answered.
    let http = reqwest::Client::new();
    let ready_url = format!("http://127.0.0.1:{port}/readyz");
    env.wait_for("the operator ready", Duration::from_secs(60), move || {
        let (http, url) = (http.clone(), ready_url.clone());
        async move {
            Ok(http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", log_of(&log_path)));

    // A staged update on node a: cordon, evict (a PDB-guarded pod), grant.
    agent_apply(&env.client(), &a, &staged_status(), &[], &[])
        .await
        .expect("status");
    let nodes_api: Api<Node> = Api::all(env.client());
    let (n2, a2) = (nodes_api.clone(), a.clone());
    let granted = env
        .wait_for(
            "a reboot granted on node-0",
            Duration::from_secs(90),
            move || {
                let (nodes, a) = (n2.clone(), a2.clone());
                async move {
                    let n = nodes.get(&a).await?;
                    Ok(n.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(keys::REBOOT_TOKEN)))
                }
            },
        )
        .await;
    let log = log_of(&log_path);
    granted.unwrap_or_else(|e| panic!("{e}\noperator log:\n{log}"));
    let node = nodes_api.get(&a).await.expect("node");
    assert_eq!(
        node.spec.as_ref().and_then(|s| s.unschedulable),
        Some(true),
        "cordoned"
    );
    let pods = shop.list(&ListParams::default()).await.expect("pods").items;
    assert!(
        pods.iter().all(|p| p.metadata.uid != web_uid),
        "the web pod was evicted"
    );
    let reasons: Vec<String> = events_for(&env, &a)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    for r in ["DrainStarted", "RebootGranted"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} missing from {reasons:?}"
        );
    }

    // A bad policy is reported on the ConfigMap (the one patch it may make there).
    set_policy(&env, "maxUnavailable: lots\n").await;
    wait_config_error(&mut env, "maxUnavailable").await;

    let log = log_of(&log_path);
    for word in ["forbidden", "Forbidden"] {
        assert!(
            !log.contains(word),
            "the operator was refused something:\n{log}"
        );
    }
}

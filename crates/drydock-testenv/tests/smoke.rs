//! The control plane itself: nodes come up and kubectl works against the kubeconfig.
//! These fail (never skip) without the binaries, saying how to build them.

use std::time::{Duration, Instant};

use drydock_testenv::TestEnv;

#[tokio::test]
async fn fifty_kwok_nodes_become_ready_within_a_minute() {
    let mut env = TestEnv::start().await.expect("control plane starts");
    eprintln!("control plane started in {:?}", env.startup);
    let t = Instant::now();
    let names = env
        .add_ready_nodes(
            "node",
            50,
            &[("node-role.kubernetes.io/worker", "")],
            Duration::from_secs(60),
        )
        .await
        .expect("50 nodes Ready within 60s");
    assert_eq!(names.len(), 50);
    eprintln!("50 nodes Ready in {:?}", t.elapsed());
}

#[tokio::test]
async fn kubectl_works_against_the_printed_kubeconfig() {
    let mut env = TestEnv::start().await.expect("control plane starts");
    env.add_ready_nodes("node", 2, &[], Duration::from_secs(60))
        .await
        .expect("nodes Ready");
    let kubectl_bin = drydock_testenv::bin_dir()
        .expect("binaries")
        .join("kubectl");
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(&kubectl_bin)
            .arg("--kubeconfig")
            .arg(env.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        kubectl(&["get", "nodes", "-o", "name"]),
        "node/node-0\nnode/node-1\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&kubectl(&["version", "-o", "json"])).expect("version JSON");
    assert_eq!(
        v["serverVersion"]["gitVersion"], "v1.37.2",
        "the version is stamped at link time"
    );
    // The ValidatingAdmissionPolicy API is served, and service-account tokens are issued.
    let resources = kubectl(&[
        "api-resources",
        "--api-group=admissionregistration.k8s.io",
        "-o",
        "name",
    ]);
    assert!(
        resources
            .lines()
            .any(|l| l == "validatingadmissionpolicies.admissionregistration.k8s.io"),
        "{resources}"
    );
    let token = kubectl(&["create", "token", "default", "--duration=10m"]);
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
}

#[test]
fn missing_binaries_fail_with_how_to_build_them() {
    let err = drydock_testenv::bin_dir_from(None).expect_err("no directory");
    let text = err.to_string();
    assert!(text.contains("DRYDOCK_CLUSTER_BIN is not set"), "{text}");
    assert!(text.contains("tests/cluster/build.sh"), "{text}");
    let empty = tempfile::tempdir().expect("temp dir");
    let text = drydock_testenv::bin_dir_from(Some(empty.path().to_path_buf()))
        .expect_err("empty directory")
        .to_string();
    assert!(
        text.contains(
            "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok not found"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn nodes_heartbeat_through_leases_and_pod_deletion_honours_the_grace_period() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, PostParams};

    let mut env = TestEnv::start().await.expect("control plane starts");
    env.add_ready_nodes("node", 1, &[], Duration::from_secs(60))
        .await
        .expect("node Ready");
    let leases: Api<Lease> = Api::namespaced(env.client(), "kube-node-lease");
    let l2 = leases.clone();
    env.wait_for("the node's Lease", Duration::from_secs(30), move || {
        let leases = l2.clone();
        async move {
            Ok(leases
                .get_opt("node-0")
                .await?
                .and_then(|l| l.spec)
                .and_then(|s| s.renew_time)
                .is_some())
        }
    })
    .await
    .expect("kwok renews the node Lease");

    let pods: Api<Pod> = Api::namespaced(env.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "graceful"},
        "spec": {"nodeName": "node-0", "terminationGracePeriodSeconds": 4,
                 "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let p2 = pods.clone();
    env.wait_for("the pod Running", Duration::from_secs(30), move || {
        let pods = p2.clone();
        async move {
            Ok(pods
                .get("graceful")
                .await?
                .status
                .and_then(|s| s.phase)
                .as_deref()
                == Some("Running"))
        }
    })
    .await
    .expect("pod runs");
    let deleted_at = Instant::now();
    pods.delete("graceful", &DeleteParams::default())
        .await
        .expect("delete");
    let p3 = pods.clone();
    env.wait_for("the pod to be gone", Duration::from_secs(20), move || {
        let pods = p3.clone();
        async move { Ok(pods.get_opt("graceful").await?.is_none()) }
    })
    .await
    .expect("pod deleted");
    let took = deleted_at.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "the pod went after {took:?}, before its 4s grace period"
    );
}

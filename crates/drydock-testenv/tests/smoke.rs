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
    let kubectl = drydock_testenv::bin_dir()
        .expect("binaries")
        .join("kubectl");
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node/node-0\nnode/node-1\n"
    );
    let out = std::process::Command::new(
        drydock_testenv::bin_dir()
            .expect("binaries")
            .join("kubectl"),
    )
    .arg("--kubeconfig")
    .arg(env.kubeconfig())
    .args(["version", "-o", "json"])
    .output()
    .expect("kubectl runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version JSON");
    assert_eq!(
        v["serverVersion"]["gitVersion"], "v1.37.2",
        "the version is stamped at link time"
    );
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

//! Every child of the plane goes away: when the handle drops, and when the process that
//! started the plane is killed outright (parent-death signal).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drydock_testenv::TestEnv;

/// Whether a process is still alive (zombies waiting to be reaped count as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                out.push(pid);
            }
        }
    }
    out
}

fn wait_all_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still running after {within:?}: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_failing_test_gets_every_components_log_tail() {
    let env = TestEnv::start().await.expect("control plane starts");
    let report = env.log_tails(40);
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ] {
        assert!(
            report.contains(&format!("---- {name} (pid ")),
            "no section for {name}:\n{report}"
        );
    }
    // The API server logs as it starts, so its section is not empty.
    let api = report
        .split("---- ")
        .find(|s| s.starts_with("kube-apiserver"))
        .expect("apiserver section");
    assert!(api.lines().count() > 2, "{api}");
    // The drop prints this report while a panic unwinds.
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _env = env;
        panic!("a failing test");
    }));
    assert!(unwound.is_err());
}

#[tokio::test]
async fn dropping_the_handle_stops_every_component() {
    let env = TestEnv::start().await.expect("control plane starts");
    let pids: Vec<u32> = env.components().iter().map(|c| c.pid()).collect();
    assert_eq!(
        pids.len(),
        5,
        "etcd, apiserver, controller-manager, scheduler, kwok"
    );
    assert!(pids.iter().all(|p| alive(*p)));
    drop(env);
    wait_all_gone(&pids, Duration::from_secs(10));
}

#[test]
fn killing_the_owner_process_kills_the_plane() {
    let mut owner = Command::new(env!("CARGO_BIN_EXE_drydock-testenv"))
        .args(["--nodes", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("drydock-testenv starts");
    let stdout = owner.stdout.take().expect("stdout");
    let kubeconfig = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a line")
        .expect("kubeconfig path");
    assert!(kubeconfig.ends_with("/kubeconfig"), "{kubeconfig}");
    let pids = children_of(owner.id());
    assert_eq!(pids.len(), 5, "five components under the owner: {pids:?}");
    owner.kill().expect("SIGKILL the owner");
    owner.wait().expect("reap the owner");
    wait_all_gone(&pids, Duration::from_secs(10));
}

#[tokio::test]
async fn faults_a_node_held_not_ready_stays_so_and_the_api_server_comes_back_after_a_restart() {
    use k8s_openapi::api::core::v1::Node;
    use kube::Api;
    let mut env = TestEnv::start().await.expect("control plane");
    let names = env
        .add_ready_nodes("n", 1, &[], Duration::from_secs(60))
        .await
        .expect("node");
    let api: Api<Node> = Api::all(env.client());
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    env.set_not_ready(&names[0], true).await.expect("hold");
    // KWOK would initialise a NotReady node again at once; held, it must stay NotReady.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = api.get(&names[0]).await.expect("node");
    assert_eq!(ready(&n).as_deref(), Some("False"));
    env.set_not_ready(&names[0], false).await.expect("release");
    env.wait_nodes_ready(&names, Duration::from_secs(30))
        .await
        .expect("Ready again once released");

    let apiserver = |env: &TestEnv| {
        env.components()
            .iter()
            .find(|c| c.name == "kube-apiserver")
            .map(|c| c.pid())
            .expect("apiserver")
    };
    let before = apiserver(&env);
    env.restart("kube-apiserver", Duration::from_millis(500))
        .await
        .expect("restart");
    let after = apiserver(&env);
    assert_ne!(before, after, "a new process");
    assert!(!alive(before), "the old one is gone");
    // The same client works again: same port, same certificates, same etcd.
    let n = api
        .get(&names[0])
        .await
        .expect("the node, read through the new API server");
    assert_eq!(ready(&n).as_deref(), Some("True"));
    env.check_alive().expect("every component runs");
}

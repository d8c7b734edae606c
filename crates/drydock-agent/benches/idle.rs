//! The agent at rest: `cargo bench -p drydock-agent` (needs DRYDOCK_CLUSTER_BIN, which
//! `tests/run.sh` and `tests/cluster/build.sh` provide).
//!
//! Runs the release `drydock-agent` binary against the real control plane (one kwok node)
//! and a simulated Flatcar host on a private dbus-daemon, waits until it has published its
//! status, lets it settle, then reads `/proc/<pid>/status` twice, 20 s apart: resident
//! memory (goal: under 10 MiB) and context switches, which count every wake-up (goal: none
//! while nothing happens).

use std::process::{Command, Stdio};
use std::time::Duration;

use drydock_sim::bus::PrivateBus;
use drydock_sim::host::SimHost;
use drydock_testenv::TestEnv;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

fn proc_status(pid: u32) -> (u64, u64) {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent is running");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:"),
        field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:"),
    )
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs benches as tests; this one needs minutes, not seconds.
        println!("idle: run with `cargo bench -p drydock-agent`");
        return;
    }
    let mut env = TestEnv::start()
        .await
        .expect("control plane (set DRYDOCK_CLUSTER_BIN)");
    env.add_ready_nodes("node", 1, &[], Duration::from_secs(60))
        .await
        .expect("node");
    let bus = PrivateBus::start().expect("dbus-daemon");
    let root = tempfile::tempdir().expect("root");
    let _sim = SimHost::start_flatcar(
        bus.address(),
        root.path(),
        "4081.2.0",
        Duration::from_millis(20),
        Duration::from_millis(100),
    )
    .await
    .expect("simulated host");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_drydock-agent"))
        .args(["--node-name", "node-0", "--kubeconfig"])
        .arg(env.kubeconfig())
        .args(["--bus-address", bus.address(), "--host-root"])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("drydock-agent runs");
    let nodes: Api<Node> = Api::all(env.client());
    env.wait_for(
        "the agent's status on the node",
        Duration::from_secs(30),
        || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get("node-0").await?;
                Ok(n.metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("drydock.dev/booted-version"))
            }
        },
    )
    .await
    .expect("agent published");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss0, sw0) = proc_status(agent.id());
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let (rss1, sw1) = proc_status(agent.id());
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", agent.id())) {
        for l in text
            .lines()
            .filter(|l| l.starts_with("Rss") || l.starts_with("Threads"))
        {
            println!("  {l}");
        }
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let rss_mib = rss0.max(rss1) as f64 / 1024.0;
    let wakeups = sw1.saturating_sub(sw0);
    println!(
        "agent idle resident memory: {rss_mib:.1} MiB (goal < 10 MiB: {})",
        if rss_mib < 10.0 { "met" } else { "MISSED" }
    );
    println!(
        "agent context switches over {}s idle: {wakeups} ({:.2}/s; goal: no periodic wake-ups)",
        window.as_secs(),
        wakeups as f64 / window.as_secs_f64()
    );
}

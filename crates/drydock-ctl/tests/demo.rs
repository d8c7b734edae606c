//! `drydockctl demo` end to end: the real binary brings up the control plane, simulated
//! hosts, agents and two operators, rolls the fleet and reports; its summary is checked
//! here, and after it (or after Ctrl-C) no process it started may be left.
//!
//! Every process the demo starts inherits a marker in its environment, so the tests find
//! leftovers by reading `/proc/*/environ`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TAG: &str = "DRYDOCK_DEMO_TEST_TAG";

fn demo_command(tag: &str, args: &[&str]) -> Command {
    ctl_command(tag, "demo", args)
}

fn ctl_command(tag: &str, subcommand: &str, args: &[&str]) -> Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_drydockctl"));
    let dir = bin.parent().expect("target dir");
    for b in ["drydock-agent", "drydock-operator", "drydock-sim"] {
        assert!(
            dir.join(b).is_file(),
            "{b} is not built in {}: run the suite with `cargo test --workspace` (tests/run.sh), which builds every binary",
            dir.display()
        );
    }
    assert!(
        std::env::var_os("DRYDOCK_CLUSTER_BIN").is_some(),
        "DRYDOCK_CLUSTER_BIN is not set: run tests/run.sh, or export DRYDOCK_CLUSTER_BIN=$(tests/cluster/build.sh | tail -n 1)"
    );
    let mut cmd = Command::new(bin);
    cmd.arg(subcommand).args(args).env(TAG, tag);
    cmd
}

/// PIDs of live processes whose environment carries `tag`.
fn tagged(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG}={tag}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        // A zombie has an empty environ; a live process with the marker is a leftover.
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// The programs of the live processes carrying `tag`, with how many run each (by the
/// file name of `/proc/<pid>/exe`).
fn tagged_programs(tag: &str) -> std::collections::BTreeMap<String, usize> {
    let mut programs = std::collections::BTreeMap::new();
    for pid in tagged(tag) {
        // A process that ended since it was listed has no exe left to read.
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let name = exe
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        *programs.entry(name).or_insert(0) += 1;
    }
    programs
}

fn unique_tag(name: &str) -> String {
    format!("{name}-{}-{:?}", std::process::id(), Instant::now())
}

/// Runs the demo with `--summary summary` and `args`; fails with its output unless it
/// exits 0; returns its stdout.
fn run_demo(tag: &str, args: &[&str], summary: &Path) -> String {
    let out = demo_command(tag, args)
        .arg("--summary")
        .arg(summary)
        .output()
        .expect("drydockctl demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn run_to_summary(tag: &str, args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("summary.json");
    let stdout = run_demo(tag, args, &summary);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary written"))
            .expect("summary is JSON");
    (json, stdout)
}

fn check_summary(s: &serde_json::Value, nodes: u64, from: &str, to: &str) {
    assert_eq!(s["from"], from, "{s:#}");
    assert_eq!(s["to"], to, "{s:#}");
    assert_eq!(s["nodes"], nodes, "{s:#}");
    assert_eq!(
        s["updated"], nodes,
        "every node runs the new version: {s:#}"
    );
    assert_eq!(s["reboots"], nodes, "one reboot per node: {s:#}");
    assert_eq!(s["rebooted_more_than_once"], serde_json::json!([]), "{s:#}");
    assert_eq!(s["pdb_violations"], 0, "{s:#}");
    assert!(
        s["pdb_status_updates_seen"].as_u64().expect("count") > 0,
        "the budget watcher saw budgets change: {s:#}"
    );
    assert!(
        s["evictions_accepted"].as_u64().expect("count") > 0,
        "drains evicted pods: {s:#}"
    );
    let makespan = s["makespan_seconds"].as_f64().expect("makespan");
    assert!(makespan > 0.0, "{s:#}");
    let pools = s["pools"].as_array().expect("pools");
    let names: Vec<&str> = pools.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["control-plane", "workers"], "{s:#}");
    for p in pools {
        let (peak, limit) = (
            p["peak_unavailable"].as_u64().expect("peak"),
            p["max_unavailable"].as_u64().expect("limit"),
        );
        assert!(peak >= 1, "the observer saw the pool's nodes go: {p}");
        assert!(peak <= limit, "never over the limit: {p}");
    }
    assert_eq!(s["passed"], true, "{s:#}");
}

#[test]
fn flatcar_demo_rolls_every_node_within_limits_and_leaves_nothing() {
    let tag = unique_tag("flatcar");
    let (s, stdout) = run_to_summary(&tag, &["--nodes", "3"]);
    check_summary(&s, 4, "4081.2.0", "4230.0.0");
    // Every node downloaded through drydock's Omaha proxy, some only once the rollout
    // reached them.
    assert!(
        s["omaha_offers_passed"].as_u64().expect("count") >= 4,
        "{s:#}"
    );
    assert!(
        s["omaha_offers_withheld"].as_u64().expect("count") >= 1,
        "{s:#}"
    );
    for line in [
        "published Flatcar 4230.0.0 on the fake Omaha server",
        "2 drydock-operator replicas running, one leads",
        "nodes updated        4/4",
        "PDB violations       0",
        "result               PASSED",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert_eq!(tagged(&tag), Vec::<u32>::new(), "processes left behind");
}

#[test]
fn fcos_demo_rolls_every_node() {
    let tag = unique_tag("fcos");
    let (s, stdout) = run_to_summary(&tag, &["--nodes", "2", "--os", "fcos"]);
    check_summary(&s, 3, "41.20241109.3.0", "41.20241122.3.0");
    assert!(
        stdout.contains("published Fedora CoreOS 41.20241122.3.0 on the stable stream"),
        "{stdout}"
    );
    assert_eq!(tagged(&tag), Vec::<u32>::new(), "processes left behind");
}

#[test]
fn ctrl_c_mid_rollout_stops_everything_it_started() {
    let tag = unique_tag("ctrl-c");
    let mut child = demo_command(&tag, &["--nodes", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    // Read until a node is in the middle of its update.
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        seen.push(line.clone());
        if line.contains("=Draining") || line.contains("=Rebooting") {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("=Draining") || l.contains("=Rebooting")),
        "the rollout never started:\n{}",
        seen.join("\n")
    );
    // drydockctl, the control plane, per node a bus and a host, and 2 operators. The
    // agents are one per node, less one on each host powered off for its reboot (the
    // agent ends with its host): the control-plane pool and the workers' pool may each
    // have a node rebooting at this moment, so their number is not fixed.
    let running = tagged_programs(&tag);
    let count = |program: &str| running.get(program).copied().unwrap_or(0);
    // A child forked but not yet exec'd still reads as drydockctl.
    assert!(count("drydockctl") >= 1, "drydockctl itself: {running:?}");
    for (program, expected) in [
        ("etcd", 1),
        ("kube-apiserver", 1),
        ("kube-controller-manager", 1),
        ("kube-scheduler", 1),
        ("kwok", 1),
        ("dbus-daemon", 3),
        ("drydock-sim", 3),
        ("drydock-operator", 2),
    ] {
        assert_eq!(
            count(program),
            expected,
            "expected the whole demo running: {program} in {running:?}"
        );
    }
    assert!(
        count("drydock-agent") <= 3,
        "at most one agent per node: {running:?}"
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert_eq!(exit.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; everything it started is stopped"),
        "{err}"
    );
    assert_eq!(tagged(&tag), Vec::<u32>::new(), "processes left behind");
}

/// The short chaos suite: two seeded runs, each injecting every kind of fault once during
/// the rollout (the leader killed, an agent killed, a rebooting node held NotReady, the
/// API server restarted, a reboot frozen past its readyTimeout). The independent observer
/// must see no invariant broken. The long suite is the same command with more `--runs`.
#[test]
fn chaos_runs_inject_every_fault_and_break_no_invariant() {
    let tag = unique_tag("chaos");
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("chaos.json");
    let stdout = run_demo(
        &tag,
        &["--nodes", "3", "--chaos", "101", "--runs", "2"],
        &summary,
    );
    assert!(
        stdout.contains("\"faults_injected\": 10") && stdout.contains("\"violations\": 0"),
        "the tally: {stdout}"
    );
    for seed in [101, 102] {
        let path = summary.with_extension(format!("seed-{seed}.json"));
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("a summary per seed"))
                .expect("JSON");
        assert_eq!(s["chaos"]["seed"], seed);
        let mut kinds: Vec<&str> = s["chaos"]["faults"]
            .as_array()
            .expect("faults")
            .iter()
            .filter(|f| f["skipped"] == false)
            .filter_map(|f| f["fault"].as_str())
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                "delay-reboot",
                "kill-agent",
                "kill-leader",
                "node-not-ready",
                "restart-apiserver"
            ],
            "seed {seed}: {s:#}"
        );
        assert_eq!(s["violations"], serde_json::json!([]), "seed {seed}: {s:#}");
        assert_eq!(s["left_cordoned"], serde_json::json!([]), "seed {seed}");
        assert_eq!(s["pdb_violations"], 0, "seed {seed}");
        assert_eq!(
            s["rebooted_more_than_once"],
            serde_json::json!([]),
            "seed {seed}"
        );
        for p in s["pools"].as_array().expect("pools") {
            assert!(
                p["peak_unavailable"].as_u64() <= p["max_unavailable"].as_u64(),
                "seed {seed}: {p}"
            );
        }
        assert_eq!(s["passed"], true);
    }
    assert!(
        tagged(&tag).is_empty(),
        "processes left: {:?}",
        tagged(&tag)
    );
}

/// A small `drydockctl bench` run: the harness rolls the fleet and reports every figure,
/// within the pool's limit, and leaves no process behind. (The figures themselves are for
/// the large runs `tests/bench.sh` makes, not for a noisy CI machine.)
#[test]
fn bench_rolls_a_fleet_and_reports_every_figure() {
    let tag = unique_tag("bench");
    let results = tempfile::tempdir().expect("results dir");
    let dir = results.path().to_str().expect("utf-8 path");
    let out = ctl_command(
        &tag,
        "bench",
        &[
            "--nodes",
            "12",
            "--profile",
            "uniform,mixed",
            "--reboot",
            "2s",
            "--grace",
            "1s",
            "--max-unavailable",
            "25",
            "--timeout",
            "5m",
            "--results",
            dir,
        ],
    )
    .output()
    .expect("drydockctl bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drydockctl bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["uniform-12", "mixed-12"] {
        let text = std::fs::read_to_string(results.path().join(format!("{label}.json")))
            .expect("result JSON");
        let r: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(r["nodes"], 12, "{r:#}");
        assert_eq!(r["maxUnavailable"], 3, "{r:#}");
        assert_eq!(r["complete"], true, "{r:#}");
        assert_eq!(r["nodesDone"], 12, "{r:#}");
        let peak = r["peakUnavailable"].as_u64().expect("peak");
        assert!((1..=3).contains(&peak), "{r:#}");
        let ours = r["peakUnavailableByDrydock"]
            .as_u64()
            .expect("drydock's peak");
        assert!((1..=peak).contains(&ours), "{r:#}");
        let makespan = r["makespanSeconds"].as_f64().expect("makespan");
        let bound = r["lowerBoundSeconds"].as_f64().expect("bound");
        // 12 nodes, 3 at once, each at least a reboot of 1–4 s: four rounds at least.
        assert!(bound >= 4.0 && makespan >= bound, "{r:#}");
        assert!(r["reaction"]["samples"].as_u64() > Some(0), "{r:#}");
        assert!(r["reaction"]["p99Seconds"].as_f64().is_some(), "{r:#}");
        // Every node was granted a reboot and acknowledged it: the operator and the
        // agents wrote, the kubelet reported every boot.
        let per = &r["requestsPerUpdate"];
        assert!(
            per["drydock-operator"]["writesWithoutEvictions"].as_f64() >= Some(4.0),
            "{r:#}"
        );
        assert!(
            per["drydock-agent"]["byVerb"]["patch nodes"].as_f64() >= Some(2.0),
            "{r:#}"
        );
        assert_eq!(
            per["drydock-bench-kubelet"]["byVerb"]["patch nodes/status"], 1.0,
            "{r:#}"
        );
        assert!(r["operator"]["peakRssMiB"].as_f64() > Some(1.0), "{r:#}");
        assert!(r["operator"]["plannerPasses"].as_u64() > Some(0), "{r:#}");
        // Whole passes are timed too: at least one, each at least as long as a plan.
        let passes = r["operator"]["passes"].as_u64().unwrap_or(0);
        assert!(passes > 0, "{r:#}");
        assert!(
            r["operator"]["passMeanSeconds"].as_f64().unwrap_or(0.0) * 1000.0
                >= r["operator"]["plannerMeanMs"].as_f64().unwrap_or(f64::MAX),
            "{r:#}"
        );
        // Pods are listed for the drains, and ahead of need for the nodes next in line
        // while the pool is full (four rounds of three).
        let lists = &r["operator"]["podListsPerUpdateByPurpose"];
        assert!(lists["draining"].as_f64() > Some(0.0), "{r:#}");
        assert!(lists["ahead"].as_f64() > Some(0.0), "{r:#}");
        assert!(r["agent"]["peakRssMiB"].as_f64() > Some(1.0), "{r:#}");
        let svg = std::fs::read_to_string(results.path().join(format!("{label}-phases.svg")))
            .expect("plot");
        assert!(svg.starts_with("<svg") && svg.contains(">Done<"), "{svg}");
    }
    let summary = std::fs::read_to_string(results.path().join("summary.md")).expect("summary");
    assert!(
        summary.contains("| uniform-12 |") && summary.contains("| mixed-12 |"),
        "{summary}"
    );
    assert!(stdout.contains("| uniform-12 |"), "{stdout}");
    assert!(
        tagged(&tag).is_empty(),
        "processes left: {:?}",
        tagged(&tag)
    );
}

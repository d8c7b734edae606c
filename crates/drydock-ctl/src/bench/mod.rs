//! `drydockctl bench`: a rollout of a large simulated fleet on the real control plane,
//! measured.
//!
//! One run: a fresh plane (etcd, kube-apiserver with its audit log, controller-manager,
//! scheduler, KWOK) with N KWOK nodes in one pool, Deployments of pause pods behind
//! PodDisruptionBudgets, N−1 nodes whose hosts and agents are simulated in this process
//! ([`fleet`]) and one real machine (a `drydock-agent` process on a `drydock-sim` host on
//! its own dbus-daemon, for the agent's memory). Every host stages the new version before
//! the `drydock-operator` process starts; the rollout is timed from its start until every
//! node is Done on the new version. Then the figures:
//!
//! - makespan against its lower bound: each node holds a slot for at least its drain (its
//!   pods' grace period) plus its reboot ([`report::lower_bound`]);
//! - reaction latency, from a node verified to the next drain started;
//! - API requests per node update by component, verb and resource (the audit log);
//! - the operator's peak resident memory and CPU time, its planner passes (its own
//!   histogram), and the real agent's peak resident memory;
//! - the most nodes unavailable at once against the pool's limit;
//! - a plot of nodes per phase over time (SVG).

pub mod audit;
pub mod binary;
pub mod fleet;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use drydock_core::protocol::{Phase, parse_node_state};
use drydock_sim::omaha::OmahaServer;
use drydock_testenv::{NodeSpec, TestEnv, start_process, workload};
use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::mpsc;

use crate::demo::{self, Bins, DemoOs, HostLine};
use report::Change;

/// drydock's namespace.
const NS: &str = "drydock-system";
/// The workloads' namespace.
const APPS: &str = "bench";
/// Versions: booted, then published.
const FROM: &str = "4081.2.0";
const TO: &str = "4230.0.0";
/// Pods per Deployment (each behind a budget allowing 25 % unavailable).
const PER_DEPLOYMENT: usize = 50;
/// The label every bench pod carries, for the spread across all of them.
const BENCH_POD_LABEL: &str = "drydock-bench/pod";

/// How drain and reboot times are spread over the fleet.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Every pod has the same grace period, every host the same reboot time.
    Uniform,
    /// Grace periods of 0.4×, 1×, 2× and 3× by Deployment; reboots from 0.5× to 2× by
    /// node (seeded).
    Mixed,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Uniform => "uniform",
            Profile::Mixed => "mixed",
        }
    }
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes in the fleet (one of them a real agent process).
    pub nodes: usize,
    /// Spread of drain and reboot times.
    pub profile: Profile,
    /// Reboot time (the uniform value; the mixed profile's centre).
    pub reboot: Duration,
    /// Pods' grace period (the uniform value; the mixed profile's centre).
    pub grace: Duration,
    /// The pool's maxUnavailable, in percent.
    pub max_unavailable: u32,
    /// Pods per node.
    pub pods_per_node: f64,
    /// Seed of the mixed profile's reboot times.
    pub seed: u64,
    /// The controller-manager's and scheduler's client QPS and burst (`None`: their
    /// defaults). See [`drydock_testenv::Options::controller_qps`].
    pub plane_qps: Option<u32>,
    /// How many pod stages KWOK plays at once (`None`: its default, 4). See
    /// [`drydock_testenv::Options::kwok_parallelism`].
    pub kwok_parallelism: Option<u32>,
    /// How many node stages and Lease renewals KWOK plays at once (`None`: its default,
    /// 4). See [`drydock_testenv::Options::kwok_node_parallelism`].
    pub kwok_node_parallelism: Option<u32>,
    /// The node Leases' duration in seconds (`None`: 40). See
    /// [`drydock_testenv::Options::node_lease_seconds`].
    pub node_lease_seconds: Option<u32>,
    /// Keep the work directory (every process's log, the audit log) afterwards.
    pub keep: bool,
    /// Give up when the rollout takes longer.
    pub timeout: Duration,
    /// Where drydock-agent, drydock-operator and drydock-sim are.
    pub bin_dir: Option<PathBuf>,
    /// Results go here: `<label>.json`, `<label>-phases.svg`.
    pub results: PathBuf,
}

impl Options {
    /// `<profile>-<nodes>`.
    pub fn label(&self) -> String {
        format!("{}-{}", self.profile.name(), self.nodes)
    }
}

/// The policy of a run: one pool, `pct` % at once, no bake, no canary.
pub fn policy(pct: u32) -> String {
    format!(
        "# drydockctl bench: one pool, no maintenance window, no canary, no bake.
channel: stable
maxUnavailable: 1
drain:
  timeout: 10m
  onTimeout: hold
health:
  readyTimeout: 5m
  bake: 0s
pools:
  - name: workers
    nodeSelector:
      matchExpressions:
        - {{key: node-role.kubernetes.io/worker, operator: Exists}}
    maxUnavailable: {pct}%
"
    )
}

/// What the observer keeps: every node's phase, and the changes since the rollout began.
#[derive(Debug, Default)]
struct Observed {
    index: HashMap<String, usize>,
    phase: Vec<String>,
    staged: Vec<bool>,
    done: Vec<bool>,
    unavailable: Vec<bool>,
    /// Carries a taint that keeps pods off (`NoSchedule`, `NoExecute`): a new node keeps
    /// `node.kubernetes.io/not-ready` for up to the node lifecycle controller's period
    /// after it is Ready.
    tainted: Vec<bool>,
    /// Unavailable through drydock: cordoned by it, or in a phase that disrupts.
    by_drydock: Vec<bool>,
    started: Option<Instant>,
    initial: Vec<String>,
    changes: Vec<Change>,
    peak: usize,
    peak_by_drydock: usize,
    last_done: f64,
}

impl Observed {
    fn see(&mut self, n: &Node) {
        let Some(&i) = n.metadata.name.as_ref().and_then(|x| self.index.get(x)) else {
            return;
        };
        let empty = BTreeMap::new();
        let (state, _) = parse_node_state(
            n.metadata.labels.as_ref().unwrap_or(&empty),
            n.metadata.annotations.as_ref().unwrap_or(&empty),
        );
        let phase = state.operator.phase().as_str().to_string();
        let unschedulable = n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        self.staged[i] = state.agent.reboot_needed;
        self.done[i] = phase == "Done"
            && !unschedulable
            && state
                .agent
                .booted_version
                .as_ref()
                .map(ToString::to_string)
                .as_deref()
                == Some(TO);
        self.unavailable[i] = demo::unavailable(n);
        self.tainted[i] = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| {
                ts.iter()
                    .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            });
        self.by_drydock[i] =
            state.operator.cordoned || state.operator.phase.is_some_and(Phase::is_disrupting);
        if let Some(t0) = self.started {
            let t = t0.elapsed().as_secs_f64();
            if phase != self.phase[i] {
                self.changes.push(Change {
                    t,
                    node: i,
                    from: self.phase[i].clone(),
                    to: phase.clone(),
                });
            }
            if self.done[i] {
                self.last_done = self.last_done.max(t);
            }
            self.peak = self
                .peak
                .max(self.unavailable.iter().filter(|u| **u).count());
            self.peak_by_drydock = self
                .peak_by_drydock
                .max(self.by_drydock.iter().filter(|u| **u).count());
        }
        self.phase[i] = phase;
    }
}

fn observe(client: kube::Client, observed: Arc<Mutex<Observed>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Node> = Api::all(client);
        let mut s = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(ev) = s.next().await {
            if let Ok(n) = ev
                && let Ok(mut o) = observed.lock()
            {
                o.see(&n);
            }
        }
    })
}

/// A client with its own user agent (the audit log tells components apart by it).
async fn client_as(kubeconfig: &Path, user_agent: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(user_agent)?,
    ));
    Ok(kube::Client::try_from(config)?)
}

/// A process's resident memory now and at its peak (KiB), and its CPU time (s).
#[derive(Debug, Default, Clone, Copy)]
struct ProcStats {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_s: f64,
}

fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ProcStats {
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
        // Linux reports CPU time in USER_HZ, 100 per second on every architecture we run.
        cpu_s: ticks as f64 / 100.0,
    })
}

/// The whole machine's CPU time so far (s, summed over cores): busy and idle (idle and
/// iowait), from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MachineCpu {
    cores: usize,
    busy: f64,
    idle: f64,
}

fn machine_cpu() -> Option<MachineCpu> {
    parse_machine_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_cpu(stat: &str) -> Option<MachineCpu> {
    let total = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = total
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    // already in user and nice.
    let idle = ticks.get(3)? + ticks.get(4)?;
    let all: u64 = ticks.iter().take(8).sum();
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(MachineCpu {
        cores,
        busy: (all - idle) as f64 / 100.0,
        idle: idle as f64 / 100.0,
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The operator's resident set sampled over the rollout (seconds from its start, KiB):
/// the highest sample and when it came, the last sample, and the series itself in MiB
/// rounded to 0.1 (one sample per second).
fn rss_summary(samples: &[(f64, u64)]) -> serde_json::Value {
    let mib = |k: u64| (k as f64 / 1024.0 * 10.0).round() / 10.0;
    let highest = samples.iter().max_by_key(|(_, k)| *k);
    json!({
        "highestSampled": highest.map(|(_, k)| mib(*k)),
        "highestAtSeconds": highest.map(|(t, _)| (t * 10.0).round() / 10.0),
        "last": samples.last().map(|(_, k)| mib(*k)),
        "series": samples
            .iter()
            .map(|(t, k)| json!([(t * 10.0).round() / 10.0, mib(*k)]))
            .collect::<Vec<_>>(),
    })
}

/// An unlabelled histogram's count, mean and the bucket bound holding the 99th
/// percentile, from the operator's metrics (`name` without its `_bucket` suffix).
fn histogram_stats(metrics: &str, name: &str) -> (u64, f64, Option<f64>) {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let (mut count, mut sum) = (0u64, 0.0);
    let (bucket, count_of, sum_of) = (
        format!("{name}_bucket{{le=\""),
        format!("{name}_count "),
        format!("{name}_sum "),
    );
    for l in metrics.lines() {
        if let Some(rest) = l.strip_prefix(bucket.as_str()) {
            let Some((le, v)) = rest.split_once("\"} ") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            if let Ok(v) = v.trim().parse() {
                buckets.push((le, v));
            }
        } else if let Some(v) = l.strip_prefix(count_of.as_str()) {
            count = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix(sum_of.as_str()) {
            sum = v.trim().parse().unwrap_or(0.0);
        }
    }
    let p99 = buckets
        .iter()
        .find(|(_, n)| (*n as f64) >= 0.99 * count as f64)
        .map(|(le, _)| *le);
    let mean = if count > 0 { sum / count as f64 } else { 0.0 };
    (count, mean, p99)
}

/// The operator's node writes by cause (`drydock_node_writes_total`), from its metrics.
fn node_writes(metrics: &str) -> BTreeMap<String, u64> {
    by_label(metrics, "drydock_node_writes_total{cause=\"")
}

/// The operator's pod lists by purpose (`drydock_pod_lists_total`), from its metrics.
fn pod_lists(metrics: &str) -> BTreeMap<String, u64> {
    by_label(metrics, "drydock_pod_lists_total{purpose=\"")
}

/// A counter with one label, by the label's value: the lines that start with `prefix`
/// (the name, `{`, the label and `="`).
fn by_label(metrics: &str, prefix: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter_map(|(cause, v)| Some((cause.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Reboot time of each node.
fn reboot_times(opts: &Options) -> Vec<Duration> {
    let mut rng = crate::chaos::Rng::new(opts.seed);
    let base = opts.reboot.as_millis() as u64;
    (0..opts.nodes)
        .map(|_| match opts.profile {
            Profile::Uniform => opts.reboot,
            Profile::Mixed => {
                // 0.5× to 2×, in 100 ms steps.
                let span = (base * 3 / 2) / 100;
                Duration::from_millis(base / 2 + 100 * rng.below(span as usize + 1) as u64)
            }
        })
        .collect()
}

/// Grace period of Deployment `k`.
fn grace_of(opts: &Options, k: usize) -> u64 {
    let g = opts.grace.as_secs_f64();
    let g = match opts.profile {
        Profile::Uniform => g,
        Profile::Mixed => g * [0.4, 1.0, 2.0, 3.0][k % 4],
    };
    g.round().max(1.0) as u64
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn say(started: Instant, text: &str) {
    println!("[{:>7.1}s] {text}", started.elapsed().as_secs_f64());
}

/// Runs one benchmark; returns its results (also written to the results directory).
pub async fn run(opts: &Options) -> anyhow::Result<serde_json::Value> {
    if opts.nodes < 2 {
        bail!("--nodes must be at least 2 (one real agent and the simulated rest)");
    }
    if !(1..=100).contains(&opts.max_unavailable) {
        bail!("--max-unavailable must be 1–100 (percent)");
    }
    let bins = Bins::find(opts.bin_dir.as_deref())?;
    std::fs::create_dir_all(&opts.results)
        .with_context(|| format!("creating {}", opts.results.display()))?;
    let mut work = tempfile::Builder::new()
        .prefix("drydock-bench-")
        .tempdir()
        .context("creating the work directory")?;
    if opts.keep {
        work.disable_cleanup(true);
        say(
            Instant::now(),
            &format!("logs kept in {}", work.path().display()),
        );
    }
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let clock = Instant::now();
    let label = opts.label();
    say(
        clock,
        &format!("{label}: starting the control plane (audit log on)"),
    );
    let mut env = TestEnv::start_with(&drydock_testenv::Options {
        audit: true,
        // A kubelet's default nodeStatusReportFrequency.
        node_heartbeat: Some(Duration::from_secs(300)),
        controller_qps: opts.plane_qps,
        kwok_parallelism: opts.kwok_parallelism,
        kwok_node_parallelism: opts.kwok_node_parallelism,
        node_lease_seconds: opts.node_lease_seconds,
    })
    .await
    .context("starting the control plane")?;
    if opts.keep {
        let dir = env.keep_dir().display().to_string();
        say(
            clock,
            &format!("the plane's logs and audit log kept in {dir}"),
        );
    }
    let client = env.client();
    let kubeconfig = env.kubeconfig().to_path_buf();
    let audit_log = env
        .audit_log()
        .ok_or_else(|| anyhow!("the plane has no audit log"))?
        .to_path_buf();

    // Nodes, created 16 at a time.
    let zones = ["zone-a", "zone-b", "zone-c"];
    let names: Vec<String> = (0..opts.nodes).map(|i| format!("node-{i:05}")).collect();
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut creates = futures_util::stream::iter(names.iter().enumerate().map(|(i, name)| {
        let api = nodes_api.clone();
        let spec = NodeSpec::new(
            name.clone(),
            &[
                ("node-role.kubernetes.io/worker", ""),
                ("topology.kubernetes.io/zone", zones[i % 3]),
            ],
        );
        async move {
            let node = drydock_testenv::kwok_node(&spec)?;
            api.create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("creating node {}", spec.name))
        }
    }))
    .buffer_unordered(16);
    while let Some(r) = creates.next().await {
        r?;
    }
    drop(creates);
    let observed = Arc::new(Mutex::new(Observed {
        index: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect(),
        phase: vec!["Idle".into(); opts.nodes],
        staged: vec![false; opts.nodes],
        done: vec![false; opts.nodes],
        unavailable: vec![true; opts.nodes],
        tainted: vec![true; opts.nodes],
        by_drydock: vec![false; opts.nodes],
        ..Default::default()
    }));
    let _observer = Aborting(observe(
        client_as(&kubeconfig, "drydock-bench-observer/0").await?,
        observed.clone(),
    ));
    // Ready and free of taints before any pod is created: pods created while some nodes
    // still carry `not-ready` would crowd onto the rest. The node lifecycle controller
    // lifts those taints at its own pace (110 s for 1,000 new nodes).
    let ready = wait_until(
        "every node Ready and untainted",
        Duration::from_secs(600 + opts.nodes as u64 / 4),
        || {
            let o = observed.lock().map_err(|_| anyhow!("observer poisoned"))?;
            Ok(o.unavailable.iter().all(|u| !u) && o.tainted.iter().all(|t| !t))
        },
    )
    .await?;
    say(
        clock,
        &format!(
            "{} KWOK nodes Ready and untainted ({:.1} s)",
            opts.nodes,
            ready.as_secs_f64()
        ),
    );

    let policy_text = policy(opts.max_unavailable);
    drydock_core::Policy::from_yaml(&policy_text).map_err(|e| anyhow!("the bench policy: {e}"))?;
    demo::create_namespaces_and_policy(&client, NS, APPS, &policy_text).await?;

    // Workloads: Deployments of PER_DEPLOYMENT pods, spread over the nodes, each behind a
    // budget of 25 % unavailable.
    let pods_total = ((opts.nodes as f64) * opts.pods_per_node).round() as usize;
    let deployments = pods_total.div_ceil(PER_DEPLOYMENT);
    for k in 0..deployments {
        let name = format!("app-{k}");
        let replicas = PER_DEPLOYMENT.min(pods_total - k * PER_DEPLOYMENT) as u32;
        let mut d = workload::deployment(APPS, &name, replicas);
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(grace_of(opts, k));
        // Spread over the hostnames across every Deployment, so that a uniform fleet is
        // uniform: each node holds its share of the pods, not two Deployments' pods on
        // one node and none on the next (a spread by Deployment left 600 of 1,000 nodes
        // without pods). Soft, so that an evicted pod's replacement always has a place.
        d["spec"]["template"]["metadata"]["labels"][BENCH_POD_LABEL] = json!("true");
        d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {BENCH_POD_LABEL: "true"}}},
        ]);
        env.apply(&d)
            .await
            .with_context(|| format!("creating {name}"))?;
        env.apply(&workload::pdb(
            APPS,
            &name,
            json!({"maxUnavailable": "25%"}),
        ))
        .await
        .with_context(|| format!("creating {name}'s budget"))?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    let pods_ready = {
        let start = Instant::now();
        let mut last_replace = Instant::now();
        loop {
            let list = pods.list(&ListParams::default()).await?;
            let ready = list.items.iter().filter(|p| pod_ready(p)).count();
            if ready == pods_total && list.items.len() == pods_total {
                break start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(900) {
                bail!("{ready} of {pods_total} pods Ready after 900 s");
            }
            // A node that missed a lease renewal on the loaded API server is marked
            // NotReady for a moment, and the node lifecycle controller marks its pods
            // not Ready; KWOK never reports them Ready again (a kubelet would). Such pods
            // are replaced, as their Deployment would replace a lost pod.
            if start.elapsed() > Duration::from_secs(60)
                && last_replace.elapsed() > Duration::from_secs(30)
            {
                last_replace = Instant::now();
                let stale: Vec<String> = list
                    .items
                    .iter()
                    .filter(|p| {
                        !pod_ready(p)
                            && p.metadata.deletion_timestamp.is_none()
                            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                for name in &stale {
                    match pods.delete(name, &Default::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e).context(format!("replacing pod {name}")),
                    }
                }
                if !stale.is_empty() {
                    say(
                        clock,
                        &format!(
                            "replaced {} running pods left not Ready by a node's missed lease",
                            stale.len()
                        ),
                    );
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    say(
        clock,
        &format!(
            "{pods_total} pods Ready in {deployments} Deployments behind budgets ({:.1} s)",
            pods_ready.as_secs_f64()
        ),
    );

    // The real machine (node 0), and the simulated rest.
    let reboots = reboot_times(opts);
    let omaha = OmahaServer::start(
        "127.0.0.1:0".parse()?,
        BTreeMap::from([("stable".to_string(), FROM.to_string())]),
    )
    .await
    .context("starting the fake Omaha server")?;
    let (boot_tx, mut boot_rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut machine = demo::start_machine(
        &bins,
        DemoOs::Flatcar,
        &names[0],
        FROM,
        Some(omaha.url()),
        work.path(),
        0,
        boot_tx,
        reboots[0],
    )?;
    let sims: Vec<fleet::SimNode> = names
        .iter()
        .zip(&reboots)
        .skip(1)
        .map(|(name, reboot)| fleet::SimNode {
            name: name.clone(),
            reboot: *reboot,
        })
        .collect();
    let kubelet = client_as(&kubeconfig, "drydock-bench-kubelet/0").await?;
    let fleet = fleet::Fleet::start(
        client_as(&kubeconfig, drydock_agent::USER_AGENT).await?,
        kubelet.clone(),
        &sims,
        FROM,
    )?;
    let mut agent_hwm = 0u64;
    let first = tokio::time::timeout(Duration::from_secs(60), boot_rx.recv())
        .await
        .map_err(|_| anyhow!("the real machine's host did not boot within 60 s"))?
        .ok_or_else(|| anyhow!("the real machine's host exited"))?;
    if demo::parse_host_line(&first.1)? != HostLine::Boot(1) {
        bail!("the real machine's host printed {:?} first", first.1);
    }
    machine.boots = 1;
    machine.agent = Some(demo::start_agent(
        &bins,
        &mut machine,
        &kubeconfig,
        &logs,
        None,
    )?);
    let started = wait_until(
        "every agent's first status",
        Duration::from_secs(600),
        || {
            Ok(fleet
                .counters
                .started
                .load(std::sync::atomic::Ordering::Relaxed) as usize
                == sims.len())
        },
    )
    .await?;
    say(
        clock,
        &format!(
            "{} simulated agents and 1 drydock-agent process reporting ({:.1} s)",
            sims.len(),
            started.as_secs_f64()
        ),
    );

    fleet.release(TO);
    omaha.set_release("stable", TO);
    let staging_from = Timestamp::now();
    let staged = wait_until(
        "every node staging the new version",
        Duration::from_secs(900),
        || {
            let o = observed.lock().map_err(|_| anyhow!("observer poisoned"))?;
            Ok(o.staged.iter().all(|s| *s))
        },
    )
    .await?;
    let staging_to = Timestamp::now();
    say(
        clock,
        &format!(
            "{TO} published; every node staged it ({:.1} s)",
            staged.as_secs_f64()
        ),
    );

    // The drain each node needs: the longest grace period of its pods now.
    let mut grace_on: Vec<f64> = vec![0.0; opts.nodes];
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut pods_on: Vec<usize> = vec![0; opts.nodes];
    for p in pods.list(&ListParams::default()).await?.items {
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let grace = p
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30) as f64;
        if let Some(&i) = node.and_then(|n| index.get(n)) {
            grace_on[i] = grace_on[i].max(grace);
            pods_on[i] += 1;
        }
    }
    let service: Vec<f64> = grace_on
        .iter()
        .zip(&reboots)
        .map(|(g, r)| g + r.as_secs_f64())
        .collect();
    let limit =
        drydock_core::policy::MaxUnavailable::Percent(opts.max_unavailable).resolve(opts.nodes);
    let bound = report::lower_bound(&service, limit);

    // The operator, timed from its start.
    let port = drydock_testenv::free_port()?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--namespace",
        NS,
        "--identity",
        "drydock-operator-0",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--drain-poll",
        "1s",
        "--log-format",
        "json",
        "--cincinnati-upstream",
        "none",
        "--omaha-upstream",
        "none",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let rollout_from = Timestamp::now();
    let t0 = Instant::now();
    // Where the machine's CPU goes during the rollout: every plane component, this
    // process (the simulated agents, kubelets and the observer) and the whole machine.
    let plane: Vec<(String, u32)> = env
        .components()
        .iter()
        .map(|c| (c.name.clone(), c.pid()))
        .chain([("drydockctl bench".to_string(), std::process::id())])
        .collect();
    let cpu_from: Vec<f64> = plane
        .iter()
        .map(|(_, pid)| proc_stats(*pid).map_or(0.0, |s| s.cpu_s))
        .collect();
    let machine_from = machine_cpu();
    if let Ok(mut o) = observed.lock() {
        o.started = Some(t0);
        o.initial = o.phase.clone();
    }
    // The Deployment (deploy/base/operator.yaml) sets nothing in the operator's
    // environment that changes how it runs; the image's static (musl) build reads no
    // allocator tunables either.
    let mut operator = start_process("drydock-operator", &bins.operator, &args, &logs)
        .context("starting drydock-operator")?;
    say(
        clock,
        &format!(
            "drydock-operator started; lower bound of the rollout {bound:.1} s ({limit} of {} nodes at once)",
            opts.nodes
        ),
    );
    let mut op_peak = ProcStats::default();
    // The operator's resident set once a second: when its peak comes (the first passes
    // over a fleet that staged at once, or the rollout's steady state) says what holds it.
    let mut op_rss: Vec<(f64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_report = Instant::now();
    // Nodes Done when the run stopped short of its end (the timeout), if it did.
    let mut stopped_short: Option<usize> = None;
    loop {
        tokio::select! {
            line = boot_rx.recv() => {
                let Some((_, line)) = line else { bail!("the real machine's host exited") };
                match demo::parse_host_line(&line)? {
                    HostLine::Shutdown => {
                        if let Some(mut a) = machine.agent.take() {
                            if let Some(s) = proc_stats(a.pid()) {
                                agent_hwm = agent_hwm.max(s.hwm_kib);
                            }
                            a.stop();
                        }
                    }
                    HostLine::Boot(b) if b > machine.boots => {
                        machine.boots = b;
                        kubelet_reports_boot(&kubelet, &names[0], &machine.root).await?;
                        machine.agent = Some(demo::start_agent(&bins, &mut machine, &kubeconfig, &logs, None)?);
                    }
                    HostLine::Boot(_) => {}
                }
            }
            _ = tick.tick() => {
                if let Some(how) = operator.exited() {
                    bail!("drydock-operator exited ({how}); its log: {}", operator.log.display());
                }
                if let Some(i) = fleet.ended() {
                    bail!("simulated node {} stopped", sims[i].name);
                }
                if let Some(s) = proc_stats(operator.pid()) {
                    op_peak = ProcStats { rss_kib: op_peak.rss_kib.max(s.rss_kib), ..s };
                    op_rss.push((t0.elapsed().as_secs_f64(), s.rss_kib));
                }
                if let Some(a) = &machine.agent && let Some(s) = proc_stats(a.pid()) {
                    agent_hwm = agent_hwm.max(s.hwm_kib);
                }
                let (done, peak, by_drydock) = {
                    let o = observed.lock().map_err(|_| anyhow!("observer poisoned"))?;
                    (o.done.iter().filter(|d| **d).count(), o.peak, o.peak_by_drydock)
                };
                if done == opts.nodes {
                    break;
                }
                if last_report.elapsed() >= Duration::from_secs(15) {
                    last_report = Instant::now();
                    say(clock, &format!("{done} of {} nodes Done; at most {peak} of {limit} unavailable so far ({by_drydock} through drydock)", opts.nodes));
                }
                if t0.elapsed() > opts.timeout {
                    // What was measured so far is still worth a report, marked partial.
                    say(clock, &format!("timed out with {done} of {} nodes Done; reporting what was measured", opts.nodes));
                    stopped_short = Some(done);
                    break;
                }
            }
        }
    }
    let rollout_to = Timestamp::now();
    let http = reqwest::Client::new();
    let metrics = demo::scrape(&http, &metrics_url).await.unwrap_or_default();
    let op_final = proc_stats(operator.pid()).unwrap_or(op_peak);
    let machine_to = machine_cpu();
    let mut cpu_by_process: serde_json::Map<String, serde_json::Value> = plane
        .iter()
        .zip(&cpu_from)
        .filter_map(|((name, pid), from)| {
            let to = proc_stats(*pid)?.cpu_s;
            Some((name.clone(), json!(round2(to - from))))
        })
        .collect();
    cpu_by_process.insert("drydock-operator".into(), json!(round2(op_final.cpu_s)));
    say(
        clock,
        &format!(
            "CPU seconds over the rollout: {}",
            cpu_by_process
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    operator.stop();
    if let Some(mut a) = machine.agent.take() {
        if let Some(s) = proc_stats(a.pid()) {
            agent_hwm = agent_hwm.max(s.hwm_kib);
        }
        a.stop();
    }
    drop(fleet);
    // Give the audit log a moment for the last requests' lines.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rollout_counts, bad_lines) = audit::count(&audit_log, rollout_from, rollout_to)?;
    let (staging_counts, _) = audit::count(&audit_log, staging_from, staging_to)?;

    let (changes, initial, peak, peak_by_drydock, last_done) = {
        let o = observed.lock().map_err(|_| anyhow!("observer poisoned"))?;
        (
            o.changes.clone(),
            o.initial.clone(),
            o.peak,
            o.peak_by_drydock,
            o.last_done,
        )
    };
    // A partial run's makespan is at least the time it ran.
    let makespan = match stopped_short {
        Some(_) => t0.elapsed().as_secs_f64().max(last_done),
        None => last_done,
    };
    // Per update: per node updated — all of them, or, in a run stopped short, every node
    // whose update had started (its drain), since those made most of their requests.
    let updated = match stopped_short {
        None => opts.nodes,
        Some(_) => {
            let started: std::collections::HashSet<usize> = changes
                .iter()
                .filter(|c| c.to == "Draining")
                .map(|c| c.node)
                .collect();
            started.len().max(1)
        }
    };
    let reactions = report::reactions(&changes);
    // Where each node's time went: its stay in each phase, and its slot against the
    // drain and reboot it needed (what is over is orchestration).
    let stays: serde_json::Map<String, serde_json::Value> = report::dwell(&changes)
        .iter()
        .map(|(phase, xs)| (phase.clone(), report::spread(xs)))
        .collect();
    let held = report::slots(&changes);
    let slot_times: Vec<f64> = held.values().copied().collect();
    let slot_over: Vec<f64> = held
        .iter()
        .filter_map(|(i, t)| service.get(*i).map(|s| t - s))
        .collect();
    let (passes, pass_mean, pass_p99) =
        histogram_stats(&metrics, "drydock_planner_duration_seconds");
    let (whole_passes, whole_mean, whole_p99) =
        histogram_stats(&metrics, "drydock_pass_duration_seconds");
    let n = updated as f64;
    let per_update = |c: &audit::Counts| per_update_of(c, n);
    let (op_writes, op_evictions) = audit::writes(&rollout_counts, "drydock-operator");
    let result = json!({
        "label": label,
        "nodes": opts.nodes,
        "profile": opts.profile.name(),
        "pods": pods_total,
        "deployments": deployments,
        "maxUnavailable": limit,
        "rebootSeconds": opts.reboot.as_secs_f64(),
        "graceSeconds": opts.grace.as_secs_f64(),
        "complete": stopped_short.is_none(),
        "nodesDone": stopped_short.unwrap_or(opts.nodes),
        "updatesCounted": updated,
        "makespanSeconds": makespan,
        "lowerBoundSeconds": bound,
        // How the pods lay over the nodes when the rollout started: the bound counts a
        // node without pods as its reboot alone.
        // The controller-manager's and scheduler's client QPS and burst (null: their
        // defaults, 20/30 and 50/100): the ReplicaSet controller recreates evicted pods,
        // and the budgets wait for those, at this rate.
        "planeQps": opts.plane_qps,
        // How many pod stages KWOK, every node's kubelet here, plays at once (null: 4;
        // before 2026-12-07 node stages and Lease renewals too).
        "kwokParallelism": opts.kwok_parallelism,
        // How many node stages and Lease renewals it plays at once (null: 4).
        "kwokNodeParallelism": opts.kwok_node_parallelism,
        // The node Leases' duration and the controller-manager's grace period (null: 40).
        "nodeLeaseSeconds": opts.node_lease_seconds,
        "podsPerNodeAtStart": {
            "min": pods_on.iter().min(),
            "max": pods_on.iter().max(),
            "nodesWithout": pods_on.iter().filter(|n| **n == 0).count(),
        },
        "ratio": if bound > 0.0 { makespan / bound } else { 0.0 },
        "reaction": {
            "samples": reactions.len(),
            "p50Seconds": report::quantile(&reactions, 0.5),
            "p99Seconds": report::quantile(&reactions, 0.99),
            "maxSeconds": report::quantile(&reactions, 1.0),
        },
        "phaseSeconds": stays,
        "slotSeconds": report::spread(&slot_times),
        "slotOverServiceSeconds": report::spread(&slot_over),
        "peakUnavailable": peak,
        "peakUnavailableByDrydock": peak_by_drydock,
        "operator": {
            // Which build was measured: the images' static (musl) one or a dynamic
            // (glibc) one; their allocators hold memory differently.
            "binary": binary::describe(&bins.operator),
            "peakRssMiB": op_final.hwm_kib as f64 / 1024.0,
            "rssMiB": rss_summary(&op_rss),
            "cpuSeconds": op_final.cpu_s,
            "writesPerUpdate": op_writes as f64 / n,
            "writesPerUpdateWithoutEvictions": (op_writes - op_evictions) as f64 / n,
            "plannerPasses": passes,
            "plannerMeanMs": pass_mean * 1000.0,
            "plannerP99BucketMs": pass_p99.map(|s| s * 1000.0),
            // Whole passes, the planner's included: how long a node that reports
            // meanwhile may wait for the next one (from 2026-12-07c on).
            "passes": whole_passes,
            "passMeanSeconds": whole_mean,
            "passP99BucketSeconds": whole_p99,
            "nodeWritesPerUpdateByCause": node_writes(&metrics)
                .into_iter()
                .map(|(cause, v)| (cause, json!(v as f64 / n)))
                .collect::<serde_json::Map<_, _>>(),
            "podListsPerUpdateByPurpose": pod_lists(&metrics)
                .into_iter()
                .map(|(purpose, v)| (purpose, json!(v as f64 / n)))
                .collect::<serde_json::Map<_, _>>(),
        },
        "agent": {
            "binary": binary::describe(&bins.agent),
            "peakRssMiB": agent_hwm as f64 / 1024.0,
        },
        // CPU seconds each process used over the rollout, and the machine's busy and
        // idle CPU seconds over the same window (all cores).
        "cpuSecondsByProcess": cpu_by_process,
        "machineCpuSeconds": match (machine_from, machine_to) {
            (Some(a), Some(b)) => json!({
                "cores": b.cores,
                "busy": round2(b.busy - a.busy),
                "idle": round2(b.idle - a.idle),
            }),
            _ => serde_json::Value::Null,
        },
        "setupSeconds": {
            "nodesReady": ready.as_secs_f64(),
            "podsReady": pods_ready.as_secs_f64(),
            "staged": staged.as_secs_f64(),
        },
        "requestsPerUpdate": per_update(&rollout_counts),
        "stagingRequestsPerNode": per_update_of(&staging_counts, opts.nodes as f64),
        "auditLinesUnreadable": bad_lines,
    });
    let svg = report::svg(
        &format!(
            "{label}: nodes per phase ({} nodes, {limit} at once, makespan {makespan:.0} s)",
            opts.nodes
        ),
        opts.nodes,
        makespan,
        &report::series(&initial, &changes),
    );
    std::fs::write(opts.results.join(format!("{label}-phases.svg")), svg)?;
    std::fs::write(
        opts.results.join(format!("{label}.json")),
        serde_json::to_string_pretty(&result)?,
    )?;
    // drydock answers for what it disrupts; nodes that went NotReady on their own (KWOK
    // leases on a saturated API server) are reported, not failed on.
    if peak_by_drydock > limit {
        bail!(
            "{label}: drydock had {peak_by_drydock} nodes unavailable at once, over the limit of {limit}"
        );
    }
    if let Some(done) = stopped_short {
        bail!(
            "{label}: {done} of {} nodes Done after {:?}; partial results written; logs in {}",
            opts.nodes,
            opts.timeout,
            logs.display()
        );
    }
    Ok(result)
}

/// Requests per node update by component (`n` updates), with writes and the writes that
/// are not evictions.
fn per_update_of(c: &audit::Counts, n: f64) -> serde_json::Value {
    c.iter()
        .map(|(comp, m)| {
            let total: u64 = m.values().sum();
            let (w, ev) = audit::writes(c, comp);
            (
                comp.clone(),
                json!({
                    "requests": total as f64 / n,
                    "writes": w as f64 / n,
                    "writesWithoutEvictions": (w - ev) as f64 / n,
                    "byVerb": m.iter().map(|(k, v)| (k.clone(), json!(*v as f64 / n))).collect::<serde_json::Map<_, _>>(),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The real machine's kubelet after a boot: the host's new boot id on the Node, as the
/// simulated nodes' kubelets report theirs.
async fn kubelet_reports_boot(
    client: &kube::Client,
    node: &str,
    root: &Path,
) -> anyhow::Result<()> {
    let file = root.join("proc/sys/kernel/random/boot_id");
    let id =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let api: Api<Node> = Api::all(client.clone());
    let status = json!({"status": {"nodeInfo": {"bootID": id.trim()}}});
    api.patch_status(
        node,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .with_context(|| format!("reporting {node}'s boot"))?;
    Ok(())
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Aborts a task when dropped.
struct Aborting(tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every run's results in `dir` (`<profile>-<nodes>.json`), by profile, then size.
pub fn collect(dir: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        let is_run = path.extension().is_some_and(|x| x == "json")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s != "summary");
        if !is_run {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench result", path.display()))?;
        all.push(v);
    }
    all.sort_by(|a, b| {
        (
            a["profile"].as_str() != Some("uniform"),
            a["nodes"].as_u64(),
        )
            .cmp(&(
                b["profile"].as_str() != Some("uniform"),
                b["nodes"].as_u64(),
            ))
    });
    Ok(all)
}

/// The results as a Markdown table, one row per run.
pub fn table(results: &[serde_json::Value]) -> String {
    let mut out = String::from(
        "| run | nodes | pods | limit | makespan s | lower bound s | ratio | slot over drain+reboot mean / p99 s | reaction p50 / p99 s | operator writes/update (no evictions) | operator peak RSS MiB | operator CPU s | planner mean / p99 bucket ms | agent peak RSS MiB | peak unavailable (by drydock) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let f = |v: &serde_json::Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.2}"));
    // A peak resident set with the build it belongs to, when the run recorded it.
    let rss = |part: &serde_json::Value| match part["binary"]["linkage"].as_str() {
        Some(l @ ("static" | "dynamic")) => format!("{} ({l})", f(&part["peakRssMiB"])),
        _ => f(&part["peakRssMiB"]),
    };
    for r in results {
        // A run stopped short says so in its name, with how far it got.
        let label = r["label"].as_str().unwrap_or("?");
        let label = if r["complete"].as_bool() == Some(false) {
            format!(
                "{label} (stopped: {} of {} Done)",
                r["nodesDone"], r["nodes"]
            )
        } else {
            label.to_string()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} ({}) | {} | {} | {} / {} | {} | {} ({}) |\n",
            label,
            r["nodes"],
            r["pods"],
            r["maxUnavailable"],
            f(&r["makespanSeconds"]),
            f(&r["lowerBoundSeconds"]),
            f(&r["ratio"]),
            f(&r["slotOverServiceSeconds"]["meanSeconds"]),
            f(&r["slotOverServiceSeconds"]["p99Seconds"]),
            f(&r["reaction"]["p50Seconds"]),
            f(&r["reaction"]["p99Seconds"]),
            f(&r["operator"]["writesPerUpdate"]),
            f(&r["operator"]["writesPerUpdateWithoutEvictions"]),
            rss(&r["operator"]),
            f(&r["operator"]["cpuSeconds"]),
            f(&r["operator"]["plannerMeanMs"]),
            f(&r["operator"]["plannerP99BucketMs"]),
            rss(&r["agent"]),
            r["peakUnavailable"],
            r.get("peakUnavailableByDrydock").unwrap_or(&serde_json::Value::Null),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_a_run_stopped_short_and_shows_drydock_s_share_of_the_peak() {
        let whole = json!({"label": "uniform-100", "nodes": 100, "pods": 100, "maxUnavailable": 20,
            "complete": true, "nodesDone": 100, "makespanSeconds": 120.0, "lowerBoundSeconds": 110.0,
            "ratio": 1.09, "reaction": {"p50Seconds": 0.3, "p99Seconds": 0.8},
            "operator": {"writesPerUpdate": 9.5, "writesPerUpdateWithoutEvictions": 8.5,
                "peakRssMiB": 17.0, "cpuSeconds": 3.0, "plannerMeanMs": 0.7, "plannerP99BucketMs": 5.0},
            "agent": {"peakRssMiB": 10.0}, "peakUnavailable": 21, "peakUnavailableByDrydock": 20});
        let mut partial = whole.clone();
        partial["label"] = json!("uniform-5000");
        partial["complete"] = json!(false);
        partial["nodesDone"] = json!(1200);
        partial["nodes"] = json!(5000);
        let t = table(&[whole, partial.clone()]);
        let rows: Vec<&str> = t.lines().skip(2).collect();
        assert_eq!(rows.len(), 2, "{t}");
        assert!(rows[0].starts_with("| uniform-100 | 100 |"), "{t}");
        assert!(rows[0].ends_with("| 21 (20) |"), "{t}");
        assert!(
            rows[1].starts_with("| uniform-5000 (stopped: 1200 of 5000 Done) | 5000 |"),
            "{t}"
        );
        assert!(rows[0].contains("| 9.50 (8.50) |"), "{t}");
        // Runs from before the slot figures show a dash; later ones show them.
        assert!(rows[0].contains("| 1.09 | – / – | 0.30 / 0.80 |"), "{t}");
        let mut with_slots = partial.clone();
        with_slots["slotOverServiceSeconds"] = json!({"meanSeconds": 3.25, "p99Seconds": 7.5});
        let t = table(&[with_slots]);
        assert!(t.contains("| 3.25 / 7.50 |"), "{t}");
        // A run that recorded its builds names them beside their memory.
        let mut with_builds = partial.clone();
        with_builds["operator"]["binary"] =
            json!({"path": "/b/drydock-operator", "linkage": "static"});
        with_builds["agent"]["binary"] = json!({"path": "/b/drydock-agent", "linkage": "dynamic"});
        let t = table(&[with_builds]);
        assert!(t.contains("| 17.00 (static) | 3.00 |"), "{t}");
        assert!(t.contains("| 10.00 (dynamic) | 21 (20) |"), "{t}");
        assert!(rows[0].contains("| 17.00 | 3.00 |"), "{}", rows[0]);
    }

    #[test]
    fn the_bench_policy_is_valid_with_one_pool_at_the_given_percentage() {
        let p = drydock_core::Policy::from_yaml(&policy(20)).expect("valid");
        let pools: Vec<_> = p.all_pools().collect();
        let workers = pools.iter().find(|x| x.name == "workers").expect("workers");
        assert_eq!(workers.max_unavailable.resolve(1000), 200);
    }

    #[test]
    fn a_histogram_gives_count_mean_and_p99_bucket_by_name() {
        let m = "drydock_planner_duration_seconds_bucket{le=\"0.001\"} 90\n\
drydock_planner_duration_seconds_bucket{le=\"0.005\"} 99\n\
drydock_planner_duration_seconds_bucket{le=\"0.01\"} 100\n\
drydock_planner_duration_seconds_bucket{le=\"+Inf\"} 100\n\
drydock_planner_duration_seconds_sum 0.2\n\
drydock_planner_duration_seconds_count 100\n";
        let (n, mean, p99) = histogram_stats(m, "drydock_planner_duration_seconds");
        assert_eq!(n, 100);
        assert!((mean - 0.002).abs() < 1e-12);
        assert_eq!(p99, Some(0.005));
        let passes = "drydock_pass_duration_seconds_bucket{le=\"1\"} 3\n\
drydock_pass_duration_seconds_bucket{le=\"30\"} 4\n\
drydock_pass_duration_seconds_bucket{le=\"+Inf\"} 4\n\
drydock_pass_duration_seconds_sum 22\n\
drydock_pass_duration_seconds_count 4\n";
        let both = format!("{m}{passes}");
        assert_eq!(
            histogram_stats(&both, "drydock_pass_duration_seconds"),
            (4, 5.5, Some(30.0))
        );
        assert_eq!(
            histogram_stats(&both, "drydock_planner_duration_seconds").0,
            100
        );
    }

    #[test]
    fn node_writes_and_pod_lists_are_read_by_label() {
        let m = "# TYPE drydock_node_writes_total counter\n\
drydock_node_writes_total{cause=\"Drain\"} 12\n\
drydock_node_writes_total{cause=\"waiting Queued\"} 7\n\
drydock_nodes{pool=\"p\",phase=\"Done\"} 3\n";
        let w = node_writes(m);
        assert_eq!(w.len(), 2);
        assert_eq!(w.get("Drain"), Some(&12));
        assert_eq!(w.get("waiting Queued"), Some(&7));
        let l = pod_lists(
            "drydock_pod_lists_total{purpose=\"ahead\"} 5\n\
drydock_pod_lists_total{purpose=\"draining\"} 40\n\
drydock_node_writes_total{cause=\"Drain\"} 12\n",
        );
        assert_eq!(l.len(), 2);
        assert_eq!((l.get("ahead"), l.get("draining")), (Some(&5), Some(&40)));
    }

    #[test]
    fn mixed_reboots_stay_within_half_and_twice_the_centre_and_repeat_per_seed() {
        let opts = Options {
            nodes: 200,
            profile: Profile::Mixed,
            reboot: Duration::from_secs(20),
            grace: Duration::from_secs(5),
            max_unavailable: 20,
            pods_per_node: 1.0,
            seed: 7,
            plane_qps: None,
            kwok_parallelism: None,
            kwok_node_parallelism: None,
            node_lease_seconds: None,
            keep: false,
            timeout: Duration::from_secs(60),
            bin_dir: None,
            results: PathBuf::from("/nonexistent"),
        };
        let a = reboot_times(&opts);
        assert_eq!(a, reboot_times(&opts));
        assert!(
            a.iter()
                .all(|d| *d >= Duration::from_secs(10) && *d <= Duration::from_secs(40))
        );
        assert!(
            a.iter().any(|d| *d < Duration::from_secs(15))
                && a.iter().any(|d| *d > Duration::from_secs(30))
        );
        assert_eq!([0, 1, 2, 3].map(|k| grace_of(&opts, k)), [2, 5, 10, 15]);
        let uniform = Options {
            profile: Profile::Uniform,
            ..opts
        };
        assert!(
            reboot_times(&uniform)
                .iter()
                .all(|d| *d == Duration::from_secs(20))
        );
    }

    #[test]
    fn the_rss_summary_names_the_highest_sample_and_when_it_came() {
        let r = rss_summary(&[(1.04, 10_240), (2.0, 30_720), (3.0, 20_480)]);
        assert_eq!(r["highestSampled"], json!(30.0));
        assert_eq!(r["highestAtSeconds"], json!(2.0));
        assert_eq!(r["last"], json!(20.0));
        assert_eq!(r["series"], json!([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0]]));
        let none = rss_summary(&[]);
        assert!(none["highestSampled"].is_null() && none["last"].is_null());
        assert_eq!(none["series"], json!([]));
    }

    #[test]
    fn the_machines_cpu_is_read_from_proc_stat() {
        let stat = "cpu  1000 50 300 5000 200 10 20 0 0 0\ncpu0 500 25 150 2500 100 5 10 0 0 0\ncpu1 500 25 150 2500 100 5 10 0 0 0\nintr 1 2 3\n";
        assert_eq!(
            parse_machine_cpu(stat),
            Some(MachineCpu {
                cores: 2,
                busy: 13.8,
                idle: 52.0
            })
        );
        assert_eq!(parse_machine_cpu("cpu  1 x 3\n"), None);
        assert_eq!(parse_machine_cpu("intr 1\n"), None);
        let now = machine_cpu().expect("this machine's /proc/stat");
        assert!(now.cores >= 1 && now.busy > 0.0, "{now:?}");
    }

    #[test]
    fn this_process_reads_its_own_memory_and_cpu() {
        let s = proc_stats(std::process::id()).expect("own /proc");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}

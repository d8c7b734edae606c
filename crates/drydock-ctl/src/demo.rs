//! `drydockctl demo`: a whole fleet rolling on this machine. It brings up the local
//! control plane with KWOK nodes, a simulated host and a real `drydock-agent` process per
//! node, sample workloads behind PodDisruptionBudgets and two `drydock-operator`
//! replicas; then it publishes a new OS version upstream, shows the rollout live, and
//! prints what an independent observer measured: the makespan, the nodes updated, the
//! most nodes unavailable at once per pool against the limit, the evictions budgets
//! refused, and budget violations.
//!
//! Everything it starts is a child process with a parent-death signal, stopped when the
//! demo ends, fails or is interrupted; its files live in one temporary directory.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use drydock_core::Policy;
use drydock_core::protocol::{Phase, parse_node_state};
use drydock_sim::bus::PrivateBus;
use drydock_sim::cincinnati::{CincinnatiServer, ReleaseSpec};
use drydock_sim::omaha::OmahaServer;
use drydock_testenv::{Component, NodeSpec, TestEnv, start_piped_process, start_process, workload};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{live, status};

/// drydock's namespace in the demo cluster.
const NS: &str = "drydock-system";
/// Where the sample workloads run.
const APPS: &str = "shop";

/// The OS the simulated fleet runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoOs {
    /// Flatcar: update_engine checks a fake Omaha server, which publishes the new version.
    Flatcar,
    /// Fedora CoreOS: the agents read a fake Cincinnati graph and stage what it offers.
    Fcos,
}

impl DemoOs {
    /// (booted first, published) versions.
    fn versions(self) -> (&'static str, &'static str) {
        match self {
            DemoOs::Flatcar => ("4081.2.0", "4230.0.0"),
            DemoOs::Fcos => ("41.20241109.3.0", "41.20241122.3.0"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            DemoOs::Flatcar => "flatcar",
            DemoOs::Fcos => "fcos",
        }
    }
}

/// What the demo does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker nodes (a control-plane node comes on top).
    pub workers: usize,
    /// Their OS.
    pub os: DemoOs,
    /// Give up after this long from publishing.
    pub timeout: Duration,
    /// Also write the summary as JSON here.
    pub summary: Option<PathBuf>,
    /// Where drydock-agent, drydock-operator and drydock-sim are (default: next to
    /// drydockctl).
    pub bin_dir: Option<PathBuf>,
    /// Keep the work directory (logs, host files) at the end.
    pub keep: bool,
    /// Inject faults during the rollout, drawn from this seed ([`crate::chaos`]).
    pub chaos: Option<u64>,
}

/// The demo's policy: a control-plane pool one at a time, workers two at a time after a
/// canary, a short bake so the phases can be watched.
pub const POLICY: &str = r#"# drydockctl demo: every pool follows stable, no maintenance window.
channel: stable
maxUnavailable: 1
drain:
  timeout: 3m
  onTimeout: hold
health:
  readyTimeout: 2m
  bake: 5s
pools:
  - name: control-plane
    nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  - name: workers
    nodeSelector:
      matchExpressions:
        - {key: node-role.kubernetes.io/worker, operator: Exists}
    maxUnavailable: 2
    canary: 1
"#;

/// The demo policy's `health` block, which a chaos run replaces.
const HEALTH: &str = "health:\n  readyTimeout: 2m\n  bake: 5s\n";

/// The policy of a chaos run: the demo's, but a reboot that does not come back within
/// 20 s fails the node, and failures do not halt the pools, so one delayed reboot shows
/// as one Failed node while the rest of the rollout goes on.
pub fn chaos_policy() -> String {
    POLICY.replace(
        HEALTH,
        "health:\n  readyTimeout: 20s\n  bake: 5s\n  haltAfterFailures: 10\n",
    )
}

/// How long a demo host's reboot takes.
const DEMO_REBOOT: Duration = Duration::from_secs(3);

/// How long a delayed reboot keeps the host frozen: past [`chaos_policy`]'s readyTimeout.
const FREEZE: Duration = Duration::from_secs(26);

/// What a chaos run undoes or restarts later.
#[derive(Debug)]
enum Pending {
    Operator(usize),
    Agent(usize),
    Thaw(usize),
    Ready(String),
}

/// A chaos run's state: the schedule still to come, what to undo, what was injected.
struct Chaos {
    seed: u64,
    rng: crate::chaos::Rng,
    queue: std::collections::VecDeque<(Instant, crate::chaos::Fault)>,
    pending: Vec<(Instant, Pending)>,
    injected: Vec<serde_json::Value>,
    started: Instant,
}

impl Chaos {
    fn new(seed: u64, published: Instant) -> Chaos {
        let mut rng = crate::chaos::Rng::new(seed);
        let queue = crate::chaos::schedule(&mut rng)
            .into_iter()
            .map(|(at, f)| (published + at, f))
            .collect();
        Chaos {
            seed,
            rng,
            queue,
            pending: Vec::new(),
            injected: Vec::new(),
            started: published,
        }
    }

    fn record(&mut self, fault: crate::chaos::Fault, target: &str, ui: &mut Display) {
        self.note(fault, target, false, ui);
    }

    fn note(&mut self, fault: crate::chaos::Fault, target: &str, skipped: bool, ui: &mut Display) {
        let at = (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        ui.say(&format!("chaos: {} ({target})", fault.name()));
        self.injected.push(
            json!({"at_seconds": at, "fault": fault.name(), "target": target, "skipped": skipped}),
        );
    }

    fn finished(&self) -> bool {
        self.queue.is_empty() && self.pending.is_empty()
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .with_context(|| format!("kill -{sig} {pid}"))?;
    if !status.success() {
        bail!("kill -{sig} {pid}: {status}");
    }
    Ok(())
}

/// The binaries the demo runs.
pub(crate) struct Bins {
    pub(crate) agent: PathBuf,
    pub(crate) operator: PathBuf,
    pub(crate) sim: PathBuf,
}

impl Bins {
    pub(crate) fn find(dir: Option<&Path>) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => std::env::current_exe()
                .context("finding drydockctl's own path")?
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| anyhow!("drydockctl's path has no directory"))?,
        };
        let find = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(anyhow!(
                    "{name} is not in {}: build every binary first (`cargo build --bins`), or pass --bin-dir",
                    dir.display()
                ))
            }
        };
        Ok(Bins {
            agent: find("drydock-agent")?,
            operator: find("drydock-operator")?,
            sim: find("drydock-sim")?,
        })
    }
}

/// One simulated machine: its bus, its host services, and its agent (restarted on boot).
pub(crate) struct Machine {
    name: String,
    bus: PrivateBus,
    pub(crate) root: PathBuf,
    pub(crate) host: Component,
    pub(crate) agent: Option<Component>,
    /// The host's stdin (Fedora CoreOS: where releases are published).
    stdin: Option<std::process::ChildStdin>,
    pub(crate) boots: u32,
    /// Powered off (between a shutdown line and the next boot).
    down: bool,
    /// Chaos: freeze the host at its next power-off.
    delay_armed: bool,
}

/// What the independent observer saw.
#[derive(Debug, Default)]
struct Observed {
    /// Per pool: the most nodes unavailable at once.
    peak: BTreeMap<String, usize>,
    /// Budget status updates seen after the workloads were Ready.
    pdb_updates: usize,
    /// Budgets seen with fewer healthy pods than they require.
    violations: Vec<String>,
}

/// How the demo ended.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Whether every node was updated (under chaos: settled) and nothing was violated.
    pub passed: bool,
    /// The faults injected, by kind name (chaos runs).
    pub faults: Vec<String>,
    /// Every invariant broken, in words.
    pub violations: Vec<String>,
}

struct Display {
    tty: bool,
    started: Instant,
    last: String,
}

impl Display {
    fn say(&mut self, text: &str) {
        println!("[{:>6.1}s] {text}", self.started.elapsed().as_secs_f64());
        let _ = std::io::stdout().flush();
    }

    /// The live picture: the status table on a terminal, a line per pool change when piped.
    fn show(&mut self, s: &status::Status, header: &str) {
        if self.tty {
            print!(
                "\x1b[H\x1b[2J{header}\n\n{}",
                status::table(s, std::env::var_os("NO_COLOR").is_none())
            );
        } else {
            let line = s
                .pools
                .iter()
                .map(|p| {
                    format!(
                        "{} {}/{} done, {}/{} unavailable",
                        p.name, p.done, p.nodes, p.unavailable, p.max_unavailable
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ");
            let phases = s
                .nodes
                .iter()
                .map(|n| format!("{}={}", n.name, n.phase))
                .collect::<Vec<_>>()
                .join(" ");
            let text = format!("{line} || {phases}");
            if text != self.last {
                self.say(&text);
                self.last = text;
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// Runs the demo; the returned summary has been printed.
pub async fn run(opts: Options) -> anyhow::Result<Summary> {
    let bins = Bins::find(opts.bin_dir.as_deref())?;
    if opts.workers == 0 {
        bail!("--nodes must be at least 1");
    }
    let mut work = tempfile::Builder::new()
        .prefix("drydock-demo-")
        .tempdir()
        .context("creating the work directory")?;
    let result = run_in(&opts, &bins, work.path()).await;
    if opts.keep || result.is_err() {
        work.disable_cleanup(true);
        eprintln!(
            "drydockctl demo: logs and host files kept in {}",
            work.path().display()
        );
    }
    result
}

async fn run_in(opts: &Options, bins: &Bins, work: &Path) -> anyhow::Result<Summary> {
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs).context("creating the log directory")?;
    let mut ui = Display {
        tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        started: Instant::now(),
        last: String::new(),
    };
    let (from, to) = opts.os.versions();
    let policy_text = if opts.chaos.is_some() {
        chaos_policy()
    } else {
        POLICY.to_string()
    };
    let policy_text = policy_text.as_str();
    let policy = Policy::from_yaml(policy_text).map_err(|e| anyhow!("the demo policy: {e}"))?;

    ui.say("starting the control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok");
    let mut env = TestEnv::start()
        .await
        .context("starting the control plane")?;
    let client = env.client();

    let zones = ["zone-a", "zone-b", "zone-c"];
    let mut specs: Vec<NodeSpec> = vec![NodeSpec::new(
        "cp-0",
        &[
            ("node-role.kubernetes.io/control-plane", ""),
            ("topology.kubernetes.io/zone", "zone-a"),
        ],
    )];
    specs.extend((0..opts.workers).map(|i| {
        NodeSpec::new(
            format!("node-{i}"),
            &[
                ("node-role.kubernetes.io/worker", ""),
                ("topology.kubernetes.io/zone", zones[i % 3]),
            ],
        )
    }));
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    env.add_nodes(&specs).await.context("adding nodes")?;
    env.wait_nodes_ready(&names, Duration::from_secs(90))
        .await
        .context("waiting for the KWOK nodes")?;
    ui.say(&format!(
        "{} KWOK nodes Ready: cp-0 (control-plane) and {} workers over {} zones",
        names.len(),
        opts.workers,
        opts.workers.min(3)
    ));

    create_namespaces_and_policy(&client, NS, APPS, policy_text).await?;

    // The upstream: Flatcar nodes check a fake Omaha server; CoreOS agents read a fake
    // Cincinnati graph, and the commits it names are published on each host's remote
    // through the host's stdin.
    let omaha = match opts.os {
        DemoOs::Flatcar => Some(
            OmahaServer::start(
                "127.0.0.1:0".parse()?,
                BTreeMap::from([("stable".to_string(), from.to_string())]),
            )
            .await
            .context("starting the fake Omaha server")?,
        ),
        DemoOs::Fcos => None,
    };
    let graph = match opts.os {
        DemoOs::Fcos => {
            let g = CincinnatiServer::start("127.0.0.1:0".parse()?)
                .await
                .context("starting the fake Cincinnati server")?;
            g.set_releases("stable", vec![ReleaseSpec::new(from)]);
            Some(g)
        }
        DemoOs::Flatcar => None,
    };
    let graph_url = graph.as_ref().map(CincinnatiServer::url);

    // Flatcar hosts ask the operators' Omaha proxy, which asks the fake upstream: the
    // pool's pin and the rollout order decide when each node downloads.
    let ports = [drydock_testenv::free_port()?, drydock_testenv::free_port()?];
    let proxy_url = format!("http://127.0.0.1:{}/v1/update/", ports[0]);
    let kubeconfig = env.kubeconfig().to_path_buf();
    let (boot_tx, mut boot_rx) = mpsc::unbounded_channel::<(usize, String)>();
    let mut machines = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let m = start_machine(
            bins,
            opts.os,
            name,
            from,
            omaha.as_ref().map(|_| proxy_url.clone()),
            work,
            i,
            boot_tx.clone(),
            DEMO_REBOOT,
        )?;
        machines.push(m);
    }
    // Each host prints its first boot when its services are on its bus; then its agent starts.
    let mut up = 0;
    while up < machines.len() {
        let (i, line) = tokio::time::timeout(Duration::from_secs(60), boot_rx.recv())
            .await
            .map_err(|_| anyhow!("the simulated hosts did not all start within 60 s"))?
            .ok_or_else(|| anyhow!("every simulated host exited"))?;
        if parse_host_line(&line)? == HostLine::Boot(1) {
            let m = &mut machines[i];
            m.boots = 1;
            m.agent = Some(start_agent(
                bins,
                m,
                &kubeconfig,
                &logs,
                graph_url.as_deref(),
            )?);
            up += 1;
        }
    }
    ui.say(&format!(
        "{} simulated {} hosts up, each on its own dbus-daemon, with a drydock-agent process",
        machines.len(),
        match opts.os {
            DemoOs::Flatcar => "Flatcar",
            DemoOs::Fcos => "Fedora CoreOS",
        }
    ));

    let workers = opts.workers as u32;
    let replicas = workers.max(2);
    let workloads = [
        deployment("web", replicas),
        workload::pdb(APPS, "web", json!({"maxUnavailable": 1})),
        deployment("api", 3),
        workload::pdb(APPS, "api", json!({"minAvailable": 2})),
        deployment("cache", 2),
        workload::pdb(APPS, "cache", json!({"minAvailable": 1})),
    ];
    for w in &workloads {
        env.apply(w)
            .await
            .with_context(|| format!("creating {} {APPS}/{}", w["kind"], w["metadata"]["name"]))?;
    }
    let pods_expected = replicas as usize + 5;
    env.wait_pods_ready(APPS, pods_expected, Duration::from_secs(120))
        .await
        .context("waiting for the workloads")?;
    ui.say(&format!(
        "workloads Ready in namespace {APPS}: web ×{replicas} (PDB maxUnavailable 1), api ×3 (minAvailable 2), cache ×2 (minAvailable 1)"
    ));

    let mut operators = Vec::new();
    let mut op_args = Vec::new();
    let mut metrics_urls = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        let mut args = vec![
            "--kubeconfig".to_string(),
            kubeconfig.display().to_string(),
            "--namespace".into(),
            NS.into(),
            "--identity".into(),
            format!("drydock-operator-{i}"),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--lease-duration".into(),
            "6s".into(),
            "--renew-deadline".into(),
            "4s".into(),
            "--retry-period".into(),
            "1s".into(),
            "--drain-poll".into(),
            "1s".into(),
            "--log-format".into(),
            "json".into(),
            "--cincinnati-upstream".into(),
            "none".into(),
            "--omaha-upstream".into(),
        ];
        args.push(
            omaha
                .as_ref()
                .map_or_else(|| "none".to_string(), OmahaServer::url),
        );
        operators.push(
            start_process(&format!("operator-{i}"), &bins.operator, &args, &logs)
                .context("starting drydock-operator")?,
        );
        op_args.push(args);
        metrics_urls.push(format!("http://127.0.0.1:{port}/metrics"));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    wait_leader(&http, &metrics_urls, &mut operators).await?;
    ui.say("2 drydock-operator replicas running, one leads");

    let cluster = live::connect(&live::Target {
        kubeconfig: Some(kubeconfig.clone()),
        context: None,
        namespace: NS.into(),
        config_map: "drydock-config".into(),
    })
    .await?;
    wait_reported(&cluster, &names, from).await?;
    ui.say(&format!("every agent reports {from} booted"));

    // The independent observer starts before the release.
    let pool_of: HashMap<String, (String, usize)> = {
        let nodes: Api<Node> = Api::all(client.clone());
        let list = nodes.list(&ListParams::default()).await?;
        let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
        let mut pools = HashMap::new();
        for n in &list.items {
            let s = drydock_core::k8s::node(n)?;
            let pool = policy.pool_for(&s.labels);
            *sizes.entry(pool.name.clone()).or_default() += 1;
            pools.insert(s.name.clone(), pool.name.clone());
        }
        pools
            .into_iter()
            .map(|(n, p)| {
                let size = sizes.get(&p).copied().unwrap_or(0);
                let limit = policy
                    .pool(&p)
                    .map(|pp| pp.max_unavailable.resolve(size))
                    .unwrap_or(1);
                (n, (p, limit))
            })
            .collect()
    };
    let observed = Arc::new(Mutex::new(Observed::default()));
    let watchers = Watchers(vec![
        watch_nodes(client.clone(), pool_of.clone(), observed.clone()),
        watch_budgets(client.clone(), observed.clone()),
    ]);

    match (&omaha, opts.os) {
        (Some(o), _) => {
            o.set_release("stable", to);
            ui.say(&format!(
                "published Flatcar {to} on the fake Omaha server ({}); update_engine checks every 3 s through drydock's Omaha proxy ({proxy_url})",
                o.url()
            ));
        }
        (None, _) => {
            for m in &mut machines {
                if let Some(stdin) = m.stdin.as_mut() {
                    writeln!(stdin, "publish stable {to}")
                        .with_context(|| format!("publishing on {}'s remote", m.name))?;
                }
            }
            if let Some(g) = &graph {
                g.set_releases("stable", vec![ReleaseSpec::new(from), ReleaseSpec::new(to)]);
            }
            ui.say(&format!(
                "published Fedora CoreOS {to} on the stable stream (the fake Cincinnati graph at {} and the hosts' remote); the agents check every 2 s",
                graph_url.as_deref().unwrap_or("?")
            ));
        }
    }
    let published = Instant::now();
    let header = format!(
        "drydock demo: {} → {to} on {} nodes ({} workers, 1 control-plane); Ctrl-C stops and cleans up",
        from,
        names.len(),
        opts.workers
    );

    let mut chaos = opts.chaos.map(|seed| Chaos::new(seed, published));
    let mut op_down = vec![false; operators.len()];
    let mut op_restarts = 0u32;
    let mut read_failures = 0u32;
    // Nodes drydock is rebooting or verifying, from the last read (NotReady targets).
    let mut rebooting: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let makespan = loop {
        tokio::select! {
            line = boot_rx.recv() => {
                let Some((i, line)) = line else { bail!("every simulated host exited") };
                let m = &mut machines[i];
                // The agent is a process of the host: a power-off ends it, a boot starts it.
                let boot = match parse_host_line(&line)? {
                    HostLine::Shutdown => {
                        m.down = true;
                        if let Some(mut a) = m.agent.take() {
                            a.stop();
                        }
                        if let Some(c) = chaos.as_mut()
                            && m.delay_armed
                        {
                            m.delay_armed = false;
                            signal(m.host.pid(), "STOP")?;
                            c.pending.push((Instant::now() + FREEZE, Pending::Thaw(i)));
                            let name = m.name.clone();
                            c.record(crate::chaos::Fault::DelayReboot, &format!("{name} frozen {} s at power-off", FREEZE.as_secs()), &mut ui);
                        }
                        continue;
                    }
                    HostLine::Boot(b) => b,
                };
                m.down = false;
                if boot > m.boots {
                    if let Some(mut a) = m.agent.take() {
                        a.stop();
                    }
                    m.boots = boot;
                    m.agent = Some(start_agent(bins, m, &kubeconfig, &logs, graph_url.as_deref())?);
                }
            }
            _ = tick.tick() => {
                for (i, op) in operators.iter_mut().enumerate() {
                    if op_down[i] {
                        continue;
                    }
                    if let Some(how) = op.exited() {
                        bail!("drydock-operator-{i} exited ({how}); its log: {}", op.log.display());
                    }
                }
                if let Some(c) = chaos.as_mut() {
                    use crate::chaos::Fault;
                    let now = Instant::now();
                    // Undo and restart what is due.
                    let (due, later): (Vec<_>, Vec<_>) = c.pending.drain(..).partition(|(t, _)| *t <= now);
                    c.pending = later;
                    for (_, p) in due {
                        match p {
                            Pending::Operator(i) => {
                                op_restarts += 1;
                                operators[i] = start_process(&format!("operator-{i}-restart{op_restarts}"), &bins.operator, &op_args[i], &logs)
                                    .context("restarting drydock-operator")?;
                                op_down[i] = false;
                            }
                            Pending::Agent(i) => {
                                let m = &mut machines[i];
                                if m.agent.is_none() && !m.down {
                                    m.agent = Some(start_agent(bins, m, &kubeconfig, &logs, graph_url.as_deref())?);
                                }
                            }
                            Pending::Thaw(i) => signal(machines[i].host.pid(), "CONT")?,
                            Pending::Ready(n) => env.set_not_ready(&n, false).await.with_context(|| format!("letting {n} be Ready"))?,
                        }
                    }
                    // The next fault, when due; a fault without a target yet waits up to 30 s.
                    if let Some(&(at, fault)) = c.queue.front()
                        && at <= now
                    {
                        let overdue = now.duration_since(at) > Duration::from_secs(30);
                        let done = match fault {
                            Fault::KillLeader => {
                                let mut leader = None;
                                for (i, u) in metrics_urls.iter().enumerate() {
                                    if !op_down[i]
                                        && let Ok(text) = scrape(&http, u).await
                                        && text.lines().any(|l| l == "drydock_leader 1")
                                    {
                                        leader = Some(i);
                                    }
                                }
                                match leader {
                                    Some(i) => {
                                        operators[i].stop();
                                        op_down[i] = true;
                                        let back = c.rng.millis(500, 3_000);
                                        c.pending.push((now + back, Pending::Operator(i)));
                                        c.record(fault, &format!("drydock-operator-{i}, back after {} ms", back.as_millis()), &mut ui);
                                        true
                                    }
                                    None => false,
                                }
                            }
                            Fault::KillAgent => {
                                let up: Vec<usize> = (0..machines.len()).filter(|&i| machines[i].agent.is_some() && !machines[i].down).collect();
                                if up.is_empty() {
                                    false
                                } else {
                                    let i = up[c.rng.below(up.len())];
                                    if let Some(mut a) = machines[i].agent.take() {
                                        a.stop();
                                    }
                                    let back = c.rng.millis(1_000, 4_000);
                                    c.pending.push((now + back, Pending::Agent(i)));
                                    let name = machines[i].name.clone();
                                    c.record(fault, &format!("{name}'s agent, back after {} ms", back.as_millis()), &mut ui);
                                    true
                                }
                            }
                            Fault::NodeNotReady => {
                                if rebooting.is_empty() {
                                    false
                                } else {
                                    let n = rebooting[c.rng.below(rebooting.len())].clone();
                                    env.set_not_ready(&n, true).await.with_context(|| format!("holding {n} NotReady"))?;
                                    let back = c.rng.millis(3_000, 8_000);
                                    c.pending.push((now + back, Pending::Ready(n.clone())));
                                    c.record(fault, &format!("{n} for {} ms", back.as_millis()), &mut ui);
                                    true
                                }
                            }
                            Fault::RestartApiServer => {
                                let down = c.rng.millis(1_000, 3_000);
                                c.record(fault, &format!("down {} ms", down.as_millis()), &mut ui);
                                env.restart("kube-apiserver", down).await.context("restarting kube-apiserver")?;
                                true
                            }
                            Fault::DelayReboot => {
                                let fresh: Vec<usize> = (0..machines.len()).filter(|&i| machines[i].boots == 1 && !machines[i].down).collect();
                                if fresh.is_empty() {
                                    false
                                } else {
                                    let i = fresh[c.rng.below(fresh.len())];
                                    machines[i].delay_armed = true;
                                    true
                                }
                            }
                        };
                        if done || overdue {
                            if !done {
                                c.note(fault, "skipped: no target within 30 s", true, &mut ui);
                            }
                            c.queue.pop_front();
                        }
                    }
                }
                let live = match cluster.read().await {
                    Ok(l) => {
                        read_failures = 0;
                        l
                    }
                    Err(e) => {
                        // The API server may be restarting; give it a minute.
                        read_failures += 1;
                        if read_failures > 60 {
                            return Err(e.context("reading the cluster for a minute"));
                        }
                        continue;
                    }
                };
                rebooting = live
                    .snapshot
                    .nodes()
                    .iter()
                    .filter(|n| {
                        let (st, _) = parse_node_state(&n.labels, &n.annotations);
                        matches!(st.operator.phase, Some(Phase::RebootGranted | Phase::Rebooting | Phase::Verifying))
                    })
                    .map(|n| n.name.clone())
                    .collect();
                let now = jiff::Timestamp::now();
                let plan = drydock_core::plan(&live.snapshot, &live.policy, now);
                let s = status::build(&live.snapshot, &live.policy, &plan, now, live.policy_warning);
                ui.show(&s, &header);
                let finished = match &chaos {
                    // A chaos run ends when every fault was injected and undone and
                    // every node is settled: updated, or Held/Failed with a reason.
                    Some(c) => c.finished() && unsettled(&live.snapshot, to).is_empty() && machines.iter().all(|m| !m.down),
                    None => all_updated(&live.snapshot, to) && s.nodes.iter().all(|n| n.done),
                };
                if finished {
                    break published.elapsed();
                }
                if published.elapsed() > opts.timeout {
                    let waiting: Vec<String> = s
                        .nodes
                        .iter()
                        .filter(|n| !n.done)
                        .map(|n| format!("{} {} ({})", n.name, n.phase,
                            n.waiting.as_ref().map(|w| w.1.as_str()).unwrap_or("-")))
                        .collect();
                    bail!("the rollout did not finish within {:?}: {}", opts.timeout, waiting.join("; "));
                }
            }
        }
    };
    drop(watchers);

    let counts = operator_counts(&http, &metrics_urls).await?;
    let live = cluster.read().await?;
    let updated = live
        .snapshot
        .nodes()
        .iter()
        .filter(|n| booted(n) == Some(to.to_string()))
        .count();
    let obs = observed
        .lock()
        .map_err(|_| anyhow!("the observer's lock is poisoned"))?;
    let mut limits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (pool, limit) in pool_of.values() {
        let e = limits.entry(pool.clone()).or_insert((0, *limit));
        e.0 += 1;
    }
    let pools: Vec<serde_json::Value> = limits
        .iter()
        .map(|(p, (size, limit))| {
            json!({"name": p, "nodes": size, "max_unavailable": limit,
                "peak_unavailable": obs.peak.get(p).copied().unwrap_or(0)})
        })
        .collect();
    let reboots: u32 = machines.iter().map(|m| m.boots.saturating_sub(1)).sum();
    let twice: Vec<&str> = machines
        .iter()
        .filter(|m| m.boots > 2)
        .map(|m| m.name.as_str())
        .collect();
    let over_limit = limits
        .iter()
        .any(|(p, (_, limit))| obs.peak.get(p).copied().unwrap_or(0) > *limit);
    // What drydock must never leave behind, faults or not.
    let left_cordoned: Vec<String> = live
        .snapshot
        .nodes()
        .iter()
        .filter(|n| {
            let (st, _) = parse_node_state(&n.labels, &n.annotations);
            n.unschedulable && st.operator.cordoned
        })
        .map(|n| n.name.clone())
        .collect();
    let unsettled = unsettled(&live.snapshot, to);
    let mut violations: Vec<String> = Vec::new();
    for (p, (_, limit)) in &limits {
        let peak = obs.peak.get(p).copied().unwrap_or(0);
        if peak > *limit {
            violations.push(format!(
                "pool {p}: {peak} nodes unavailable at once, limit {limit}"
            ));
        }
    }
    violations.extend(obs.violations.iter().map(|v| format!("PDB {v}")));
    violations.extend(
        twice
            .iter()
            .map(|n| format!("{n} rebooted more than once for one update")),
    );
    violations.extend(
        left_cordoned
            .iter()
            .map(|n| format!("{n} left cordoned by drydock")),
    );
    violations.extend(unsettled.iter().cloned());
    let all_there = chaos.is_some() || updated == names.len();
    let passed = all_there && violations.is_empty() && !over_limit;
    let summary = json!({
        "os": opts.os.name(),
        "from": from,
        "to": to,
        "nodes": names.len(),
        "updated": updated,
        "makespan_seconds": (makespan.as_secs_f64() * 10.0).round() / 10.0,
        "pools": pools,
        "evictions_accepted": counts.evictions_accepted,
        "evictions_refused": counts.evictions_refused,
        "omaha_offers_passed": counts.offers_passed,
        "omaha_offers_withheld": counts.offers_withheld,
        "pdb_violations": obs.violations.len(),
        "pdb_violation_details": obs.violations,
        "pdb_status_updates_seen": obs.pdb_updates,
        "reboots": reboots,
        "rebooted_more_than_once": twice,
        "left_cordoned": left_cordoned,
        "violations": violations,
        "chaos": chaos.as_ref().map(|c| json!({"seed": c.seed, "faults": c.injected})),
        "passed": passed,
    });
    drop(obs);
    print_summary(&summary);
    if let Some(path) = &opts.summary {
        std::fs::write(path, format!("{summary:#}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Stop the fleet before the control plane: agents, operators, hosts, buses.
    for m in &mut machines {
        if let Some(mut a) = m.agent.take() {
            a.stop();
        }
    }
    drop(operators);
    drop(machines);
    drop(env);
    Ok(Summary {
        passed,
        faults: chaos
            .as_ref()
            .map(|c| {
                c.injected
                    .iter()
                    .filter(|f| f["skipped"] != true)
                    .filter_map(|f| f["fault"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        violations,
    })
}

/// Creates drydock's namespace `ns` with the policy ConfigMap `drydock-config` holding
/// `policy_text`, and the workloads' namespace `apps`.
pub(crate) async fn create_namespaces_and_policy(
    client: &kube::Client,
    ns: &str,
    apps: &str,
    policy_text: &str,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for n in [ns, apps] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": n}}))?,
            )
            .await
            .with_context(|| format!("creating namespace {n}"))?;
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "drydock-config"},
            "data": {"config.yaml": policy_text}}))?,
    )
    .await
    .context("creating the drydock-config ConfigMap")?;
    Ok(())
}

/// Aborts the observer's tasks when dropped (also on an early return or Ctrl-C).
struct Watchers(Vec<JoinHandle<()>>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts a simulated host (`drydock-sim host` on its own dbus-daemon) whose reboots take
/// `reboot`; its boot and power-off lines go to `boots`, tagged with `index`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_machine(
    bins: &Bins,
    os: DemoOs,
    name: &str,
    version: &str,
    omaha: Option<String>,
    work: &Path,
    index: usize,
    boots: mpsc::UnboundedSender<(usize, String)>,
    reboot: Duration,
) -> anyhow::Result<Machine> {
    let bus = PrivateBus::start().with_context(|| format!("starting {name}'s dbus-daemon"))?;
    let root = work.join("hosts").join(name);
    let mut args = vec![
        "host".to_string(),
        "--bus".into(),
        bus.address().into(),
        "--os".into(),
        os.name().into(),
        "--version".into(),
        version.into(),
        "--root".into(),
        root.display().to_string(),
        "--machine-id".into(),
        drydock_testenv::machine_id(name),
        "--step-ms".into(),
        "100".into(),
        "--reboot-ms".into(),
        reboot.as_millis().to_string(),
    ];
    if let Some(url) = omaha {
        args.extend(["--omaha".into(), url, "--check-ms".into(), "3000".into()]);
    }
    let mut host = start_piped_process(
        &format!("host-{name}"),
        &bins.sim,
        &args,
        &work.join("logs"),
    )
    .with_context(|| format!("starting {name}'s simulated host"))?;
    let stdout = host
        .take_stdout()
        .ok_or_else(|| anyhow!("{name}'s host has no stdout"))?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if boots.send((index, line)).is_err() {
                return;
            }
        }
    });
    let stdin = host.take_stdin();
    Ok(Machine {
        name: name.to_string(),
        bus,
        root,
        host,
        agent: None,
        stdin,
        boots: 0,
        down: false,
        delay_armed: false,
    })
}

pub(crate) fn start_agent(
    bins: &Bins,
    m: &mut Machine,
    kubeconfig: &Path,
    logs: &Path,
    cincinnati: Option<&str>,
) -> anyhow::Result<Component> {
    if let Some(how) = m.host.exited() {
        bail!(
            "{}'s simulated host exited ({how}); its log: {}",
            m.name,
            m.host.log.display()
        );
    }
    let args = vec![
        "--node-name".to_string(),
        m.name.clone(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--bus-address".into(),
        m.bus.address().into(),
        "--host-root".into(),
        m.root.display().to_string(),
        "--check-interval".into(),
        "2s".into(),
        "--log-format".into(),
        "json".into(),
        "--cincinnati".into(),
        cincinnati.unwrap_or("none").into(),
    ];
    start_process(
        &format!("agent-{}-boot{}", m.name, m.boots),
        &bins.agent,
        &args,
        logs,
    )
    .with_context(|| format!("starting {}'s drydock-agent", m.name))
}

/// What a simulated host printed: a boot (its number), or the start of a power-off.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HostLine {
    Boot(u32),
    Shutdown,
}

pub(crate) fn parse_host_line(line: &str) -> anyhow::Result<HostLine> {
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("a simulated host printed {line:?}, not a boot line"))?;
    if v.get("shutdown").is_some() {
        return Ok(HostLine::Shutdown);
    }
    v["boot"]
        .as_u64()
        .and_then(|b| u32::try_from(b).ok())
        .map(HostLine::Boot)
        .ok_or_else(|| anyhow!("a simulated host's boot line {line:?} has no boot number"))
}

/// A sample Deployment spread over the nodes (softly, so a drain can always reschedule).
fn deployment(name: &str, replicas: u32) -> serde_json::Value {
    let mut d = workload::deployment(APPS, name, replicas);
    d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": name}}}]);
    d
}

/// Waits until one replica reports `drydock_leader 1`.
async fn wait_leader(
    http: &reqwest::Client,
    urls: &[String],
    operators: &mut [Component],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, op) in operators.iter_mut().enumerate() {
            if let Some(how) = op.exited() {
                bail!(
                    "drydock-operator-{i} exited ({how}); its log: {}",
                    op.log.display()
                );
            }
        }
        for u in urls {
            if let Ok(text) = scrape(http, u).await
                && text.lines().any(|l| l == "drydock_leader 1")
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no drydock-operator replica became leader within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let r = http.get(url).send().await?.error_for_status()?;
    Ok(r.text().await?)
}

/// Counters summed over both replicas.
#[derive(Debug, Default)]
struct OperatorCounts {
    evictions_accepted: u64,
    evictions_refused: u64,
    offers_passed: u64,
    offers_withheld: u64,
}

/// Reads both replicas' `/metrics`.
async fn operator_counts(
    http: &reqwest::Client,
    urls: &[String],
) -> anyhow::Result<OperatorCounts> {
    let mut c = OperatorCounts::default();
    for u in urls {
        let text = scrape(http, u)
            .await
            .with_context(|| format!("reading the operator's metrics at {u}"))?;
        for line in text.lines() {
            let value: u64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v as u64)
                .unwrap_or(0);
            if let Some(rest) = line.strip_prefix("drydock_evictions_total{") {
                if rest.contains("outcome=\"accepted\"") {
                    c.evictions_accepted += value;
                } else if rest.contains("outcome=\"blocked\"") {
                    c.evictions_refused += value;
                }
            } else if let Some(rest) = line.strip_prefix("drydock_omaha_requests_total{") {
                if rest.starts_with("outcome=\"offered\"") {
                    c.offers_passed += value;
                } else if rest.starts_with("outcome=\"withheld-") {
                    c.offers_withheld += value;
                }
            }
        }
    }
    Ok(c)
}

fn booted(n: &drydock_core::snapshot::NodeSnapshot) -> Option<String> {
    let (state, _) = parse_node_state(&n.labels, &n.annotations);
    state.agent.booted_version.map(|v| v.to_string())
}

/// Nodes that are neither updated (on `to`, Done or Idle, uncordoned) nor Held or Failed
/// with a reason, each with what it shows instead.
fn unsettled(s: &drydock_core::snapshot::Snapshot, to: &str) -> Vec<String> {
    s.nodes()
        .iter()
        .filter_map(|n| {
            let (st, _) = parse_node_state(&n.labels, &n.annotations);
            let phase = st.operator.phase();
            let updated = booted(n).as_deref() == Some(to)
                && matches!(phase, Phase::Done | Phase::Idle)
                && !n.unschedulable;
            let stopped_with_reason = matches!(phase, Phase::Held | Phase::Failed)
                && st.operator.reason.as_deref().is_some_and(|r| !r.is_empty());
            (!updated && !stopped_with_reason).then(|| {
                format!(
                    "{} is neither updated nor Held/Failed with a reason: {phase}, booted {}",
                    n.name,
                    booted(n).unwrap_or_else(|| "?".into())
                )
            })
        })
        .collect()
}

fn all_updated(s: &drydock_core::snapshot::Snapshot, to: &str) -> bool {
    s.nodes()
        .iter()
        .all(|n| booted(n).as_deref() == Some(to) && !n.unschedulable)
}

async fn wait_reported(
    cluster: &live::Cluster,
    names: &[String],
    from: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = cluster.read().await?;
        let reported = live
            .snapshot
            .nodes()
            .iter()
            .filter(|n| booted(n).as_deref() == Some(from))
            .count();
        if reported == names.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {reported} of {} agents reported {from} within 60 s",
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the observer counts a node unavailable: cordoned, NotReady, or disrupted.
pub(crate) fn unavailable(n: &Node) -> bool {
    let Ok(s) = drydock_core::k8s::node(n) else {
        return false;
    };
    let (state, _) = parse_node_state(&s.labels, &s.annotations);
    s.unschedulable || !s.ready || state.operator.phase.is_some_and(Phase::is_disrupting)
}

fn watch_nodes(
    client: kube::Client,
    pool_of: HashMap<String, (String, usize)>,
    observed: Arc<Mutex<Observed>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Node> = Api::all(client);
        let mut down: HashMap<String, bool> = HashMap::new();
        let mut stream = std::pin::pin!(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(ev) = futures_util::StreamExt::next(&mut stream).await {
            let Ok(n) = ev else { continue };
            let Some(name) = n.metadata.name.clone() else {
                continue;
            };
            down.insert(name, unavailable(&n));
            let mut per_pool: BTreeMap<&str, usize> = BTreeMap::new();
            for (node, is_down) in &down {
                if let (true, Some((pool, _))) = (*is_down, pool_of.get(node)) {
                    *per_pool.entry(pool.as_str()).or_default() += 1;
                }
            }
            if let Ok(mut o) = observed.lock() {
                for (pool, count) in per_pool {
                    let peak = o.peak.entry(pool.to_string()).or_default();
                    *peak = (*peak).max(count);
                }
            }
        }
    })
}

fn watch_budgets(client: kube::Client, observed: Arc<Mutex<Observed>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<PodDisruptionBudget> = Api::namespaced(client, APPS);
        let mut stream = std::pin::pin!(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(ev) = futures_util::StreamExt::next(&mut stream).await {
            let Ok(b) = ev else { continue };
            let Some(st) = b.status.as_ref() else {
                continue;
            };
            let current =
                st.observed_generation.is_some() && st.observed_generation == b.metadata.generation;
            if let Ok(mut o) = observed.lock() {
                o.pdb_updates += 1;
                let (healthy, desired) = (
                    st.current_healthy.unwrap_or(0),
                    st.desired_healthy.unwrap_or(0),
                );
                if current && healthy < desired {
                    o.violations.push(format!(
                        "{}: {} healthy pods, {} required",
                        b.metadata.name.as_deref().unwrap_or("?"),
                        healthy,
                        desired
                    ));
                }
            }
        }
    })
}

fn print_summary(s: &serde_json::Value) {
    let pools = s["pools"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{} {} of {} (limit {})",
                        p["name"].as_str().unwrap_or("?"),
                        p["peak_unavailable"],
                        p["nodes"],
                        p["max_unavailable"]
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!();
    println!(
        "drydock demo summary ({} {} → {})",
        s["os"].as_str().unwrap_or("?"),
        s["from"].as_str().unwrap_or("?"),
        s["to"].as_str().unwrap_or("?")
    );
    println!(
        "  makespan             {:.1} s (release published → last node verified and uncordoned)",
        s["makespan_seconds"].as_f64().unwrap_or(0.0)
    );
    println!("  nodes updated        {}/{}", s["updated"], s["nodes"]);
    println!("  most unavailable     {pools}");
    println!(
        "  evictions            {} accepted, {} refused by PodDisruptionBudgets (retried)",
        s["evictions_accepted"], s["evictions_refused"]
    );
    if s["os"] == "flatcar" {
        println!(
            "  update checks        {} offers passed on, {} withheld until the rollout reached the node",
            s["omaha_offers_passed"], s["omaha_offers_withheld"]
        );
    }
    println!(
        "  PDB violations       {} (from {} budget status updates watched)",
        s["pdb_violations"], s["pdb_status_updates_seen"]
    );
    println!(
        "  reboots              {} (rebooted twice: {})",
        s["reboots"],
        s["rebooted_more_than_once"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| a
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_else(|| "none".into())
    );
    if let Some(faults) = s["chaos"]["faults"].as_array() {
        let names: Vec<String> = faults
            .iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f["fault"].as_str().unwrap_or("?"),
                    if f["skipped"] == true {
                        " (skipped)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        println!(
            "  chaos                seed {}: {}",
            s["chaos"]["seed"],
            names.join(", ")
        );
    }
    if let Some(v) = s["violations"].as_array()
        && !v.is_empty()
    {
        for line in v {
            println!("  VIOLATION            {}", line.as_str().unwrap_or("?"));
        }
    }
    println!(
        "  result               {}",
        if s["passed"] == true {
            "PASSED"
        } else {
            "FAILED"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_policy_is_valid_and_has_both_pools() {
        let p = Policy::from_yaml(POLICY).expect("valid");
        assert_eq!(p.pool("workers").map(|w| w.canary), Some(1));
        assert!(p.pool("control-plane").is_some());
    }

    #[test]
    fn the_chaos_policy_is_the_demos_with_a_short_ready_timeout_and_no_halt() {
        assert!(POLICY.contains(HEALTH), "the block chaos_policy replaces");
        let demo = Policy::from_yaml(POLICY).expect("valid");
        let chaos = Policy::from_yaml(&chaos_policy()).expect("valid");
        let workers = chaos.pool("workers").expect("workers");
        assert_eq!(workers.health.ready_timeout, Duration::from_secs(20));
        assert_eq!(workers.health.halt_after_failures, 10);
        assert!(FREEZE > workers.health.ready_timeout);
        assert_eq!(workers.canary, demo.pool("workers").map_or(0, |w| w.canary));
        assert_eq!(workers.health.bake, Duration::from_secs(5));
    }

    #[test]
    fn boot_lines_are_read_and_garbage_is_named() {
        assert_eq!(
            parse_host_line(r#"{"boot":2,"slot":"b","version":"4230.0.0","rolled_back":false}"#)
                .expect("boot"),
            HostLine::Boot(2)
        );
        assert_eq!(
            parse_host_line(r#"{"shutdown":1}"#).expect("shutdown"),
            HostLine::Shutdown
        );
        let e = parse_host_line("hello").expect_err("not JSON");
        assert!(e.to_string().contains("\"hello\""), "{e}");
        let e = parse_host_line(r#"{"slot":"a"}"#).expect_err("no number");
        assert!(e.to_string().contains("no boot number"), "{e}");
    }
}

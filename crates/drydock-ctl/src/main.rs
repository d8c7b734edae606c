//! `drydockctl`: check a drydock policy, and ask the planner what would happen and why.
//!
//! Exit status: 0 success; 1 the input was read but is invalid (a policy with errors);
//! 2 an input could not be read at all (missing file, not YAML/JSON, not a `v1` List).

mod bench;
mod chaos;
mod demo;
mod dump;
mod ignition;
mod live;
mod policy_edit;
mod render;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use drydock_core::Policy;

/// drydock's command-line tool.
#[derive(Parser, Debug)]
#[command(
    name = "drydockctl",
    version,
    about = "Operate drydock: check policies, explain rollout plans"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The kubeconfig (default: $KUBECONFIG, then ~/.kube/config, as kubectl).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// drydock's namespace.
    #[arg(
        long,
        global = true,
        env = "DRYDOCK_NAMESPACE",
        default_value = "drydock-system"
    )]
    namespace: String,
    /// The policy ConfigMap.
    #[arg(long, global = true, default_value = "drydock-config")]
    config_map: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with the drydock policy (the `config.yaml` of the drydock-config ConfigMap).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Every node and pool of the live cluster: versions, phase, for how long, and why it waits.
    Status(StatusArgs),
    /// Run the planner: what happens next, and why every other node waits. On the live
    /// cluster, or on a dump with --cluster.
    Plan(PlanArgs),
    /// Stop new disruptions: everywhere, or in one pool (edits the policy ConfigMap).
    Pause(PoolArgs),
    /// Let new disruptions start again: everywhere, or in one pool.
    Resume(PoolArgs),
    /// Keep drydock away from a node (it finishes nothing new there) until released.
    Hold(HoldArgs),
    /// Undo a hold, and let a Held or Failed node go back to the rollout.
    Release(ReleaseArgs),
    /// Watch a simulated fleet roll: a local control plane with KWOK nodes, a simulated
    /// host and a drydock-agent per node, workloads behind budgets, two operator
    /// replicas, and a new OS version published upstream; then a summary. Ctrl-C stops
    /// it and removes everything it started.
    Demo(DemoArgs),
    /// Measure rollouts of large simulated fleets on a local control plane: makespan
    /// against its lower bound, reaction latency, API requests per node update by
    /// component, the operator's memory and CPU, the agent's memory; a table, JSON and a
    /// phase plot per run in the results directory.
    Bench(BenchArgs),
    /// Ignition configs for drydock-managed nodes.
    Ignition {
        #[command(subcommand)]
        command: IgnitionCommand,
    },
}

#[derive(Subcommand, Debug)]
enum IgnitionCommand {
    /// Write the Ignition config of a worker: Flatcar (locksmithd masked, update.conf with
    /// GROUP and SERVER, a kubelet join placeholder) or Fedora CoreOS (Zincati's
    /// fleet_lock strategy pointing at drydock).
    Render(IgnitionArgs),
}

#[derive(clap::Args, Debug)]
struct IgnitionArgs {
    /// The node's OS.
    #[arg(long, value_enum)]
    os: ignition::Os,
    /// Flatcar: the channel (update.conf GROUP); default stable.
    #[arg(long)]
    channel: Option<String>,
    /// Flatcar: drydock's Omaha endpoint (update.conf SERVER); FCOS: the operator's
    /// FleetLock base URL (required).
    #[arg(long)]
    server: Option<String>,
    /// Ignition spec version.
    #[arg(long, value_enum, default_value = "3.4.0")]
    spec: ignition::Spec,
    /// Write here instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a policy: a bare config.yaml or a whole ConfigMap manifest. Exit 0 valid,
    /// 1 invalid (every error printed with its path), 2 unreadable.
    Check {
        /// The file to check (`-` for standard input).
        file: PathBuf,
    },
}

/// Output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// Aligned columns for people.
    Table,
    /// The plan as JSON (see docs/plan-json.md).
    Json,
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// Keep showing it, redrawn on every change (Ctrl-C stops).
    #[arg(short, long)]
    watch: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Worker nodes (a control-plane node comes on top).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// The OS of the simulated fleet.
    #[arg(long, value_enum, default_value = "flatcar")]
    os: demo::DemoOs,
    /// Give up when the rollout has not finished this long after the release (`10m`).
    #[arg(long, default_value = "10m", value_parser = parse_timeout)]
    timeout: std::time::Duration,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Where drydock-agent, drydock-operator and drydock-sim are (default: next to drydockctl).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the work directory (every process's log, the hosts' files) afterwards.
    #[arg(long)]
    keep: bool,
    /// Inject faults during the rollout, drawn from this seed: kill the leading operator,
    /// kill an agent, hold a rebooting node NotReady, restart the API server, delay a
    /// reboot past its timeout. The same seed injects the same faults.
    #[arg(long, value_name = "SEED")]
    chaos: Option<u64>,
    /// With --chaos: this many runs, seeds SEED, SEED+1, …; prints the tally at the end.
    #[arg(long, default_value_t = 1, requires = "chaos")]
    runs: u64,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Fleet sizes to run, e.g. `100,1000,5000`.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    nodes: Vec<usize>,
    /// Drain and reboot time spreads to run, e.g. `uniform,mixed`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "uniform")]
    profile: Vec<bench::Profile>,
    /// Reboot time (uniform), or the centre of the mixed spread.
    #[arg(long, default_value = "20s", value_parser = parse_timeout)]
    reboot: std::time::Duration,
    /// Pods' termination grace period (uniform), or the centre of the mixed spread.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    grace: std::time::Duration,
    /// The pool's maxUnavailable in percent.
    #[arg(long, default_value_t = 20)]
    max_unavailable: u32,
    /// Pods per node.
    #[arg(long, default_value_t = 1.0)]
    pods_per_node: f64,
    /// Seed of the mixed reboot times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The controller-manager's and scheduler's client QPS and burst, as a large cluster
    /// sets them (Kubernetes' 5,000-node scalability jobs: 100); 0 keeps their defaults
    /// (20/30 and 50/100).
    #[arg(long, default_value_t = 100)]
    plane_qps: u32,
    /// How many pod stages KWOK plays at once: it stands in for every node's kubelet,
    /// each of which deletes its own pods; 0 keeps KWOK's default (4).
    #[arg(long, default_value_t = 64)]
    kwok_parallelism: u32,
    /// How many node stages and node Lease renewals KWOK plays at once; 0 keeps KWOK's
    /// default (4).
    #[arg(long, default_value_t = 64)]
    kwok_node_parallelism: u32,
    /// The node Leases' duration in seconds (renewed a quarter of it apart) and the
    /// controller-manager's node grace period; a kubelet's is 40.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(10..=3600))]
    node_lease_seconds: u32,
    /// Keep each run's work directory (every process's log, the audit log) afterwards.
    #[arg(long)]
    keep: bool,
    /// Give up on a rollout that takes longer.
    #[arg(long, default_value = "60m", value_parser = parse_timeout)]
    timeout: std::time::Duration,
    /// Where drydock-agent, drydock-operator and drydock-sim are (default: next to drydockctl).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Results directory: a JSON file and an SVG plot per run, summary.md and summary.json.
    #[arg(long, default_value = "bench-results")]
    results: PathBuf,
}

fn bench_cmd(args: &BenchArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drydockctl: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut results = Vec::new();
    let mut failed = false;
    for &profile in &args.profile {
        for &nodes in &args.nodes {
            let opts = bench::Options {
                nodes,
                profile,
                reboot: args.reboot,
                grace: args.grace,
                max_unavailable: args.max_unavailable,
                pods_per_node: args.pods_per_node,
                seed: args.seed,
                plane_qps: (args.plane_qps > 0).then_some(args.plane_qps),
                kwok_parallelism: (args.kwok_parallelism > 0).then_some(args.kwok_parallelism),
                kwok_node_parallelism: (args.kwok_node_parallelism > 0)
                    .then_some(args.kwok_node_parallelism),
                node_lease_seconds: (args.node_lease_seconds != 40)
                    .then_some(args.node_lease_seconds),
                keep: args.keep,
                timeout: args.timeout,
                bin_dir: args.bin_dir.clone(),
                results: args.results.clone(),
            };
            let outcome = rt.block_on(async {
                tokio::select! {
                    r = bench::run(&opts) => Some(r),
                    _ = tokio::signal::ctrl_c() => None,
                }
            });
            match outcome {
                None => {
                    eprintln!("drydockctl bench: interrupted; everything it started is stopped");
                    return ExitCode::from(130);
                }
                Some(Ok(r)) => results.push(r),
                Some(Err(e)) => {
                    eprintln!("drydockctl bench {}: {e:#}", opts.label());
                    failed = true;
                }
            }
        }
    }
    // The summary covers every run in the directory, this invocation's and earlier ones'.
    let all = bench::collect(&args.results).unwrap_or(results);
    let table = bench::table(&all);
    println!("\n{table}");
    let written = std::fs::write(args.results.join("summary.md"), &table).and_then(|()| {
        std::fs::write(
            args.results.join("summary.json"),
            serde_json::to_string_pretty(&all).unwrap_or_default(),
        )
    });
    if let Err(e) = written {
        eprintln!(
            "drydockctl bench: writing the summary in {}: {e}",
            args.results.display()
        );
        return ExitCode::from(2);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    drydock_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
struct PoolArgs {
    /// Only this pool.
    #[arg(long)]
    pool: Option<String>,
}

#[derive(clap::Args, Debug)]
struct HoldArgs {
    /// The node.
    node: String,
    /// Why (shown in status and Events).
    #[arg(long, default_value = "held by a person with drydockctl")]
    reason: String,
}

#[derive(clap::Args, Debug)]
struct ReleaseArgs {
    /// The node.
    node: String,
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// Output of `kubectl get nodes,pods,poddisruptionbudgets -A -o json` (`-` for stdin);
    /// without it, the live cluster.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// The policy: config.yaml or the ConfigMap manifest. Without it, the cluster's
    /// policy (live) or the default policy (with --cluster).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The instant to plan for (RFC 3339, like 2026-11-28T01:30:00Z); default: now.
    #[arg(long)]
    now: Option<jiff::Timestamp>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// How a command ended, mapped to the documented exit statuses.
enum Failure {
    Invalid(String),
    Unreadable(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Unreadable(e)
    }
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn config_check(file: &Path) -> Result<(), Failure> {
    let text = read_input(file)?;
    match Policy::from_document(&text) {
        Ok(p) => {
            let pools: Vec<&str> = p.all_pools().map(|p| p.name.as_str()).collect();
            println!(
                "{}: valid ({} pool(s): {})",
                file.display(),
                pools.len(),
                pools.join(", ")
            );
            Ok(())
        }
        Err(errors) => {
            let mut out = format!("{}: {} error(s)\n", file.display(), errors.0.len());
            for e in &errors.0 {
                out.push_str(&format!("  {e}\n"));
            }
            Err(Failure::Invalid(out))
        }
    }
}

fn policy_file(path: &Path) -> Result<Policy, Failure> {
    let text = read_input(path)?;
    Policy::from_document(&text).map_err(|errors| {
        let mut out = format!(
            "{}: the policy is invalid, {} error(s)\n",
            path.display(),
            errors.0.len()
        );
        for e in &errors.0 {
            out.push_str(&format!("  {e}\n"));
        }
        Failure::Invalid(out)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Unreadable(anyhow::anyhow!("starting the runtime: {e}")))
}

fn target(cli: &Cli) -> live::Target {
    live::Target {
        kubeconfig: cli.kubeconfig.clone(),
        context: cli.context.clone(),
        namespace: cli.namespace.clone(),
        config_map: cli.config_map.clone(),
    }
}

fn plan_live(cli: &Cli, args: &PlanArgs) -> Result<(), Failure> {
    let override_policy = args.config.as_deref().map(policy_file).transpose()?;
    runtime()?.block_on(async {
        let cluster = live::connect(&target(cli)).await?;
        let live = cluster.read().await?;
        if let (None, Some(w)) = (&override_policy, &live.policy_warning) {
            eprintln!("warning: {w}");
        }
        let policy = override_policy.unwrap_or(live.policy);
        let now = args.now.unwrap_or_else(jiff::Timestamp::now);
        let plan = drydock_core::plan(&live.snapshot, &policy, now);
        print!(
            "{}",
            match args.output {
                Output::Table => render::table(&plan),
                Output::Json => render::json(&plan),
            }
        );
        Ok(())
    })
}

fn plan(cli: &Cli, args: &PlanArgs) -> Result<(), Failure> {
    let Some(cluster_file) = &args.cluster else {
        return plan_live(cli, args);
    };
    let policy = match &args.config {
        None => Policy::default(),
        Some(path) => policy_file(path)?,
    };
    let text = read_input(cluster_file)?;
    let snapshot = dump::snapshot_from_list(&text)
        .with_context(|| format!("reading the cluster dump {}", cluster_file.display()))?;
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    let plan = drydock_core::plan(&snapshot, &policy, now);
    let out = match args.output {
        Output::Table => render::table(&plan),
        Output::Json => render::json(&plan),
    };
    print!("{out}");
    Ok(())
}

fn ignition_render(args: &IgnitionArgs) -> Result<(), Failure> {
    let config = ignition::render(&ignition::Options {
        os: args.os,
        channel: args.channel.clone(),
        server: args.server.clone(),
        spec: args.spec,
    })
    .map_err(anyhow::Error::from)?;
    let mut text = serde_json::to_string_pretty(&config).context("encoding the config")?;
    text.push('\n');
    match &args.output {
        None => print!("{text}"),
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
    }
    Ok(())
}

async fn status_once(cluster: &live::Cluster, args: &StatusArgs) -> anyhow::Result<String> {
    let live = cluster.read().await?;
    let now = jiff::Timestamp::now();
    let plan = drydock_core::plan(&live.snapshot, &live.policy, now);
    let s = status::build(
        &live.snapshot,
        &live.policy,
        &plan,
        now,
        live.policy_warning,
    );
    let color = args.output == Output::Table
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    Ok(match args.output {
        Output::Table => status::table(&s, color),
        Output::Json => status::json(&s),
    })
}

fn status_cmd(cli: &Cli, args: &StatusArgs) -> Result<(), Failure> {
    runtime()?.block_on(async {
        let cluster = live::connect(&target(cli)).await?;
        if !args.watch {
            print!("{}", status_once(&cluster, args).await?);
            return Ok(());
        }
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(cluster.client.clone());
        let mut changes = std::pin::pin!(kube::runtime::watcher(
            nodes,
            kube::runtime::watcher::Config::default()
        ));
        loop {
            let text = status_once(&cluster, args).await?;
            if tty {
                // Home and clear, then the new picture.
                print!("\x1b[H\x1b[2J{text}");
            } else {
                println!("--- {}", jiff::Timestamp::now());
                print!("{text}");
            }
            std::io::Write::flush(&mut std::io::stdout()).context("writing")?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                // Redraw on a node change (debounced), or every 5 s for the ages.
                _ = futures_util::StreamExt::next(&mut changes) => {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            }
        }
    })
}

fn pause_cmd(cli: &Cli, args: &PoolArgs, paused: bool) -> Result<(), Failure> {
    runtime()?.block_on(async {
        let cluster = live::connect(&target(cli)).await?;
        let cm = cluster.config_map().await?;
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(live::CONFIG_KEY))
            .cloned()
            .unwrap_or_default();
        let edited = policy_edit::set_paused(&text, args.pool.as_deref(), paused)
            .map_err(anyhow::Error::from)?;
        let verb = if paused { "paused" } else { "resumed" };
        if edited.text == text {
            println!("nothing to change");
        } else {
            cluster.write_policy(&cm, &edited.text).await?;
        }
        let scope = args
            .pool
            .as_ref()
            .map_or_else(|| "everywhere".to_string(), |p| format!("pool {p}"));
        println!("{verb} {scope} (ConfigMap {}/{})", cli.namespace, cli.config_map);
        for (pool, before, after) in &edited.pools {
            let word = |p: bool| if p { "paused" } else { "running" };
            if before == after {
                println!("  {pool}: {}", word(*after));
            } else {
                println!("  {pool}: {} -> {}", word(*before), word(*after));
            }
        }
        if !paused {
            let still: Vec<&str> = edited
                .pools
                .iter()
                .filter(|(_, _, after)| *after)
                .map(|(p, _, _)| p.as_str())
                .collect();
            if !still.is_empty() {
                println!(
                    "still paused: {} (a pool's own `paused: true` needs `drydockctl resume --pool NAME`; a global pause needs `drydockctl resume`)",
                    still.join(", ")
                );
            }
        }
        Ok(())
    })
}

fn hold_cmd(cli: &Cli, args: &HoldArgs) -> Result<(), Failure> {
    if args.reason.trim().is_empty() || args.reason.len() > drydock_core::protocol::MAX_TEXT_LEN {
        return Err(Failure::Unreadable(anyhow::anyhow!(
            "--reason must be 1-{} characters",
            drydock_core::protocol::MAX_TEXT_LEN
        )));
    }
    runtime()?.block_on(async {
        let cluster = live::connect(&target(cli)).await?;
        let node = cluster.node(&args.node).await?;
        let annotations = node.metadata.annotations.unwrap_or_default();
        let before = annotations.get(drydock_core::protocol::keys::HOLD);
        if before == Some(&args.reason) {
            println!("node {}: already held ({})", args.node, args.reason);
            return Ok(());
        }
        cluster
            .annotate(&args.node, &[(drydock_core::protocol::keys::HOLD, Some(&args.reason))])
            .await?;
        let phase = node
            .metadata
            .labels
            .unwrap_or_default()
            .get(drydock_core::protocol::keys::PHASE)
            .cloned()
            .unwrap_or_else(|| "Idle".into());
        match before {
            Some(old) => println!("node {}: hold reason changed from {old:?} to {:?}", args.node, args.reason),
            None => println!("node {}: held ({:?}); it was {phase}. drydock starts nothing new on it; a drain in progress stops and drydock uncordons it (a reboot already granted still completes).", args.node, args.reason),
        }
        Ok(())
    })
}

fn release_cmd(cli: &Cli, args: &ReleaseArgs) -> Result<(), Failure> {
    runtime()?.block_on(async {
        let cluster = live::connect(&target(cli)).await?;
        let node = cluster.node(&args.node).await?;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let (state, _) = drydock_core::protocol::parse_node_state(&labels, &annotations);
        let phase = state
            .operator
            .phase
            .unwrap_or(drydock_core::protocol::Phase::Idle);
        let mut changes: Vec<(&str, Option<String>)> = Vec::new();
        let mut said = Vec::new();
        if let Some(h) = annotations.get(drydock_core::protocol::keys::HOLD) {
            changes.push((drydock_core::protocol::keys::HOLD, None));
            said.push(format!("hold {h:?} removed"));
        }
        if matches!(
            phase,
            drydock_core::protocol::Phase::Held | drydock_core::protocol::Phase::Failed
        ) {
            let since = annotations
                .get(drydock_core::protocol::keys::PHASE_SINCE)
                .cloned()
                .unwrap_or_default();
            if annotations.get(drydock_core::protocol::keys::RELEASE) == Some(&since) {
                said.push(format!(
                    "its {phase} episode since {since} was already released"
                ));
            } else {
                changes.push((drydock_core::protocol::keys::RELEASE, Some(since.clone())));
                said.push(format!(
                    "released from {phase} (episode since {since}; reason: {})",
                    state.operator.reason.clone().unwrap_or_default()
                ));
            }
        }
        if changes.is_empty() {
            if said.is_empty() {
                println!(
                    "node {}: nothing to release (not held; phase {phase})",
                    args.node
                );
            } else {
                println!("node {}: {}", args.node, said.join("; "));
            }
            return Ok(());
        }
        let refs: Vec<(&str, Option<&str>)> =
            changes.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        cluster.annotate(&args.node, &refs).await?;
        println!("node {}: {}", args.node, said.join("; "));
        Ok(())
    })
}

/// Runs the demo (or a series of chaos runs); Ctrl-C drops it, which stops every process
/// it started.
fn demo_cmd(args: &DemoArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(_) => {
            eprintln!("drydockctl: cannot start the runtime");
            return ExitCode::from(2);
        }
    };
    let runs = if args.chaos.is_some() {
        args.runs.max(1)
    } else {
        1
    };
    let mut tally: std::collections::BTreeMap<String, u64> = Default::default();
    let mut failed: Vec<String> = Vec::new();
    let mut violations = 0usize;
    for run in 0..runs {
        let seed = args.chaos.map(|s| s.wrapping_add(run));
        let summary_path = match (&args.summary, seed) {
            (Some(p), Some(seed)) if runs > 1 => {
                Some(p.with_extension(format!("seed-{seed}.json")))
            }
            (p, _) => p.clone(),
        };
        let opts = demo::Options {
            workers: args.nodes,
            os: args.os,
            timeout: args.timeout,
            summary: summary_path,
            bin_dir: args.bin_dir.clone(),
            keep: args.keep,
            chaos: seed,
        };
        let outcome = rt.block_on(async {
            tokio::select! {
                r = demo::run(opts) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        match outcome {
            None => {
                eprintln!("drydockctl demo: interrupted; everything it started is stopped");
                return ExitCode::from(130);
            }
            Some(Ok(s)) => {
                for f in &s.faults {
                    *tally.entry(f.clone()).or_default() += 1;
                }
                violations += s.violations.len();
                if !s.passed {
                    failed.push(seed.map_or_else(|| "the demo".into(), |x| format!("seed {x}")));
                }
            }
            Some(Err(e)) => {
                eprintln!("drydockctl demo: {e:#}");
                if runs == 1 {
                    return ExitCode::from(2);
                }
                failed.push(format!("seed {} (could not run: {e:#})", seed.unwrap_or(0)));
            }
        }
    }
    if let Some(first) = args.chaos {
        let report = serde_json::json!({
            "runs": runs,
            "seeds": format!("{first}..={}", first.wrapping_add(runs - 1)),
            "faults_injected": tally.values().sum::<u64>(),
            "faults_by_kind": tally,
            "violations": violations,
            "failed": failed,
        });
        println!("\nchaos: {report:#}");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(file),
        Command::Status(args) => status_cmd(&cli, args),
        Command::Plan(args) => plan(&cli, args),
        Command::Pause(args) => pause_cmd(&cli, args, true),
        Command::Resume(args) => pause_cmd(&cli, args, false),
        Command::Hold(args) => hold_cmd(&cli, args),
        Command::Release(args) => release_cmd(&cli, args),
        Command::Ignition {
            command: IgnitionCommand::Render(args),
        } => ignition_render(args),
        Command::Demo(args) => return demo_cmd(args),
        Command::Bench(args) => return bench_cmd(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(text)) => {
            eprint!("{text}");
            ExitCode::from(1)
        }
        Err(Failure::Unreadable(e)) => {
            eprintln!("drydockctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

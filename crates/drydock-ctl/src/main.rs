//! `drydockctl`: check a drydock policy, and ask the planner what would happen and why.
//!
//! Exit status: 0 success; 1 the input was read but is invalid (a policy with errors);
//! 2 an input could not be read at all (missing file, not YAML/JSON, not a `v1` List).

mod dump;
mod ignition;
mod render;

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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with the drydock policy (the `config.yaml` of the drydock-config ConfigMap).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the planner on a cluster dump: what happens next, and why every other node waits.
    Plan(PlanArgs),
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
struct PlanArgs {
    /// Output of `kubectl get nodes,pods,poddisruptionbudgets -A -o json` (`-` for stdin).
    #[arg(long)]
    cluster: PathBuf,
    /// The policy: config.yaml or the ConfigMap manifest. Without it, the default policy.
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

fn plan(args: &PlanArgs) -> Result<(), Failure> {
    let policy = match &args.config {
        None => Policy::default(),
        Some(path) => {
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
            })?
        }
    };
    let text = read_input(&args.cluster)?;
    let snapshot = dump::snapshot_from_list(&text)
        .with_context(|| format!("reading the cluster dump {}", args.cluster.display()))?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(file),
        Command::Plan(args) => plan(args),
        Command::Ignition {
            command: IgnitionCommand::Render(args),
        } => ignition_render(args),
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

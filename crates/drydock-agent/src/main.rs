//! The `drydock-agent` binary: flags, logging, connections; everything else is
//! `drydock_agent::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

/// drydock's node agent.
#[derive(Parser, Debug)]
#[command(name = "drydock-agent", version)]
struct Args {
    /// This node's name (from the downward API).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// A kubeconfig file; default: in-cluster configuration, then the usual kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// D-Bus address of the system bus (default: the system bus).
    #[arg(long, env = "DRYDOCK_BUS_ADDRESS")]
    bus_address: Option<String>,
    /// Where the host's files are mounted.
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// CoreOS: how often to check for a newer version on the node's stream (`1h`, `30m`).
    #[arg(long, default_value = "1h", value_parser = parse_interval)]
    check_interval: std::time::Duration,
    /// CoreOS: the Cincinnati server to take updates from (its base URL), or `none` to
    /// stage the head of the stream's ref from rpm-ostree's remote.
    #[arg(long, default_value = drydock_agent::cincinnati::FEDORA_COREOS)]
    cincinnati: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = drydock_core::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?} is shorter than 1s"));
    }
    Ok(d)
}

async fn connect(args: &Args) -> anyhow::Result<drydock_agent::Config> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .context("loading the kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster configuration and no kubeconfig")?,
    };
    let mut config = config;
    // Named in the API server's audit log and request logs.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(drydock_agent::USER_AGENT),
    ));
    let client = kube::Client::try_from(config).context("building the API client")?;
    let bus = match &args.bus_address {
        Some(a) => {
            zbus::connection::Builder::address(a.as_str())?
                .build()
                .await
        }
        None => zbus::Connection::system().await,
    }
    .context("connecting to the system D-Bus")?;
    Ok(drydock_agent::Config {
        node_name: args.node_name.clone(),
        client,
        bus,
        host_root: args.host_root.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        check_interval: args.check_interval,
        cincinnati: (args.cincinnati != "none").then(|| args.cincinnati.clone()),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drydock-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        let config = connect(&args).await?;
        drydock_agent::run(config)
            .await
            .context("the agent stopped")
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `drydock-operator` binary: flags, logging, the API client; everything else is
//! `drydock_operator::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use drydock_operator::leader::LeaseConfig;

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    drydock_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_upstream(s: &str) -> Result<String, String> {
    if s == "none" {
        return Ok(s.into());
    }
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("{s:?} is not an http:// or https:// URL (or `none`)"))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{s:?} has no host, or has spaces or control characters"
        ));
    }
    Ok(s.into())
}

/// drydock's operator.
#[derive(Parser, Debug)]
#[command(name = "drydock-operator", version)]
struct Args {
    /// The operator's namespace (Lease, ConfigMap).
    #[arg(long, env = "POD_NAMESPACE", default_value = "drydock-system")]
    namespace: String,
    /// This replica's identity in the election (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: String,
    /// The policy ConfigMap.
    #[arg(long, default_value = "drydock-config")]
    config_map: String,
    /// The Lease.
    #[arg(long, default_value = "drydock-operator")]
    lease_name: String,
    /// How long a lease lasts after its last renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// A leader that could not renew for this long stops acting.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often to renew or try to acquire.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// Re-plan this often while a drain waits for pods to go.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drain_poll: Duration,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The Omaha server the proxy at /v1/update/ asks (Nebraska, or the public Flatcar
    /// server); `none` turns the proxy off.
    #[arg(long, default_value = drydock_operator::omaha_proxy::PUBLIC_FLATCAR, value_parser = parse_upstream)]
    omaha_upstream: String,
    /// How long one upstream request (Omaha, or the Cincinnati graph) may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    omaha_timeout: Duration,
    /// The Cincinnati update graph Zincati's requests are answered from (the operator
    /// serves a pinned /v1/graph and FleetLock at /v1/pre-reboot, /v1/steady-state);
    /// `none` turns both off.
    #[arg(long, default_value = drydock_operator::zincati::PUBLIC_FCOS, value_parser = parse_upstream)]
    cincinnati_upstream: String,
    /// A kubeconfig file; default: in-cluster configuration, then the usual kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let mut config = match &args.kubeconfig {
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
    // Evictions answer 429 when a budget refuses; the operator honours Retry-After itself.
    config.default_retry = false;
    // Named in the API server's audit log and request logs.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("drydock-operator/", env!("CARGO_PKG_VERSION"))),
    ));
    kube::Client::try_from(config).context("building the API client")
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
    if args.renew_deadline >= args.lease_duration {
        eprintln!(
            "drydock-operator: --renew-deadline must be shorter than --lease-duration, or two leaders could overlap"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drydock-operator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        let client = client(&args).await?;
        let lease = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args.namespace.clone(),
            identity: args.identity.clone(),
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        };
        let cfg = drydock_operator::Config {
            client: client.clone(),
            namespace: args.namespace.clone(),
            config_map: args.config_map.clone(),
            lease: lease.clone(),
            listen: Some(args.listen),
            drain_poll: args.drain_poll,
            omaha: (args.omaha_upstream != "none").then(|| {
                drydock_operator::omaha_proxy::ProxyConfig {
                    upstream: args.omaha_upstream.clone(),
                    timeout: args.omaha_timeout,
                }
            }),
            zincati: (args.cincinnati_upstream != "none").then(|| {
                drydock_operator::zincati::ZincatiConfig {
                    upstream: args.cincinnati_upstream.clone(),
                    timeout: args.omaha_timeout,
                }
            }),
        };
        tokio::select! {
            r = drydock_operator::run(cfg) => r.context("the operator stopped"),
            _ = shutdown() => {
                tracing::info!("shutting down; releasing the lease");
                drydock_operator::release_lease(&client, &args.namespace, &lease).await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

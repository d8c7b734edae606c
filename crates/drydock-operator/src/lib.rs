//! `drydock-operator`: turns the planner's decisions into safe actions on a real cluster.
//!
//! Two replicas run; a `coordination.k8s.io/v1` Lease picks the one that acts
//! ([`leader`]). Both keep their caches warm ([`controller::watch_fleet`]); the leader runs
//! passes ([`controller::Leader`]): plan, then cordon, drain through the Eviction API
//! ([`drain`]), grant reboots, verify, uncordon — each an idempotent server-side apply of
//! the node's operator state, so a new leader resumes any step from what the API says.
//! `/metrics` ([`metrics`]), `/healthz` and `/readyz` are served by every replica, and
//! with them the Omaha proxy for Flatcar ([`omaha_proxy`]) and the update graph and
//! FleetLock server for Zincati ([`zincati`]).

pub mod ahead;
pub mod claims;
pub mod controller;
pub mod drain;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod omaha_proxy;
pub mod own_writes;
pub mod settle;
pub mod slim;
pub mod touched;
pub mod upstream;
pub mod zincati;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controller::{Leader, events, watch_fleet};
use crate::leader::LeaseConfig;
use crate::metrics::Metrics;

/// What the operator needs to run.
pub struct Config {
    /// API client; build it with `default_retry = false` (see [`drain`]).
    pub client: kube::Client,
    /// The operator's namespace (Lease and ConfigMap live there).
    pub namespace: String,
    /// The policy ConfigMap.
    pub config_map: String,
    /// The election.
    pub lease: LeaseConfig,
    /// Where to serve `/metrics`, `/healthz`, `/readyz` (None: not served).
    pub listen: Option<SocketAddr>,
    /// Re-plan this often while a drain waits for pods.
    pub drain_poll: Duration,
    /// Serve the Omaha proxy at `/v1/update/` on `listen`, asking this upstream.
    pub omaha: Option<omaha_proxy::ProxyConfig>,
    /// Serve Zincati's pinned update graph (`/v1/graph`) and FleetLock
    /// (`/v1/pre-reboot`, `/v1/steady-state`) on `listen`, asking this upstream graph.
    pub zincati: Option<zincati::ZincatiConfig>,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The HTTP listener could not be opened.
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// An upstream HTTP client could not be built.
    #[error("an upstream HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// A watch ended (it should run forever).
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    state: HttpState,
    proxy: Option<omaha_proxy::Proxy>,
    zincati: Option<zincati::Zincati>,
) {
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let omaha = match proxy {
        Some(p) => axum::Router::new()
            .route("/v1/update/", post(omaha_proxy::update))
            .route("/v1/update", post(omaha_proxy::update))
            .layer(axum::extract::DefaultBodyLimit::max(
                drydock_core::omaha::MAX_REQUEST_BYTES,
            ))
            .with_state(p),
        None => axum::Router::new(),
    };
    let zincati = match zincati {
        Some(z) => axum::Router::new()
            .route("/v1/graph", get(zincati::graph))
            .route("/v1/pre-reboot", post(zincati::pre_reboot))
            .route("/v1/steady-state", post(zincati::steady_state))
            .with_state(z),
        None => axum::Router::new(),
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<HttpState>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        s.metrics.render(),
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(
                |axum::extract::State(s): axum::extract::State<HttpState>| async move {
                    if s.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                },
            ),
        )
        .with_state(state)
        .merge(omaha)
        .merge(zincati);
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "the HTTP server stopped");
    }
}

/// Runs the operator until a watch ends or the process is stopped. On return (or drop of
/// the future) nothing is left acting.
pub async fn run(cfg: Config) -> Result<(), OperatorError> {
    let metrics = Arc::new(Metrics::default());
    // Everything spawned here stops when this future ends or is dropped.
    let mut guards: Vec<AbortOnDrop> = Vec::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (fleet, watches) = watch_fleet(&cfg.client, &cfg.namespace, &cfg.config_map);
    if let Some(addr) = cfg.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| OperatorError::Listen(addr, e))?;
        let proxy = match &cfg.omaha {
            Some(o) => {
                info!(%addr, upstream = %o.upstream, "serving the Omaha proxy at /v1/update/");
                Some(
                    omaha_proxy::Proxy::new(o, fleet.clone(), metrics.clone())
                        .map_err(OperatorError::Http)?,
                )
            }
            None => None,
        };
        let zincati = match &cfg.zincati {
            Some(z) => {
                info!(%addr, upstream = %z.upstream, "serving Zincati's update graph at /v1/graph and FleetLock at /v1/pre-reboot, /v1/steady-state");
                Some(
                    zincati::Zincati::new(z, cfg.client.clone(), fleet.clone(), metrics.clone())
                        .map_err(OperatorError::Http)?,
                )
            }
            None => None,
        };
        info!(%addr, "serving /metrics, /healthz, /readyz");
        let http = tokio::spawn(serve_http(
            listener,
            HttpState {
                metrics: metrics.clone(),
                ready: ready.clone(),
            },
            proxy,
            zincati,
        ));
        guards.push(AbortOnDrop(vec![http.abort_handle()]));
    }
    let mut watch_tasks = tokio::task::JoinSet::new();
    for w in watches {
        watch_tasks.spawn(w);
    }
    let (leading_tx, mut leading_rx) = watch::channel(false);
    let lease_api: Api<Lease> = Api::namespaced(cfg.client.clone(), &cfg.namespace);
    let election = tokio::spawn(leader::run(lease_api, cfg.lease.clone(), leading_tx));
    guards.push(AbortOnDrop(vec![election.abort_handle()]));

    // Ready once the node and budget caches hold a first full list and the ConfigMap has
    // been read (or found absent). One waiter only (a
    // store's readiness wakes one waiter); everyone else follows `synced`.
    let nodes = fleet.nodes.clone();
    let pdbs = fleet.pdbs.clone();
    let r = ready.clone();
    let mut policy = fleet.policy.clone();
    let (synced_tx, mut synced) = watch::channel(false);
    let sync_task = tokio::spawn(async move {
        let _ = nodes.wait_until_ready().await;
        let _ = pdbs.wait_until_ready().await;
        let _ = policy.wait_for(|p| p.loaded).await;
        r.store(true, Ordering::Relaxed);
        synced_tx.send_replace(true);
    });
    guards.push(AbortOnDrop(vec![sync_task.abort_handle()]));

    let mut acting: Option<AbortOnDrop> = None;
    loop {
        let lead = *leading_rx.borrow_and_update();
        metrics.leader(lead);
        match (lead, &acting) {
            (true, None) => {
                if synced.wait_for(|s| *s).await.is_err() {
                    return Err(OperatorError::WatchEnded("fleet"));
                }
                let leader = Leader {
                    client: cfg.client.clone(),
                    fleet: fleet.clone(),
                    leading: leading_rx.clone(),
                    metrics: metrics.clone(),
                    events: events(&cfg.client, &cfg.lease.identity),
                    namespace: cfg.namespace.clone(),
                    config_map: cfg.config_map.clone(),
                    drain_poll: cfg.drain_poll,
                    claims: Default::default(),
                };
                acting = Some(AbortOnDrop(vec![
                    tokio::spawn(leader.lead()).abort_handle(),
                ]));
            }
            (false, Some(_)) => {
                // Stop at once: the task is cancelled wherever it is.
                acting = None;
            }
            _ => {}
        }
        tokio::select! {
            changed = leading_rx.changed() => {
                if changed.is_err() {
                    return Err(OperatorError::WatchEnded("lease"));
                }
            }
            _ = watch_tasks.join_next() => {
                return Err(OperatorError::WatchEnded("fleet"));
            }
        }
    }
}

/// Releases the lease (for a graceful shutdown), so the other replica takes over at once.
pub async fn release_lease(client: &kube::Client, namespace: &str, lease: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = leader::release(&api, lease).await {
        warn!(error = %e, "could not release the lease");
    }
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

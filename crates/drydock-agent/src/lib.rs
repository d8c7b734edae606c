//! `drydock-agent`: one per node. It reads the host's update service over the system
//! D-Bus, publishes the node's update status on its own Node (server-side apply, field
//! manager `drydock-agent`), applies the channel the operator sets, and reboots only for
//! a grant that is valid now — the decisions themselves are `drydock_core::agent`.
//!
//! On Flatcar, update_engine checks and downloads by itself; the agent follows it. On
//! Fedora/RHEL CoreOS the agent is the one that checks: every `check_interval` it fetches
//! the stream's Cincinnati graph, chooses the newest release one edge away that the
//! pool's pin (`version-pin`, set by the operator) allows, and asks rpm-ostree to stage
//! that commit with `lock-finalization`, so nothing but a grant applies it — the reboot is
//! `FinalizeDeployment`, not logind. Without a Cincinnati server (`--cincinnati none`,
//! for a private remote) it stages the head of the stream's ref instead. A channel
//! change there moves the origin to the new stream's ref (`UpdateDeployment` with
//! `set-refspec`, also locked: upstream's `Rebase` cannot lock finalization).
//!
//! The agent is event-driven: it wakes for update-service signals, for changes of its own
//! Node (a watch with a field selector on its name) and for the few timers it arms itself
//! (a throttled progress write, a retry, and on CoreOS the update check). An idle Flatcar
//! agent makes no periodic wake-ups.
//! It keeps running while update_engine or the API server is away, and says so in its
//! status and logs. Losing the bus connection itself ends the process (the DaemonSet
//! restarts it).

pub mod cincinnati;

use std::path::PathBuf;
use std::time::Duration;

use drydock_core::agent::{self, HostView, RebootDecision};
use drydock_core::cincinnati::{Choice, choose};
use drydock_core::pin::VersionPin;
use drydock_core::protocol::{AgentStatus, UpdateStatus, keys, parse_node_state};
use drydock_core::version::{OsFamily, OsVersion};
use drydock_host::backoff::Backoff;
use drydock_host::facts::{Family, Host};
use drydock_host::logind::Logind;
use drydock_host::rpm_ostree::{self, Deployment, UpdateRequest, booted_and_staged};
use drydock_host::update_engine::{self, NewVersion, Operation};
use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

/// The agent's HTTP `User-Agent` (API server and Cincinnati requests), so audit logs
/// name it.
pub const USER_AGENT: &str = concat!("drydock-agent/", env!("CARGO_PKG_VERSION"));

/// Field manager of every write the agent makes.
pub const FIELD_MANAGER: &str = "drydock-agent";

/// What the agent needs to run.
pub struct Config {
    /// This node's name (downward API `NODE_NAME`).
    pub node_name: String,
    /// API client.
    pub client: kube::Client,
    /// The system bus (a private bus in tests).
    pub bus: zbus::Connection,
    /// Where the host's files are (`/` on the host; a mount in the container; a temp dir
    /// in tests).
    pub host_root: PathBuf,
    /// Reported on the Node.
    pub agent_version: String,
    /// CoreOS only: how often to check for a newer version.
    pub check_interval: Duration,
    /// CoreOS only: the Cincinnati server's base URL; None stages the head of the
    /// stream's ref from rpm-ostree's remote instead.
    pub cincinnati: Option<String>,
}

/// How often a CoreOS agent checks for updates by default (update_engine's own cadence).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The update_engine watch could not start or ended (the bus connection is gone).
    #[error("following update_engine: {0}")]
    UpdateEngine(#[from] update_engine::UpdateEngineError),
    /// The rpm-ostree watch could not start (the bus connection is gone).
    #[error("following rpm-ostree: {0}")]
    RpmOstree(#[from] rpm_ostree::RpmOstreeError),
    /// The host's files say neither Flatcar nor CoreOS, or cannot be read.
    #[error("reading the host: {0}")]
    Host(#[from] drydock_host::facts::FactsError),
    /// The update-service watch ended (the bus connection is gone).
    #[error("the update service watch ended")]
    ServiceWatchEnded,
    /// A setting cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// The watch on the Node ended.
    #[error("the watch on Node {0} ended")]
    WatchEnded(String),
}

#[derive(Debug, Clone)]
enum Service {
    Unknown,
    Absent,
    Status(update_engine::Status),
    Ostree(Vec<Deployment>),
}

/// What the update service (or a CoreOS transaction the agent started) reports.
#[derive(Debug)]
enum ServiceEvent {
    Engine(update_engine::Event),
    Ostree(rpm_ostree::Event),
    /// A check or stream change the agent started has ended.
    Transaction {
        what: &'static str,
        result: Result<(), rpm_ostree::RpmOstreeError>,
    },
    /// A check against the Cincinnati graph has ended: a note for the node's status
    /// (why nothing was staged), or what went wrong.
    Checked {
        result: Result<Option<String>, String>,
    },
}

struct Agent {
    cfg: Config,
    host: Host,
    nodes: Api<Node>,
    logind: Logind,
    service: Service,
    /// Staged version learnt earlier in this boot (update_engine forgets it on restart).
    known_staged: Option<OsVersion>,
    reboot_ack: Option<u64>,
    message: Option<String>,
    published: Option<AgentStatus>,
    published_at: Option<Timestamp>,
    /// When a deferred write (throttled progress, failed write) or reboot retry is due.
    wake_at: Option<Instant>,
    reboot_pending: Option<u64>,
    backoff: Backoff,
    refused_token: Option<u64>,
    /// CoreOS: the rpm-ostree client, and the running transaction's purpose.
    ostree: Option<rpm_ostree::Client>,
    in_flight: Option<&'static str>,
    next_check: Option<Instant>,
    last_check: Option<Timestamp>,
    /// CoreOS: the Cincinnati client, and the pool's pin as the operator last set it.
    graph: Option<cincinnati::Client>,
    version_pin: Option<String>,
    /// Whether the Node has been read in this run (its pin is known).
    node_seen: bool,
    /// CoreOS: (boot id, booted deployment's checksum) as last read — the slot, valid
    /// only in that boot.
    known_slot: Option<(String, String)>,
    events_tx: mpsc::Sender<ServiceEvent>,
}

impl Agent {
    fn host_view(&mut self) -> Result<HostView, String> {
        let (family, version_id) = self.host.os_release().map_err(|e| e.to_string())?;
        let boot_id = self.host.boot_id().map_err(|e| e.to_string())?;
        match family {
            Family::Flatcar => self.flatcar_view(&version_id, boot_id),
            Family::CoreOs => self.coreos_view(&version_id, boot_id),
        }
    }

    fn coreos_view(
        &mut self,
        os_release_version: &str,
        boot_id: String,
    ) -> Result<HostView, String> {
        let os = OsFamily::Fcos;
        let parse = |what: &str, v: &str| {
            OsVersion::parse(os, v).map_err(|e| format!("{what} version {v:?}: {e}"))
        };
        let (update_status, booted_version, staged, channel) = match &self.service {
            Service::Ostree(deployments) => {
                let (booted, staged) = booted_and_staged(deployments);
                if let Some(b) = booted {
                    self.known_slot = Some((boot_id.clone(), b.checksum.clone()));
                }
                let booted_version = match booted.and_then(|b| b.version.as_deref()) {
                    Some(v) => parse("booted deployment", v)?,
                    None => parse("os-release OSTREE_VERSION", os_release_version)?,
                };
                let staged_version = match staged.and_then(|s| s.version.as_deref()) {
                    Some(v) => match parse("staged deployment", v) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            self.message = Some(e);
                            None
                        }
                    },
                    None => None,
                };
                let channel = staged
                    .or(booted)
                    .and_then(|d| d.stream())
                    .map(str::to_string);
                let status = if self.in_flight.is_some() {
                    UpdateStatus::Checking
                } else if staged_version.is_some() {
                    UpdateStatus::Staged
                } else if self.message.is_some() {
                    UpdateStatus::Error
                } else {
                    UpdateStatus::Idle
                };
                (status, booted_version, staged_version, channel)
            }
            _ => (
                UpdateStatus::Unavailable,
                parse("os-release OSTREE_VERSION", os_release_version)?,
                None,
                None,
            ),
        };
        Ok(HostView {
            os,
            booted_version,
            booted_slot: self
                .known_slot
                .as_ref()
                .filter(|(boot, _)| *boot == boot_id)
                .map(|(_, slot)| slot.clone())
                .unwrap_or_else(|| "unknown".into()),
            boot_id,
            progress: if staged.is_some() { 100 } else { 0 },
            staged_version: staged,
            update_status,
            last_check: self.last_check,
            channel,
            message: self.message.clone(),
        })
    }

    fn flatcar_view(&mut self, version_id: &str, boot_id: String) -> Result<HostView, String> {
        let os = OsFamily::Flatcar;
        let booted_version =
            OsVersion::parse(os, version_id).map_err(|e| format!("os-release VERSION_ID: {e}"))?;
        let booted_slot = self
            .host
            .booted_slot()
            .map_err(|e| e.to_string())?
            .as_str()
            .to_string();
        let channel = self.host.update_conf().map_err(|e| e.to_string())?.group;
        let (update_status, progress, last_check, staged) = match &self.service {
            Service::Unknown | Service::Absent | Service::Ostree(_) => (
                UpdateStatus::Unavailable,
                0,
                None,
                self.known_staged.clone(),
            ),
            Service::Status(s) => {
                let status = match s.operation {
                    Operation::Idle => UpdateStatus::Idle,
                    Operation::CheckingForUpdate => UpdateStatus::Checking,
                    Operation::UpdateAvailable | Operation::Downloading => {
                        UpdateStatus::Downloading
                    }
                    Operation::Verifying | Operation::Finalizing => UpdateStatus::Finalizing,
                    Operation::UpdatedNeedReboot => UpdateStatus::Staged,
                    Operation::ReportingErrorEvent => UpdateStatus::Error,
                };
                let staged = match (&s.operation, &s.new_version) {
                    (Operation::UpdatedNeedReboot, NewVersion::Known(v)) => {
                        match OsVersion::parse(os, v) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                self.message = Some(format!(
                                    "update_engine staged an unreadable version: {e}"
                                ));
                                None
                            }
                        }
                    }
                    (Operation::UpdatedNeedReboot, NewVersion::UnknownAfterRestart) => {
                        self.known_staged.clone()
                    }
                    _ => None,
                };
                let last = (s.last_checked_time > 0)
                    .then(|| Timestamp::from_second(s.last_checked_time).ok())
                    .flatten();
                (
                    status,
                    (s.progress * 100.0).round().clamp(0.0, 100.0) as u8,
                    last,
                    staged,
                )
            }
        };
        if staged.is_some() {
            self.known_staged = staged.clone();
        }
        Ok(HostView {
            os,
            booted_version,
            booted_slot,
            boot_id,
            staged_version: staged,
            update_status,
            progress,
            last_check,
            channel,
            message: self.message.clone(),
        })
    }

    async fn apply_status(&self, status: &AgentStatus) -> kube::Result<()> {
        let (annotations, labels) = status.to_metadata();
        let patch = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.cfg.node_name, "annotations": annotations, "labels": labels},
        });
        self.nodes
            .patch(
                &self.cfg.node_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
    }

    /// Writes the status if it changed enough; arms a timer for a throttled write.
    async fn publish(&mut self) {
        let view = match self.host_view() {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot read the host");
                return;
            }
        };
        let status = agent::status_for(&view, self.reboot_ack, &self.cfg.agent_version);
        let now = Timestamp::now();
        if !agent::should_publish(self.published.as_ref(), self.published_at, &status, now) {
            if self.published.as_ref() != Some(&status) {
                self.wake_at =
                    Some(Instant::now() + Duration::from_secs(agent::PROGRESS_INTERVAL_SECS));
            }
            return;
        }
        match self.apply_status(&status).await {
            Ok(()) => {
                self.published = Some(status);
                self.published_at = Some(now);
                self.backoff.reset();
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "cannot write the node status; the API server may be away");
                self.wake_at = Some(Instant::now() + delay);
            }
        }
    }

    /// Acts on the Node: the desired channel, and a reboot grant (re-read fresh).
    async fn on_node(&mut self, node: &Node) {
        let empty = Default::default();
        let annotations = node.metadata.annotations.as_ref().unwrap_or(&empty);
        let pin = annotations.get(keys::VERSION_PIN).cloned();
        if self.graph.is_some() && (pin != self.version_pin || !self.node_seen) {
            if self.node_seen {
                info!(pin = ?pin, "the pool's version pin changed; checking now");
            }
            self.version_pin = pin;
            self.node_seen = true;
            self.next_check = Some(Instant::now());
        }
        if let Some(desired) = annotations.get(keys::DESIRED_CHANNEL) {
            if self.ostree.is_some() {
                self.coreos_channel(desired).await;
            } else {
                let current = self.host.update_conf().ok().and_then(|c| c.group);
                if let Some(ch) = agent::channel_change(Some(desired), current.as_deref()) {
                    match self.host.set_group(ch) {
                        Ok(()) => info!(
                            channel = ch,
                            "switched the update channel (GROUP in update.conf)"
                        ),
                        Err(e) => {
                            warn!(error = %e, "cannot switch the channel");
                            self.message = Some(format!("cannot switch to channel {ch}: {e}"));
                        }
                    }
                    self.publish().await;
                }
            }
        }
        let granted = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::PHASE))
            .is_some_and(|p| p == "RebootGranted" || p == "Rebooting");
        if granted || self.reboot_pending.is_some() {
            self.consider_reboot().await;
        }
    }

    /// CoreOS: moves the origin to the desired stream's ref (locked), unless it is there
    /// already (booted, or staged by an earlier change) or a transaction is running.
    async fn coreos_channel(&mut self, desired: &str) {
        let Service::Ostree(deployments) = &self.service else {
            return;
        };
        let (booted, staged) = booted_and_staged(deployments);
        let current = staged.or(booted).and_then(|d| d.stream());
        let Some(stream) = agent::channel_change(Some(desired), current) else {
            return;
        };
        if stream.is_empty()
            || !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.message = Some(format!(
                "desired channel {stream:?} is not a stream name (letters, digits, '-', '_', '.')"
            ));
            self.publish().await;
            return;
        }
        let Some(origin) = booted.and_then(|b| b.origin.as_deref()) else {
            self.message = Some("the booted deployment has no origin to rebase from".into());
            self.publish().await;
            return;
        };
        let refspec = match origin.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{stream}"),
            None => stream.to_string(),
        };
        info!(channel = stream, %refspec, "switching the stream (staged, locked until a grant)");
        self.start_transaction(
            "stream change",
            UpdateRequest {
                refspec: Some(refspec),
                lock_finalization: true,
                ..UpdateRequest::default()
            },
        )
        .await;
    }

    /// CoreOS: starts an rpm-ostree transaction in the background (one at a time); its
    /// end arrives as a [`ServiceEvent::Transaction`].
    async fn start_transaction(&mut self, what: &'static str, req: UpdateRequest) {
        let Some(client) = self.ostree.clone() else {
            return;
        };
        if self.in_flight.is_some() {
            return;
        }
        self.in_flight = Some(what);
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = client.update_deployment(&req).await;
            let _ = tx.send(ServiceEvent::Transaction { what, result }).await;
        });
        self.publish().await;
    }

    /// CoreOS: the periodic check — stage, locked, what the Cincinnati graph offers
    /// inside the pin, or without a graph the head of the current stream.
    async fn coreos_check(&mut self) {
        if let Some(graph) = self.graph.clone() {
            // Not before the Node (and so the pool's pin) and rpm-ostree have been read;
            // whichever comes last schedules the check.
            if !self.node_seen || !matches!(self.service, Service::Ostree(_)) {
                self.next_check = None;
                return;
            }
            self.next_check = Some(Instant::now() + self.cfg.check_interval);
            return self.graph_check(graph).await;
        }
        self.next_check = Some(Instant::now() + self.cfg.check_interval);
        if matches!(self.service, Service::Ostree(_)) {
            self.last_check = Some(Timestamp::now());
            self.start_transaction(
                "update check",
                UpdateRequest {
                    lock_finalization: true,
                    allow_downgrade: Some(false),
                    ..UpdateRequest::default()
                },
            )
            .await;
        }
    }

    /// CoreOS with a Cincinnati server: fetches the graph and stages the chosen commit,
    /// in the background; the end arrives as [`ServiceEvent::Checked`].
    async fn graph_check(&mut self, graph: cincinnati::Client) {
        let (Service::Ostree(deployments), Some(client)) = (&self.service, self.ostree.clone())
        else {
            return;
        };
        if self.in_flight.is_some() {
            // Another transaction runs; check again shortly rather than in an interval.
            self.next_check = Some(Instant::now() + Duration::from_secs(1));
            return;
        }
        let (booted, staged) = booted_and_staged(deployments);
        let Some(booted) = booted.cloned() else {
            return;
        };
        let staged = staged.map(|d| d.checksum.clone());
        let Some(stream) = booted.stream().map(str::to_string) else {
            self.message =
                Some("the booted deployment has no origin ref, so no stream to check".into());
            return self.publish().await;
        };
        let pin = match self
            .version_pin
            .as_deref()
            .map(VersionPin::parse)
            .transpose()
        {
            Ok(p) => p,
            Err(e) => {
                self.message = Some(format!("not checking for updates: the operator's {e}"));
                return self.publish().await;
            }
        };
        self.last_check = Some(Timestamp::now());
        self.in_flight = Some("update check");
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = async {
                let g = graph
                    .graph(&cincinnati::Query {
                        stream: &stream,
                        os_version: booted.version.as_deref(),
                        os_checksum: &booted.checksum,
                    })
                    .await?;
                let decision = choose(&g, &booted.checksum, pin.as_ref());
                let deadend = decision.booted_deadend.map(|why| {
                    format!("the running release is a dead-end ({why}); it needs a manual update")
                });
                match decision.choice {
                    Choice::Stage(t) if staged.as_deref() == Some(t.checksum.as_str()) => Ok(deadend),
                    Choice::Stage(t) => {
                        info!(version = %t.version, checksum = %t.checksum, "staging the release the graph offers (locked until a grant)");
                        client
                            .update_deployment(&UpdateRequest {
                                revision: Some(t.checksum),
                                lock_finalization: true,
                                allow_downgrade: Some(false),
                                ..UpdateRequest::default()
                            })
                            .await
                            .map_err(|e| format!("staging {} failed: {e}", t.version))?;
                        Ok(deadend)
                    }
                    Choice::UpToDate => Ok(deadend),
                    Choice::Wait(why) => Ok(Some(why)),
                    Choice::NotInGraph => Ok(Some(format!(
                        "the booted commit {} is not in stream {stream}'s update graph",
                        booted.checksum
                    ))),
                }
            }
            .await;
            let _ = tx.send(ServiceEvent::Checked { result }).await;
        });
        self.publish().await;
    }

    /// Applies the grant: logind on Flatcar, `FinalizeDeployment` (which reboots) on CoreOS.
    async fn reboot_now(&mut self) -> Result<(), String> {
        match &self.ostree {
            None => self
                .logind
                .reboot()
                .await
                .map_err(|e| format!("logind ({}): {e}", e.kind())),
            Some(client) => {
                let checksum = match &self.service {
                    Service::Ostree(d) => booted_and_staged(d).1.map(|s| s.checksum.clone()),
                    _ => None,
                };
                let Some(checksum) = checksum else {
                    return Err("rpm-ostree has no staged deployment to finalize".into());
                };
                client
                    .finalize(&checksum)
                    .await
                    .map_err(|e| format!("rpm-ostree ({}): {e}", e.kind()))
            }
        }
    }

    async fn consider_reboot(&mut self) {
        // The grant is read fresh from the API server, never from the watch cache.
        let node = match self.nodes.get(&self.cfg.node_name).await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot read the node to check the grant");
                self.wake_at = Some(Instant::now() + self.backoff.next_delay());
                return;
            }
        };
        let empty = Default::default();
        let (state, errors) = parse_node_state(
            node.metadata.labels.as_ref().unwrap_or(&empty),
            node.metadata.annotations.as_ref().unwrap_or(&empty),
        );
        if !errors.is_empty() {
            warn!(errors = ?errors.iter().map(ToString::to_string).collect::<Vec<_>>(), "the node's drydock state is unreadable; not rebooting");
            return;
        }
        let view = match self.host_view() {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot read the host; not rebooting");
                return;
            }
        };
        match agent::reboot_decision(&state, &view) {
            RebootDecision::Nothing => self.reboot_pending = None,
            RebootDecision::Refuse(why) => {
                self.reboot_pending = None;
                if self.refused_token != state.operator.token {
                    warn!(reason = %why, "not acting on the reboot grant");
                    self.refused_token = state.operator.token;
                }
            }
            RebootDecision::Reboot { token } => {
                if self.reboot_ack.is_none_or(|a| a < token) {
                    self.reboot_ack = Some(token);
                    let status = agent::status_for(&view, self.reboot_ack, &self.cfg.agent_version);
                    if let Err(e) = self.apply_status(&status).await {
                        // Without the acknowledgement on record, do not reboot yet.
                        warn!(error = %e, token, "cannot acknowledge the grant; will retry");
                        self.reboot_pending = Some(token);
                        self.wake_at = Some(Instant::now() + self.backoff.next_delay());
                        return;
                    }
                    self.published = Some(status);
                    self.published_at = Some(Timestamp::now());
                }
                info!(token, target = ?view.staged_version.as_ref().map(ToString::to_string), "rebooting for grant");
                match self.reboot_now().await {
                    Ok(()) => self.reboot_pending = None,
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        warn!(error = %e, retry_in = ?delay, "the reboot did not start");
                        self.message = Some(format!("reboot for grant {token} failed: {e}"));
                        self.reboot_pending = Some(token);
                        self.wake_at = Some(Instant::now() + delay);
                    }
                }
            }
        }
    }
}

/// Runs the agent until its bus connection or node watch ends.
pub async fn run(cfg: Config) -> Result<(), AgentError> {
    let host = Host::new(&cfg.host_root);
    let (family, _) = host.os_release()?;
    let nodes: Api<Node> = Api::all(cfg.client.clone());
    let logind = Logind::new(cfg.bus.clone());
    let (events_tx, mut events) = mpsc::channel::<ServiceEvent>(64);
    let graph = match (&family, &cfg.cincinnati) {
        (Family::CoreOs, Some(url)) => {
            Some(cincinnati::Client::new(url).map_err(AgentError::Config)?)
        }
        _ => None,
    };
    let ostree = match family {
        Family::Flatcar => {
            let mut ue_events = update_engine::Client::new(cfg.bus.clone()).watch().await?;
            let tx = events_tx.clone();
            tokio::spawn(async move {
                while let Some(e) = ue_events.recv().await {
                    if tx.send(ServiceEvent::Engine(e)).await.is_err() {
                        return;
                    }
                }
            });
            None
        }
        Family::CoreOs => {
            let client = rpm_ostree::Client::new(cfg.bus.clone());
            let mut os_events = client.watch().await?;
            let tx = events_tx.clone();
            tokio::spawn(async move {
                while let Some(e) = os_events.recv().await {
                    if tx.send(ServiceEvent::Ostree(e)).await.is_err() {
                        return;
                    }
                }
            });
            Some(client)
        }
    };
    let watch_config =
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name));
    let mut node_events = watcher(nodes.clone(), watch_config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let seed = cfg
        .node_name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut agent = Agent {
        host,
        nodes,
        logind,
        service: Service::Unknown,
        known_staged: None,
        reboot_ack: None,
        message: None,
        published: None,
        published_at: None,
        wake_at: None,
        reboot_pending: None,
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60), seed),
        refused_token: None,
        // The first check runs once rpm-ostree has been read.
        next_check: None,
        last_check: None,
        in_flight: None,
        known_slot: None,
        graph,
        version_pin: None,
        node_seen: false,
        ostree,
        events_tx,
        cfg,
    };
    // What this agent (or its previous run) recorded: the last acknowledged token, and the
    // staged version if it is still this boot (update_engine forgets it when restarted).
    if let Ok(node) = agent.nodes.get(&agent.cfg.node_name).await {
        let empty = Default::default();
        let (state, _) = parse_node_state(
            node.metadata.labels.as_ref().unwrap_or(&empty),
            node.metadata.annotations.as_ref().unwrap_or(&empty),
        );
        agent.reboot_ack = state.agent.reboot_ack;
        if state.agent.boot_id.is_some() && state.agent.boot_id == agent.host.boot_id().ok() {
            agent.known_staged = state.agent.staged_version;
            agent.known_slot = state
                .agent
                .booted_slot
                .filter(|s| s != "unknown")
                .zip(state.agent.boot_id.clone())
                .map(|(slot, boot)| (boot, slot));
        }
    }
    info!(node = %agent.cfg.node_name, "drydock-agent started");
    loop {
        let wake = agent.wake_at;
        let check = agent.next_check;
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else {
                    return Err(AgentError::ServiceWatchEnded);
                };
                match ev {
                    ServiceEvent::Engine(update_engine::Event::Status(s)) => agent.service = Service::Status(s),
                    ServiceEvent::Engine(update_engine::Event::Absent) => {
                        warn!("update_engine is not running");
                        agent.service = Service::Absent;
                    }
                    ServiceEvent::Engine(update_engine::Event::ForgedSignal { sender }) => {
                        warn!(%sender, "ignored a StatusUpdate from a connection that does not own com.coreos.update1");
                        continue;
                    }
                    ServiceEvent::Engine(update_engine::Event::Error(e)) => {
                        warn!(error = %e, kind = e.kind(), "update_engine");
                        continue;
                    }
                    ServiceEvent::Ostree(rpm_ostree::Event::Deployments(d)) => {
                        agent.service = Service::Ostree(d);
                        if agent.next_check.is_none() {
                            agent.next_check = Some(Instant::now());
                        }
                    }
                    ServiceEvent::Ostree(rpm_ostree::Event::Absent) => {
                        warn!("rpm-ostree is not running");
                        agent.service = Service::Absent;
                    }
                    ServiceEvent::Ostree(rpm_ostree::Event::ForgedSignal { sender }) => {
                        warn!(%sender, "ignored a PropertiesChanged from a connection that does not own org.projectatomic.rpmostree1");
                        continue;
                    }
                    ServiceEvent::Ostree(rpm_ostree::Event::Error(e)) => {
                        warn!(error = %e, kind = e.kind(), "rpm-ostree");
                        continue;
                    }
                    ServiceEvent::Checked { result } => {
                        agent.in_flight = None;
                        match result {
                            Ok(note) => {
                                if let Some(n) = &note {
                                    info!(note = %n, "update check: nothing staged");
                                }
                                agent.message = note;
                            }
                            Err(e) => {
                                warn!(error = %e, "update check failed");
                                agent.message = Some(format!("update check failed: {e}"));
                            }
                        }
                    }
                    ServiceEvent::Transaction { what, result } => {
                        agent.in_flight = None;
                        match result {
                            Ok(()) => {
                                info!(what, "rpm-ostree transaction finished");
                                agent.message = None;
                            }
                            Err(e) => {
                                warn!(what, error = %e, kind = e.kind(), "rpm-ostree transaction failed");
                                agent.message = Some(format!("{what} failed: {e}"));
                            }
                        }
                    }
                }
                agent.publish().await;
            }
            node = node_events.next() => {
                match node {
                    Some(Ok(node)) => {
                        if agent.published.is_none() {
                            agent.publish().await;
                        }
                        agent.on_node(&node).await;
                    }
                    Some(Err(e)) => warn!(error = %e, "watching the node (the API server may be away)"),
                    None => return Err(AgentError::WatchEnded(agent.cfg.node_name.clone())),
                }
            }
            _ = async { if let Some(t) = check { tokio::time::sleep_until(t).await } else { std::future::pending::<()>().await } } => {
                agent.coreos_check().await;
            }
            _ = async { if let Some(t) = wake { tokio::time::sleep_until(t).await } else { std::future::pending::<()>().await } } => {
                agent.wake_at = None;
                if agent.reboot_pending.is_some() {
                    agent.consider_reboot().await;
                }
                agent.publish().await;
            }
        }
    }
}

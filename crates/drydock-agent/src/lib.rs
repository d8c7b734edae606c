//! `drydock-agent`: one per node. It reads the host's update service over the system
//! D-Bus, publishes the node's update status on its own Node (server-side apply, field
//! manager `drydock-agent`), applies the channel the operator sets, and reboots only for
//! a grant that is valid now — the decisions themselves are `drydock_core::agent`.
//!
//! The agent is event-driven: it wakes for update_engine signals, for changes of its own
//! Node (a watch with a field selector on its name) and for the few timers it arms itself
//! (a throttled progress write, a retry). An idle agent makes no periodic wake-ups.
//! It keeps running while update_engine or the API server is away, and says so in its
//! status and logs. Losing the bus connection itself ends the process (the DaemonSet
//! restarts it).

use std::path::PathBuf;
use std::time::Duration;

use drydock_core::agent::{self, HostView, RebootDecision};
use drydock_core::protocol::{AgentStatus, UpdateStatus, keys, parse_node_state};
use drydock_core::version::{OsFamily, OsVersion};
use drydock_host::backoff::Backoff;
use drydock_host::facts::{Family, Host};
use drydock_host::logind::Logind;
use drydock_host::update_engine::{self, NewVersion, Operation};
use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;
use tracing::{info, warn};

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
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The update_engine watch could not start or ended (the bus connection is gone).
    #[error("following update_engine: {0}")]
    UpdateEngine(#[from] update_engine::UpdateEngineError),
    /// The watch on the Node ended.
    #[error("the watch on Node {0} ended")]
    WatchEnded(String),
}

#[derive(Debug, Clone)]
enum Service {
    Unknown,
    Absent,
    Status(update_engine::Status),
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
}

fn os_family(f: Family) -> OsFamily {
    match f {
        Family::Flatcar => OsFamily::Flatcar,
        Family::CoreOs => OsFamily::Fcos,
    }
}

impl Agent {
    fn host_view(&mut self) -> Result<HostView, String> {
        let (family, version_id) = self.host.os_release().map_err(|e| e.to_string())?;
        let os = os_family(family);
        let booted_version =
            OsVersion::parse(os, &version_id).map_err(|e| format!("os-release VERSION_ID: {e}"))?;
        let booted_slot = self
            .host
            .booted_slot()
            .map_err(|e| e.to_string())?
            .as_str()
            .to_string();
        let boot_id = self.host.boot_id().map_err(|e| e.to_string())?;
        let channel = self.host.update_conf().map_err(|e| e.to_string())?.group;
        let (update_status, progress, last_check, staged) = match &self.service {
            Service::Unknown | Service::Absent => (
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
        if let Some(desired) = annotations.get(keys::DESIRED_CHANNEL) {
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
                match self.logind.reboot().await {
                    Ok(()) => self.reboot_pending = None,
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        warn!(error = %e, kind = e.kind(), retry_in = ?delay, "logind did not reboot");
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
    let nodes: Api<Node> = Api::all(cfg.client.clone());
    let logind = Logind::new(cfg.bus.clone());
    let ue = update_engine::Client::new(cfg.bus.clone());
    let mut ue_events = ue.watch().await?;
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
        }
    }
    info!(node = %agent.cfg.node_name, "drydock-agent started");
    loop {
        let wake = agent.wake_at;
        tokio::select! {
            ev = ue_events.recv() => {
                let Some(ev) = ev else {
                    return Err(AgentError::UpdateEngine(update_engine::UpdateEngineError::Absent));
                };
                match ev {
                    update_engine::Event::Status(s) => agent.service = Service::Status(s),
                    update_engine::Event::Absent => {
                        warn!("update_engine is not running");
                        agent.service = Service::Absent;
                    }
                    update_engine::Event::ForgedSignal { sender } => {
                        warn!(%sender, "ignored a StatusUpdate from a connection that does not own com.coreos.update1");
                        continue;
                    }
                    update_engine::Event::Error(e) => {
                        warn!(error = %e, kind = e.kind(), "update_engine");
                        continue;
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

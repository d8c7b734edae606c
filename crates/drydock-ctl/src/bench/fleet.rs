//! Many simulated Flatcar hosts and their agents in one process, for fleets too large for
//! a `drydock-agent` process and a dbus-daemon per node.
//!
//! Each node runs the agent's own decision logic (`drydock_core::agent`: what status to
//! publish, when a progress change is worth a write, whether a grant allows a reboot)
//! against an in-memory host that goes through update_engine's operations, and writes
//! exactly what `drydock-agent` writes: a server-side apply of its status keys with field
//! manager `drydock-agent` and the agent's user agent. Like the real agent it watches only
//! its own Node (a field selector on its name), reads its Node once when it starts, and
//! stops — watch and all — while its host reboots. A reboot also updates the Node's
//! `nodeInfo.bootID` and `osImage`, as the kubelet does when it comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use drydock_core::agent::{HostView, RebootDecision, reboot_decision, should_publish, status_for};
use drydock_core::protocol::{AgentStatus, UpdateStatus, parse_node_state};
use drydock_core::version::{OsFamily, OsVersion};
use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

// The field manager of `drydock-agent`'s writes, which the simulated agents make too.
use drydock_agent::FIELD_MANAGER;
/// The agent version the simulated agents report.
const AGENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-bench");

/// One simulated node: its name and how long its host takes to reboot.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Node name.
    pub name: String,
    /// Time the host is down for a reboot.
    pub reboot: Duration,
}

/// Counters the simulated fleet keeps.
#[derive(Debug, Default)]
pub struct Counters {
    /// Status writes made (agent).
    pub writes: AtomicU64,
    /// Writes that failed and were retried.
    pub write_errors: AtomicU64,
    /// Reboots done.
    pub reboots: AtomicU64,
    /// Grants refused by the agent logic.
    pub refusals: AtomicU64,
    /// Nodes that reported their first status.
    pub started: AtomicU64,
    /// Nodes that reported a staged update.
    pub staged: AtomicU64,
}

/// The running fleet: its tasks end when it is dropped.
pub struct Fleet {
    tasks: Vec<JoinHandle<()>>,
    release: watch::Sender<Option<String>>,
    /// What the nodes did so far.
    pub counters: Arc<Counters>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Fleet {
    /// Starts every node booted on `from` (USR-A, channel `stable`). `agent` must send the
    /// agent's user agent; `kubelet` writes the kubelet's part of a reboot.
    pub fn start(
        agent: kube::Client,
        kubelet: kube::Client,
        nodes: &[SimNode],
        from: &str,
    ) -> anyhow::Result<Fleet> {
        let from = OsVersion::parse(OsFamily::Flatcar, from)
            .map_err(|e| anyhow!("version {from}: {e}"))?;
        let (release, release_rx) = watch::channel(None::<String>);
        let counters = Arc::new(Counters::default());
        let api: Api<Node> = Api::all(agent);
        let kubelet: Api<Node> = Api::all(kubelet);
        let tasks = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let sim = Sim {
                    name: n.name.clone(),
                    reboot: n.reboot,
                    api: api.clone(),
                    kubelet: kubelet.clone(),
                    host: Host::new(&n.name, from.clone()),
                    published: None,
                    published_at: None,
                    reboot_ack: None,
                    counters: counters.clone(),
                    // Spread the update checks over 5 s, as timers spread them on hosts.
                    check_delay: Duration::from_millis((i as u64 * 7919) % 5000),
                };
                tokio::spawn(sim.run(release_rx.clone()))
            })
            .collect();
        Ok(Fleet {
            tasks,
            release,
            counters,
        })
    }

    /// Publishes `version`: every host checks, downloads and stages it.
    pub fn release(&self, version: &str) {
        let _ = self.release.send(Some(version.to_string()));
    }

    /// A node's task ended (it never should while the fleet runs).
    pub fn ended(&self) -> Option<usize> {
        self.tasks.iter().position(JoinHandle::is_finished)
    }
}

/// The in-memory host: update_engine's state and the boot.
#[derive(Debug, Clone)]
struct Host {
    version: OsVersion,
    slot_b: bool,
    boot: u32,
    boot_id: String,
    status: UpdateStatus,
    progress: u8,
    staged: Option<OsVersion>,
    last_check: Option<Timestamp>,
    seed: u64,
}

fn boot_id(seed: u64, boot: u32) -> String {
    let mut x = seed ^ u64::from(boot).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let y = x.rotate_left(29) ^ 0x94d0_49bb_1331_11eb;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xfff,
        y & 0xfff,
        y >> 16
    )
}

impl Host {
    fn new(name: &str, version: OsVersion) -> Host {
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Host {
            version,
            slot_b: false,
            boot: 1,
            boot_id: boot_id(seed, 1),
            status: UpdateStatus::Idle,
            progress: 0,
            staged: None,
            last_check: None,
            seed,
        }
    }

    fn view(&self) -> HostView {
        HostView {
            os: OsFamily::Flatcar,
            booted_version: self.version.clone(),
            booted_slot: if self.slot_b { "b" } else { "a" }.into(),
            boot_id: self.boot_id.clone(),
            staged_version: self.staged.clone(),
            update_status: self.status,
            progress: self.progress,
            last_check: self.last_check,
            channel: Some("stable".into()),
            message: None,
        }
    }

    /// Boots the staged version from the other slot: update_engine starts IDLE.
    fn reboot(&mut self) {
        if let Some(v) = self.staged.take() {
            self.version = v;
            self.slot_b = !self.slot_b;
        }
        self.boot += 1;
        self.boot_id = boot_id(self.seed, self.boot);
        self.status = UpdateStatus::Idle;
        self.progress = 0;
    }
}

struct Sim {
    name: String,
    reboot: Duration,
    api: Api<Node>,
    kubelet: Api<Node>,
    host: Host,
    published: Option<AgentStatus>,
    published_at: Option<Timestamp>,
    reboot_ack: Option<u64>,
    counters: Arc<Counters>,
    check_delay: Duration,
}

impl Sim {
    /// Writes the agent's status when `should_publish` says so; retries a failed write.
    async fn publish(&mut self) {
        let status = status_for(&self.host.view(), self.reboot_ack, AGENT_VERSION);
        let now = Timestamp::now();
        if !should_publish(self.published.as_ref(), self.published_at, &status, now) {
            return;
        }
        let (annotations, labels) = status.to_metadata();
        let patch = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "annotations": annotations, "labels": labels},
        });
        loop {
            match self
                .api
                .patch(
                    &self.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => break,
                Err(_) => {
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.published = Some(status);
        self.published_at = Some(now);
    }

    /// What the agent does when it starts: read its Node (the last acknowledged token),
    /// publish, watch.
    async fn start_agent(&mut self) {
        self.published = None;
        self.published_at = None;
        loop {
            match self.api.get(&self.name).await {
                Ok(node) => {
                    let empty = Default::default();
                    let (state, _) = parse_node_state(
                        node.metadata.labels.as_ref().unwrap_or(&empty),
                        node.metadata.annotations.as_ref().unwrap_or(&empty),
                    );
                    self.reboot_ack = state.agent.reboot_ack;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        self.publish().await;
    }

    /// update_engine checking, downloading (progress in 5 % steps), finalizing, staged.
    async fn update_to(&mut self, version: &str) {
        let Ok(target) = OsVersion::parse(OsFamily::Flatcar, version) else {
            return;
        };
        if target == self.host.version {
            return;
        }
        self.host.status = UpdateStatus::Checking;
        self.host.last_check = Some(Timestamp::now());
        self.publish().await;
        self.host.status = UpdateStatus::Downloading;
        for p in (0..=100).step_by(5) {
            self.host.progress = p as u8;
            self.publish().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.host.status = UpdateStatus::Finalizing;
        self.publish().await;
        self.host.status = UpdateStatus::Staged;
        self.host.staged = Some(target);
        self.host.progress = 0;
        self.publish().await;
        self.counters.staged.fetch_add(1, Ordering::Relaxed);
    }

    /// The kubelet after a boot: the new boot id and OS image on the Node's status.
    async fn kubelet_reports_boot(&self) {
        let status = serde_json::json!({"status": {"nodeInfo": {
            "bootID": self.host.boot_id,
            "osImage": format!("Flatcar Container Linux by Kinvolk {} (Oklo)", self.host.version),
        }}});
        for _ in 0..20 {
            if self
                .kubelet
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn run(mut self, mut release: watch::Receiver<Option<String>>) {
        self.start_agent().await;
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        let mut released = false;
        'boot: loop {
            let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
            let mut nodes = watcher(self.api.clone(), config)
                .default_backoff()
                .applied_objects()
                .boxed();
            loop {
                tokio::select! {
                    changed = release.changed(), if !released => {
                        if changed.is_err() {
                            return;
                        }
                        let Some(v) = release.borrow_and_update().clone() else { continue };
                        released = true;
                        tokio::time::sleep(self.check_delay).await;
                        self.update_to(&v).await;
                    }
                    ev = nodes.next() => {
                        let Some(Ok(node)) = ev else {
                            if ev.is_none() {
                                return;
                            }
                            continue;
                        };
                        let empty = Default::default();
                        let (state, _) = parse_node_state(
                            node.metadata.labels.as_ref().unwrap_or(&empty),
                            node.metadata.annotations.as_ref().unwrap_or(&empty),
                        );
                        match reboot_decision(&state, &self.host.view()) {
                            RebootDecision::Nothing => {}
                            RebootDecision::Refuse(_) => {
                                self.counters.refusals.fetch_add(1, Ordering::Relaxed);
                            }
                            RebootDecision::Reboot { token } => {
                                // Acknowledge first, then reboot: the agent and its watch
                                // end with the host.
                                self.reboot_ack = Some(token);
                                self.publish().await;
                                drop(nodes);
                                tokio::time::sleep(self.reboot).await;
                                self.host.reboot();
                                self.counters.reboots.fetch_add(1, Ordering::Relaxed);
                                self.kubelet_reports_boot().await;
                                self.start_agent().await;
                                continue 'boot;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reboot_boots_the_staged_version_from_the_other_slot_with_a_new_boot_id() {
        let v = |s: &str| OsVersion::parse(OsFamily::Flatcar, s).expect("version");
        let mut h = Host::new("node-1", v("4081.2.0"));
        let first = h.boot_id.clone();
        assert_eq!(Host::new("node-1", v("4081.2.0")).boot_id, first);
        assert_ne!(Host::new("node-2", v("4081.2.0")).boot_id, first);
        h.staged = Some(v("4230.0.0"));
        h.status = UpdateStatus::Staged;
        let before = status_for(&h.view(), None, AGENT_VERSION);
        assert!(before.reboot_needed);
        h.reboot();
        assert_ne!(h.boot_id, first);
        assert_eq!(h.boot_id.len(), 36);
        let after = status_for(&h.view(), Some(1), AGENT_VERSION);
        assert_eq!(after.booted_version, Some(v("4230.0.0")));
        assert_eq!(after.booted_slot.as_deref(), Some("b"));
        assert!(!after.reboot_needed);
        assert_eq!(after.update_status, Some(UpdateStatus::Idle));
    }
}

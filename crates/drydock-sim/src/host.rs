//! A simulated Flatcar host: its files under a root directory (`/etc/os-release`,
//! `/proc/cmdline`, the boot id, `update.conf`), its update_engine and logind on a bus,
//! and what a reboot does to them.
//!
//! A reboot (logind `Reboot`) takes the services off the bus, waits, then boots: into the
//! spare USR slot when update_engine staged a version there, or — when told that boot
//! fails — back into the old slot, as GRUB does when the new slot's one try is used up
//! (a rollback). Either way the boot id changes and the services come back as new
//! processes (new owners of their bus names), update_engine in IDLE.
//!
//! How the agent survives a simulated reboot: it is a process of the host, so whoever
//! runs it (a test, the demo) restarts it when [`SimHost::reboots`] reports a boot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::logind::{self, Logind};
use crate::update_engine::{self, UpdateEngine};

/// PARTUUID of USR-A (as on real Flatcar).
pub const USR_A_PARTUUID: &str = "7130c94a-213a-4e5a-8e26-6cce9662f132";
/// PARTUUID of USR-B.
pub const USR_B_PARTUUID: &str = "e03dd35c-7c2d-4a47-b3fe-27f15780a57c";

/// Errors of the simulated host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Writing the host's files failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Serving on the bus failed.
    #[error("serving on the bus: {0}")]
    Bus(#[from] zbus::Error),
}

/// A boot that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// Boots since the host started (the first boot is 1).
    pub number: u32,
    /// Slot booted (`a` or `b`).
    pub slot: String,
    /// Version booted.
    pub version: String,
    /// Whether this boot fell back to the old slot.
    pub rolled_back: bool,
}

#[derive(Debug)]
struct State {
    slot_a: bool,
    version: String,
    boots: u32,
    fail_next_boot: bool,
}

/// The simulated host.
pub struct SimHost {
    root: PathBuf,
    address: String,
    step: Duration,
    reboot_delay: Duration,
    state: Arc<Mutex<State>>,
    engine: Arc<Mutex<UpdateEngine>>,
    logind: Arc<Mutex<Option<Logind>>>,
    refuse: Arc<Mutex<Option<String>>>,
    /// Set when update_engine speaks Omaha (reads the host's files before each check).
    engine_root: Option<PathBuf>,
    /// The running update_engine's bus connection (None while it is stopped).
    ue_conn: Arc<Mutex<Option<zbus::Connection>>>,
    boots_tx: watch::Sender<Boot>,
    task: tokio::task::JoinHandle<()>,
}

fn boot_id(n: u32, seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(n.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = h ^ nanos.rotate_left(17);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        x & 0xfff,
        (h >> 20) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

fn write(root: &Path, rel: &str, content: &str) -> Result<(), HostError> {
    let p = root.join(rel);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| HostError::Io(dir.display().to_string(), e))?;
    }
    std::fs::write(&p, content).map_err(|e| HostError::Io(p.display().to_string(), e))
}

fn new_engine(step: Duration, root: Option<&Path>) -> UpdateEngine {
    match root {
        Some(r) => UpdateEngine::new(step).with_root(r),
        None => UpdateEngine::new(step),
    }
}

fn write_boot_files(root: &Path, s: &State) -> Result<(), HostError> {
    let partuuid = if s.slot_a {
        USR_A_PARTUUID
    } else {
        USR_B_PARTUUID
    };
    let v = &s.version;
    write(
        root,
        "etc/os-release",
        &format!(
            "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nID_LIKE=coreos\nVERSION={v}\nVERSION_ID={v}\nBUILD_ID=sim\nPRETTY_NAME=\"Flatcar Container Linux by Kinvolk {v} (simulated)\"\n"
        ),
    )?;
    write(
        root,
        "proc/cmdline",
        &format!(
            "BOOT_IMAGE=/flatcar/vmlinuz-{} mount.usr=/dev/mapper/usr verity.usr=PARTUUID={partuuid} rootflags=rw mount.usrflags=ro consoleblank=0 root=LABEL=ROOT flatcar.first_boot=detected\n",
            if s.slot_a { "a" } else { "b" }
        ),
    )?;
    write(
        root,
        "proc/sys/kernel/random/boot_id",
        &format!("{}\n", boot_id(s.boots, &root.display().to_string())),
    )?;
    Ok(())
}

/// How to start a simulated Flatcar host.
#[derive(Debug, Clone)]
pub struct FlatcarOptions {
    /// Version booted first (from USR-A).
    pub version: String,
    /// update_engine advances one step per `step`.
    pub step: Duration,
    /// How long a reboot keeps the host down.
    pub reboot_delay: Duration,
    /// An Omaha server: written as `SERVER` in /usr/share/flatcar/update.conf, and
    /// update_engine then checks there (reading GROUP and SERVER before every check).
    /// Without one, update_engine offers what a test sets with `set_offer`.
    pub omaha: Option<String>,
    /// `/etc/machine-id` (32 hex digits).
    pub machine_id: String,
}

impl FlatcarOptions {
    /// Defaults for `version`: 20 ms steps, 300 ms reboots, no Omaha server.
    pub fn new(version: &str) -> FlatcarOptions {
        FlatcarOptions {
            version: version.to_string(),
            step: Duration::from_millis(20),
            reboot_delay: Duration::from_millis(300),
            omaha: None,
            machine_id: "0123456789abcdef0123456789abcdef".into(),
        }
    }
}

impl SimHost {
    /// Starts a Flatcar host booted from USR-A on `version`, with its services on the
    /// bus at `address` and its files under `root`, without an Omaha server.
    pub async fn start_flatcar(
        address: &str,
        root: &Path,
        version: &str,
        step: Duration,
        reboot_delay: Duration,
    ) -> Result<SimHost, HostError> {
        let mut o = FlatcarOptions::new(version);
        o.step = step;
        o.reboot_delay = reboot_delay;
        SimHost::start(address, root, o).await
    }

    /// Starts a Flatcar host as `options` say.
    pub async fn start(
        address: &str,
        root: &Path,
        options: FlatcarOptions,
    ) -> Result<SimHost, HostError> {
        let FlatcarOptions {
            version,
            step,
            reboot_delay,
            omaha,
            machine_id,
        } = options;
        let version = version.as_str();
        write(root, "etc/machine-id", &format!("{machine_id}\n"))?;
        let engine_root = omaha.as_ref().map(|_| root.to_path_buf());
        let state = State {
            slot_a: true,
            version: version.to_string(),
            boots: 1,
            fail_next_boot: false,
        };
        write_boot_files(root, &state)?;
        let server = omaha
            .as_deref()
            .unwrap_or("https://public.update.flatcar-linux.net/v1/update/");
        write(
            root,
            "usr/share/flatcar/update.conf",
            &format!("GROUP=stable\nSERVER={server}\n"),
        )?;
        let first = Boot {
            number: 1,
            slot: "a".into(),
            version: version.to_string(),
            rolled_back: false,
        };
        let (boots_tx, _) = watch::channel(first);
        let state = Arc::new(Mutex::new(state));
        let engine = Arc::new(Mutex::new(new_engine(step, engine_root.as_deref())));
        let task = tokio::spawn(async {});
        let mut host = SimHost {
            root: root.to_path_buf(),
            address: address.to_string(),
            step,
            reboot_delay,
            state,
            engine,
            logind: Arc::default(),
            refuse: Arc::default(),
            ue_conn: Arc::default(),
            engine_root: engine_root.clone(),
            boots_tx,
            task,
        };
        let (logind_conn, requests) = host.bring_up().await?;
        host.task = host.spawn_reboot_loop(logind_conn, requests);
        Ok(host)
    }

    async fn bring_up(
        &self,
    ) -> Result<(zbus::Connection, mpsc::UnboundedReceiver<bool>), HostError> {
        let engine = self.engine.lock().map(|e| e.clone()).unwrap_or_default();
        let ue = update_engine::serve(&self.address, engine).await?;
        if let Ok(mut slot) = self.ue_conn.lock() {
            *slot = Some(ue);
        }
        let (logind, requests) = Logind::new();
        logind.refuse(self.refuse.lock().ok().and_then(|r| r.clone()).as_deref());
        if let Ok(mut l) = self.logind.lock() {
            *l = Some(logind.clone());
        }
        let li = logind::serve(&self.address, logind).await?;
        Ok((li, requests))
    }

    fn spawn_reboot_loop(
        &self,
        logind_conn: zbus::Connection,
        mut requests: mpsc::UnboundedReceiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let root = self.root.clone();
        let engine_root = self.engine_root.clone();
        let address = self.address.clone();
        let step = self.step;
        let delay = self.reboot_delay;
        let state = self.state.clone();
        let engine = self.engine.clone();
        let boots_tx = self.boots_tx.clone();
        let logind_slot = self.logind.clone();
        let refuse = self.refuse.clone();
        let ue_slot = self.ue_conn.clone();
        tokio::spawn(async move {
            let mut logind_conn = Some(logind_conn);
            while requests.recv().await.is_some() {
                // Power off: every service leaves the bus.
                drop(logind_conn.take());
                let ue = ue_slot.lock().ok().and_then(|mut s| s.take());
                drop(ue);
                tokio::time::sleep(delay).await;
                let staged = engine.lock().ok().and_then(|e| e.staged());
                let boot = {
                    let Ok(mut s) = state.lock() else { return };
                    s.boots += 1;
                    let rolled_back = staged.is_some() && s.fail_next_boot;
                    if let (Some(v), false) = (&staged, rolled_back) {
                        s.slot_a = !s.slot_a;
                        s.version = v.clone();
                    }
                    s.fail_next_boot = false;
                    if write_boot_files(&root, &s).is_err() {
                        return;
                    }
                    Boot {
                        number: s.boots,
                        slot: if s.slot_a { "a" } else { "b" }.into(),
                        version: s.version.clone(),
                        rolled_back,
                    }
                };
                // A fresh update_engine process: IDLE, nothing staged.
                let fresh = new_engine(step, engine_root.as_deref());
                if let Ok(mut e) = engine.lock() {
                    *e = fresh.clone();
                }
                let Ok(ue) = update_engine::serve(&address, fresh).await else {
                    return;
                };
                let (logind, rx) = Logind::new();
                logind.refuse(refuse.lock().ok().and_then(|r| r.clone()).as_deref());
                if let Ok(mut l) = logind_slot.lock() {
                    *l = Some(logind.clone());
                }
                let Ok(li) = logind::serve(&address, logind).await else {
                    return;
                };
                requests = rx;
                if let Ok(mut slot) = ue_slot.lock() {
                    *slot = Some(ue);
                }
                logind_conn = Some(li);
                let _ = boots_tx.send(boot);
            }
        })
    }

    /// Stops update_engine (`systemctl stop update-engine`): its name leaves the bus.
    pub fn stop_update_engine(&self) {
        let conn = self.ue_conn.lock().ok().and_then(|mut s| s.take());
        drop(conn);
    }

    /// Starts update_engine again as a new process. Like the real one, a restarted
    /// update_engine with an update in the spare slot reports UPDATED_NEED_REBOOT with
    /// `new_version` 0.0.0.
    pub async fn start_update_engine(&self) -> Result<(), HostError> {
        self.stop_update_engine();
        let staged = self.engine.lock().ok().and_then(|e| e.staged());
        let mut fresh = new_engine(self.step, self.engine_root.as_deref());
        if let Some(v) = staged {
            fresh = fresh.with_staged(&v).with_status(update_engine::Status {
                current_operation: "UPDATE_STATUS_UPDATED_NEED_REBOOT".into(),
                ..update_engine::Status::default()
            });
        }
        if let Ok(mut e) = self.engine.lock() {
            *e = fresh.clone();
        }
        let conn = update_engine::serve(&self.address, fresh).await?;
        if let Ok(mut slot) = self.ue_conn.lock() {
            *slot = Some(conn);
        }
        Ok(())
    }

    /// The current update_engine (replaced on every boot).
    pub fn update_engine(&self) -> UpdateEngine {
        self.engine.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Make the next boot into a staged slot fail (GRUB falls back to the old slot).
    pub fn fail_next_boot(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.fail_next_boot = true;
        }
    }

    /// Make logind refuse reboots with `OperationInProgress(message)` (None: accept).
    pub fn refuse_reboots(&self, message: Option<&str>) {
        if let Ok(mut r) = self.refuse.lock() {
            *r = message.map(str::to_string);
        }
        if let Some(l) = self.logind.lock().ok().and_then(|l| l.clone()) {
            l.refuse(message);
        }
    }

    /// Follows boots: the current one now, each new one as it completes.
    pub fn reboots(&self) -> watch::Receiver<Boot> {
        self.boots_tx.subscribe()
    }

    /// The host's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

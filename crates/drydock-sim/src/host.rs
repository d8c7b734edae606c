//! A simulated host — Flatcar or Fedora CoreOS: its files under a root directory
//! (`/etc/os-release`, `/proc/cmdline`, the boot id, Flatcar's `update.conf`), its update
//! service (update_engine or rpm-ostree) and logind on a bus, and what a reboot does to
//! them.
//!
//! A reboot (logind `Reboot`, or rpm-ostree's `FinalizeDeployment`) takes the services off
//! the bus, waits, then boots. Flatcar: into the spare USR slot when update_engine staged a
//! version there, or — when told that boot fails — back into the old slot, as GRUB does
//! when the new slot's one try is used up (a rollback). Fedora CoreOS: into the staged
//! deployment if it was finalized (a still-locked one is dropped), or back into the old
//! one when told that boot fails. Either way the boot id changes and the services come
//! back as new processes (new owners of their bus names); update_engine starts in IDLE,
//! rpm-ostree with the deployments on disk.
//!
//! How the agent survives a simulated reboot: it is a process of the host, so whoever
//! runs it (a test, the demo) restarts it when [`SimHost::reboots`] reports a boot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::logind::{self, Logind};
use crate::rpm_ostree::{self, RpmOstree};
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
    /// Slot booted (`a` or `b`; on CoreOS the booted commit checksum).
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

/// The running update service (None while stopped or powered off).
enum Updater {
    Engine(#[allow(dead_code)] zbus::Connection),
    Ostree(#[allow(dead_code)] rpm_ostree::Daemon),
}

/// The simulated host.
pub struct SimHost {
    root: PathBuf,
    address: String,
    step: Duration,
    reboot_delay: Duration,
    state: Arc<Mutex<State>>,
    engine: Arc<Mutex<UpdateEngine>>,
    /// Set on Fedora CoreOS (then there is no update_engine).
    ostree: Option<RpmOstree>,
    /// logind and its connection (None while powered off).
    logind: Arc<Mutex<Option<(Logind, zbus::Connection)>>>,
    refuse: Arc<Mutex<Option<String>>>,
    /// Set when update_engine speaks Omaha (reads the host's files before each check).
    engine_root: Option<PathBuf>,
    updater: Arc<Mutex<Option<Updater>>>,
    reboot_tx: mpsc::UnboundedSender<bool>,
    boots_tx: watch::Sender<Boot>,
    /// Power-offs so far: the host's processes (its agent) end at each.
    shutdowns_tx: watch::Sender<u32>,
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

fn write_fcos_files(root: &Path, boots: u32, d: &rpm_ostree::Deployment) -> Result<(), HostError> {
    let v = &d.version;
    let major = v.split('.').next().unwrap_or("");
    write(
        root,
        "etc/os-release",
        &format!(
            "NAME=\"Fedora Linux\"\nVERSION=\"{v} (CoreOS)\"\nID=fedora\nVERSION_ID={major}\nVARIANT=\"CoreOS\"\nVARIANT_ID=coreos\nOSTREE_VERSION='{v}'\nPRETTY_NAME=\"Fedora CoreOS {v} (simulated)\"\n"
        ),
    )?;
    write(
        root,
        "proc/cmdline",
        &format!(
            "BOOT_IMAGE=(hd0,gpt3)/boot/ostree/fedora-coreos-{c}/vmlinuz rw root=UUID=sim ostree=/ostree/boot.{n}/fedora-coreos/{c}/0 ignition.platform.id=qemu\n",
            c = d.checksum,
            n = boots % 2
        ),
    )?;
    write(
        root,
        "proc/sys/kernel/random/boot_id",
        &format!("{}\n", boot_id(boots, &root.display().to_string())),
    )
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

/// How to start a simulated Fedora CoreOS host.
#[derive(Debug, Clone)]
pub struct FcosOptions {
    /// Version booted first (`41.20241109.3.0`).
    pub version: String,
    /// Stream the origin follows (`stable`, `testing`, `next`).
    pub stream: String,
    /// rpm-ostree transactions advance one step per `step`.
    pub step: Duration,
    /// How long a reboot keeps the host down.
    pub reboot_delay: Duration,
    /// `/etc/machine-id` (32 hex digits).
    pub machine_id: String,
}

impl FcosOptions {
    /// Defaults for `version`: stream `stable`, 20 ms steps, 300 ms reboots.
    pub fn new(version: &str) -> FcosOptions {
        FcosOptions {
            version: version.to_string(),
            stream: "stable".into(),
            step: Duration::from_millis(20),
            reboot_delay: Duration::from_millis(300),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
        }
    }
}

/// The ref of a Fedora CoreOS stream (`fedora/x86_64/coreos/stable`).
pub fn fcos_ref(stream: &str) -> String {
    format!("fedora/x86_64/coreos/{stream}")
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

    fn assemble(
        address: &str,
        root: &Path,
        state: State,
        first: Boot,
        step: Duration,
        reboot_delay: Duration,
    ) -> (SimHost, mpsc::UnboundedReceiver<bool>) {
        let (boots_tx, _) = watch::channel(first);
        let (shutdowns_tx, _) = watch::channel(0);
        let (reboot_tx, reboot_rx) = mpsc::unbounded_channel();
        let host = SimHost {
            root: root.to_path_buf(),
            address: address.to_string(),
            step,
            reboot_delay,
            state: Arc::new(Mutex::new(state)),
            engine: Arc::new(Mutex::new(UpdateEngine::new(step))),
            ostree: None,
            logind: Arc::default(),
            refuse: Arc::default(),
            updater: Arc::default(),
            engine_root: None,
            reboot_tx,
            boots_tx,
            shutdowns_tx,
            task: tokio::spawn(async {}),
        };
        (host, reboot_rx)
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
        let (mut host, requests) =
            SimHost::assemble(address, root, state, first, step, reboot_delay);
        host.engine = Arc::new(Mutex::new(new_engine(step, engine_root.as_deref())));
        host.engine_root = engine_root;
        host.bring_up().await?;
        host.task = host.spawn_reboot_loop(requests);
        Ok(host)
    }

    /// Starts a Fedora CoreOS host booted on `options.version` from its stream's ref, with
    /// rpm-ostree and logind on the bus at `address` and its files under `root`. The
    /// stream's remote offers only that version until [`RpmOstree::publish`] adds one
    /// (see [`SimHost::ostree`]).
    pub async fn start_fcos(
        address: &str,
        root: &Path,
        options: FcosOptions,
    ) -> Result<SimHost, HostError> {
        write(root, "etc/machine-id", &format!("{}\n", options.machine_id))?;
        let state = State {
            slot_a: true,
            version: options.version.clone(),
            boots: 1,
            fail_next_boot: false,
        };
        let (mut host, requests) = SimHost::assemble(
            address,
            root,
            state,
            Boot {
                number: 1,
                slot: rpm_ostree::checksum_of(&options.version),
                version: options.version.clone(),
                rolled_back: false,
            },
            options.step,
            options.reboot_delay,
        );
        let ostree = RpmOstree::new(
            "fedora-coreos",
            &options.version,
            &fcos_ref(&options.stream),
            options.step,
            root.join("run/rpm-ostree"),
            host.reboot_tx.clone(),
        );
        if let Some(booted) = ostree.booted() {
            write_fcos_files(root, 1, &booted)?;
        }
        host.ostree = Some(ostree);
        host.bring_up().await?;
        host.task = host.spawn_reboot_loop(requests);
        Ok(host)
    }

    /// Serves the update service and logind as new processes.
    async fn bring_up(&self) -> Result<(), HostError> {
        bring_up(
            &self.address,
            self.ostree.as_ref(),
            &self.engine,
            &self.updater,
            &self.logind,
            &self.refuse,
            &self.reboot_tx,
        )
        .await
    }

    fn spawn_reboot_loop(
        &self,
        mut requests: mpsc::UnboundedReceiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let root = self.root.clone();
        let engine_root = self.engine_root.clone();
        let address = self.address.clone();
        let step = self.step;
        let delay = self.reboot_delay;
        let state = self.state.clone();
        let engine = self.engine.clone();
        let ostree = self.ostree.clone();
        let boots_tx = self.boots_tx.clone();
        let shutdowns_tx = self.shutdowns_tx.clone();
        let logind_slot = self.logind.clone();
        let refuse = self.refuse.clone();
        let updater = self.updater.clone();
        let reboot_tx = self.reboot_tx.clone();
        tokio::spawn(async move {
            while requests.recv().await.is_some() {
                // Power off: the host's processes end, every service leaves the bus.
                shutdowns_tx.send_modify(|n| *n += 1);
                let old = updater.lock().ok().and_then(|mut s| s.take());
                drop(old);
                if let Ok(mut l) = logind_slot.lock() {
                    *l = None;
                }
                tokio::time::sleep(delay).await;
                let fail = state
                    .lock()
                    .map(|mut s| std::mem::take(&mut s.fail_next_boot))
                    .unwrap_or(false);
                let boot = match &ostree {
                    Some(o) => {
                        let Some((booted, rolled_back)) = o.boot(fail) else {
                            return;
                        };
                        let Ok(mut s) = state.lock() else { return };
                        s.boots += 1;
                        s.version = booted.version.clone();
                        if write_fcos_files(&root, s.boots, &booted).is_err() {
                            return;
                        }
                        Boot {
                            number: s.boots,
                            slot: booted.checksum,
                            version: booted.version,
                            rolled_back,
                        }
                    }
                    None => {
                        let staged = engine.lock().ok().and_then(|e| e.staged());
                        let Ok(mut s) = state.lock() else { return };
                        s.boots += 1;
                        let rolled_back = staged.is_some() && fail;
                        if let (Some(v), false) = (&staged, rolled_back) {
                            s.slot_a = !s.slot_a;
                            s.version = v.clone();
                        }
                        if write_boot_files(&root, &s).is_err() {
                            return;
                        }
                        // A fresh update_engine process: IDLE, nothing staged.
                        if let Ok(mut e) = engine.lock() {
                            *e = new_engine(step, engine_root.as_deref());
                        }
                        Boot {
                            number: s.boots,
                            slot: if s.slot_a { "a" } else { "b" }.into(),
                            version: s.version.clone(),
                            rolled_back,
                        }
                    }
                };
                // Requests made while the host was going down die with it.
                while requests.try_recv().is_ok() {}
                if bring_up(
                    &address,
                    ostree.as_ref(),
                    &engine,
                    &updater,
                    &logind_slot,
                    &refuse,
                    &reboot_tx,
                )
                .await
                .is_err()
                {
                    return;
                }
                let _ = boots_tx.send(boot);
            }
        })
    }

    /// Stops the update service (`systemctl stop update-engine` / `rpm-ostreed`): its name
    /// leaves the bus.
    pub fn stop_update_engine(&self) {
        let old = self.updater.lock().ok().and_then(|mut s| s.take());
        drop(old);
    }

    /// Starts the update service again as a new process. Like the real one, a restarted
    /// update_engine with an update in the spare slot reports UPDATED_NEED_REBOOT with
    /// `new_version` 0.0.0; rpm-ostree comes back with the deployments on disk.
    pub async fn start_update_engine(&self) -> Result<(), HostError> {
        self.stop_update_engine();
        if self.ostree.is_none() {
            let staged = self.engine.lock().ok().and_then(|e| e.staged());
            let mut fresh = new_engine(self.step, self.engine_root.as_deref());
            if let Some(v) = staged {
                fresh = fresh.with_staged(&v).with_status(update_engine::Status {
                    current_operation: "UPDATE_STATUS_UPDATED_NEED_REBOOT".into(),
                    ..update_engine::Status::default()
                });
            }
            if let Ok(mut e) = self.engine.lock() {
                *e = fresh;
            }
        }
        serve_updater(
            &self.address,
            self.ostree.as_ref(),
            &self.engine,
            &self.updater,
        )
        .await
    }

    /// The current update_engine (replaced on every boot; unused on CoreOS).
    pub fn update_engine(&self) -> UpdateEngine {
        self.engine.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The simulated rpm-ostree (and its remote), on a CoreOS host.
    pub fn ostree(&self) -> Option<&RpmOstree> {
        self.ostree.as_ref()
    }

    /// Make the next boot into a staged update fail (GRUB falls back to the old slot;
    /// on CoreOS the old deployment boots).
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
        if let Some(l) = self
            .logind
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|(l, _)| l.clone()))
        {
            l.refuse(message);
        }
    }

    /// Follows boots: the current one now, each new one as it completes.
    pub fn reboots(&self) -> watch::Receiver<Boot> {
        self.boots_tx.subscribe()
    }

    /// The number of power-offs so far, changing as each begins: whoever runs the host's
    /// agent stops it then, as a real shutdown ends every process of the host (an agent
    /// left running across the downtime could act on the next boot with stale reads).
    pub fn shutdowns(&self) -> watch::Receiver<u32> {
        self.shutdowns_tx.subscribe()
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

async fn serve_updater(
    address: &str,
    ostree: Option<&RpmOstree>,
    engine: &Arc<Mutex<UpdateEngine>>,
    slot: &Arc<Mutex<Option<Updater>>>,
) -> Result<(), HostError> {
    let updater = match ostree {
        Some(o) => Updater::Ostree(rpm_ostree::serve(address, o.clone()).await?),
        None => {
            let e = engine.lock().map(|e| e.clone()).unwrap_or_default();
            Updater::Engine(update_engine::serve(address, e).await?)
        }
    };
    if let Ok(mut s) = slot.lock() {
        *s = Some(updater);
    }
    Ok(())
}

/// Serves the update service and logind as new processes (after a boot, or at start).
async fn bring_up(
    address: &str,
    ostree: Option<&RpmOstree>,
    engine: &Arc<Mutex<UpdateEngine>>,
    updater: &Arc<Mutex<Option<Updater>>>,
    logind_slot: &Arc<Mutex<Option<(Logind, zbus::Connection)>>>,
    refuse: &Arc<Mutex<Option<String>>>,
    reboot_tx: &mpsc::UnboundedSender<bool>,
) -> Result<(), HostError> {
    serve_updater(address, ostree, engine, updater).await?;
    let logind = Logind::with_sender(reboot_tx.clone());
    logind.refuse(refuse.lock().ok().and_then(|r| r.clone()).as_deref());
    let conn = logind::serve(address, logind.clone()).await?;
    if let Ok(mut l) = logind_slot.lock() {
        *l = Some((logind, conn));
    }
    Ok(())
}

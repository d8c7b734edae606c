//! A simulated rpm-ostree daemon (`org.projectatomic.rpmostree1`), with exactly the
//! interfaces of `upstream/org.projectatomic.rpmostree1.xml`: the Sysroot object, the
//! booted OS's object (OS and OSExperimental) and, for every transaction, a peer-to-peer
//! D-Bus server whose address the method returns (the Transaction interface at `/`).
//!
//! What is simulated, as rpm-ostree does it:
//! - `Deployments` (boot order: staged first, then booted, then rollback) with `id`,
//!   `osname`, `serial`, `checksum`, `version`, `timestamp`, `origin`, `booted`, `staged`,
//!   `pinned` and, on a staged deployment, `finalization-locked`; `PropertiesChanged` when
//!   they change.
//! - `UpdateDeployment` (`set-refspec`, `set-revision` as a checksum, `revision=` or
//!   `version=`; options `lock-finalization`, `allow-downgrade`, `skip-branch-check`,
//!   `reboot`, `initiating-command-line`), `Rebase`, `Upgrade`, `Deploy` and
//!   `FinalizeDeployment` (checks the checksum and the lock, unlocks and reboots). A
//!   method returns at once with a transaction address; the work starts when a client
//!   calls `Start` there, reports `TaskBegin`/`PercentProgress`/`Message`, and ends with
//!   `Finished(success, error_message)`. A client that connects after the end gets
//!   `Finished` on `Start`. One transaction at a time: another method while one runs fails
//!   with `org.projectatomic.rpmostreed.Error.UpdateInProgress` (the same method from the
//!   same client gets the running transaction's address, as upstream).
//! - The remote: each ref has a history of commits ([`RpmOstree::publish`]); a commit's
//!   checksum is the SHA-256 of its version, its timestamp the version's date.
//! - A staged deployment still locked at a reboot is dropped (it lived in `/run`), so the
//!   host comes back on the old version: only `FinalizeDeployment` applies a locked update.
//!
//! Methods drydock never calls (package layering, kernel arguments, initramfs, rpm diffs,
//! repositories, …) are present with their upstream signatures and answer
//! `org.freedesktop.DBus.Error.NotSupported`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use zbus::fdo;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Str, Value};

/// Bus name.
pub const BUS_NAME: &str = "org.projectatomic.rpmostree1";
/// The Sysroot object.
pub const SYSROOT_PATH: &str = "/org/projectatomic/rpmostree1/Sysroot";
/// The Sysroot interface.
pub const SYSROOT_INTERFACE: &str = "org.projectatomic.rpmostree1.Sysroot";
/// The per-OS interface.
pub const OS_INTERFACE: &str = "org.projectatomic.rpmostree1.OS";
/// The transaction interface (on the peer-to-peer connection, at `/`).
pub const TRANSACTION_INTERFACE: &str = "org.projectatomic.rpmostree1.Transaction";
/// The remote every simulated origin names.
pub const REMOTE: &str = "fedora";

/// How long a finished transaction's socket still answers late clients.
const LINGER: Duration = Duration::from_secs(10);

/// The object path of an OS (`fedora-coreos` → `/org/projectatomic/rpmostree1/fedora_coreos`).
pub fn os_path(osname: &str) -> String {
    let clean: String = osname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("/org/projectatomic/rpmostree1/{clean}")
}

/// The commit checksum the simulated remote gives `version`.
pub fn checksum_of(version: &str) -> String {
    let digest = Sha256::digest(format!("fcos-commit:{version}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch of the date in a CoreOS version (`41.20241109.3.0`), plus the
/// respin, so later builds of a stream are later in time.
fn timestamp_of(version: &str) -> u64 {
    let mut parts = version.split('.');
    let _major = parts.next();
    let date = parts.next().unwrap_or("19700101");
    let respin: u64 = parts.nth(1).and_then(|r| r.parse().ok()).unwrap_or(0);
    let num = |r: std::ops::Range<usize>| -> i64 {
        date.get(r).and_then(|s| s.parse().ok()).unwrap_or(1)
    };
    let (y, m, d) = (num(0..4), num(4..6), num(6..8));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days.max(0) as u64) * 86_400 + respin * 60
}

/// One deployment, as rpm-ostree describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// `fedora-coreos-<checksum>.<serial>`.
    pub id: String,
    /// OS name.
    pub osname: String,
    /// Deployment serial.
    pub serial: i32,
    /// Commit checksum.
    pub checksum: String,
    /// Commit version.
    pub version: String,
    /// Commit timestamp.
    pub timestamp: u64,
    /// Origin refspec (`fedora:fedora/x86_64/coreos/stable`).
    pub origin: String,
    /// The running deployment.
    pub booted: bool,
    /// Staged for the next boot.
    pub staged: bool,
    /// Pinned (never pruned).
    pub pinned: bool,
    /// Staged with `lock-finalization` and not yet finalized.
    pub finalization_locked: bool,
}

impl Deployment {
    fn to_dict(&self) -> HashMap<String, OwnedValue> {
        let s = |v: &str| OwnedValue::from(Str::from(v.to_string()));
        let mut m = HashMap::new();
        m.insert("id".into(), s(&self.id));
        m.insert("osname".into(), s(&self.osname));
        m.insert("serial".into(), OwnedValue::from(self.serial));
        m.insert("checksum".into(), s(&self.checksum));
        m.insert("version".into(), s(&self.version));
        m.insert("timestamp".into(), OwnedValue::from(self.timestamp));
        m.insert("origin".into(), s(&self.origin));
        m.insert("booted".into(), OwnedValue::from(self.booted));
        m.insert("staged".into(), OwnedValue::from(self.staged));
        m.insert("pinned".into(), OwnedValue::from(self.pinned));
        if self.staged {
            m.insert(
                "finalization-locked".into(),
                OwnedValue::from(self.finalization_locked),
            );
        }
        m
    }
}

#[derive(Debug, Clone)]
struct Commit {
    version: String,
    checksum: String,
    timestamp: u64,
}

#[derive(Debug, Clone)]
struct Active {
    method: String,
    sender: String,
    address: String,
}

#[derive(Debug)]
struct Inner {
    osname: String,
    deployments: Vec<Deployment>,
    /// ref (without the remote) → commits, oldest first.
    remote: BTreeMap<String, Vec<Commit>>,
    active: Option<Active>,
    clients: Vec<String>,
    serial: i32,
    transactions: u32,
    fail_next: Option<String>,
    conn: Option<zbus::Connection>,
}

/// The simulated daemon's state; clones share it. It outlives the bus connection that
/// serves it, as the deployments on disk outlive the daemon process.
#[derive(Debug, Clone)]
pub struct RpmOstree {
    inner: Arc<Mutex<Inner>>,
    step: Duration,
    run_dir: PathBuf,
    reboots: mpsc::UnboundedSender<bool>,
}

/// rpm-ostree's own D-Bus errors (`org.projectatomic.rpmostreed.Error.*`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.projectatomic.rpmostreed.Error")]
pub enum Fault {
    /// Transparent zbus error (the `org.freedesktop.DBus.Error.*` ones).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Generic failure.
    Failed(String),
    /// Another transaction is running.
    UpdateInProgress(String),
    /// Not a valid refspec.
    InvalidRefspec(String),
}

fn fdo_fault(e: fdo::Error) -> Fault {
    Fault::ZBus(zbus::Error::FDO(Box::new(e)))
}

fn not_simulated<T>(method: &str) -> Result<T, Fault> {
    Err(fdo_fault(fdo::Error::NotSupported(format!(
        "{method} is not simulated by drydock-sim"
    ))))
}

type Dict = HashMap<String, OwnedValue>;

fn opt_bool(d: &Dict, key: &str) -> Result<Option<bool>, Fault> {
    match d.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(fdo_fault(fdo::Error::InvalidArgs(format!(
            "option {key:?} must be of type 'b', got '{}'",
            other.value_signature()
        )))),
    }
}

fn opt_str(d: &Dict, key: &str) -> Result<Option<String>, Fault> {
    match d.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.to_string())),
        Some(other) => Err(fdo_fault(fdo::Error::InvalidArgs(format!(
            "option {key:?} must be of type 's', got '{}'",
            other.value_signature()
        )))),
    }
}

/// Which commit a deploy asks for.
#[derive(Debug, Clone)]
enum Revision {
    Head,
    Checksum(String),
    Version(String),
}

fn parse_revision(s: &str) -> Revision {
    if let Some(c) = s.strip_prefix("revision=") {
        Revision::Checksum(c.to_string())
    } else if let Some(v) = s.strip_prefix("version=") {
        Revision::Version(v.to_string())
    } else {
        Revision::Checksum(s.to_string())
    }
}

#[derive(Debug, Clone)]
enum Work {
    Deploy {
        refspec: Option<String>,
        revision: Revision,
        lock: bool,
        allow_downgrade: bool,
        skip_branch_check: bool,
        reboot: bool,
    },
    Finalize {
        checksum: Option<String>,
        allow_unlocked: bool,
    },
}

/// Splits `remote:ref` (or a bare ref, which keeps `current`'s remote).
fn split_refspec(refspec: &str, current_remote: &str) -> Result<(String, String), String> {
    let (remote, r) = match refspec.split_once(':') {
        Some((remote, r)) => (remote.to_string(), r.to_string()),
        None => (current_remote.to_string(), refspec.to_string()),
    };
    if r.is_empty() || r.starts_with('/') || r.contains("..") || r.contains(char::is_whitespace) {
        return Err(format!("Invalid refspec {refspec:?}"));
    }
    Ok((remote, r))
}

impl RpmOstree {
    /// A daemon for `osname`, booted on `version` from `refspec` (`fedora/x86_64/coreos/stable`),
    /// whose transactions advance one step per `step`, put their sockets under `run_dir`
    /// and ask for reboots on `reboots`.
    pub fn new(
        osname: &str,
        version: &str,
        refspec: &str,
        step: Duration,
        run_dir: PathBuf,
        reboots: mpsc::UnboundedSender<bool>,
    ) -> RpmOstree {
        let checksum = checksum_of(version);
        let booted = Deployment {
            id: format!("{osname}-{checksum}.0"),
            osname: osname.to_string(),
            serial: 0,
            checksum: checksum.clone(),
            version: version.to_string(),
            timestamp: timestamp_of(version),
            origin: format!("{REMOTE}:{refspec}"),
            booted: true,
            staged: false,
            pinned: false,
            finalization_locked: false,
        };
        let mut remote = BTreeMap::new();
        remote.insert(
            refspec.to_string(),
            vec![Commit {
                version: version.to_string(),
                checksum,
                timestamp: timestamp_of(version),
            }],
        );
        RpmOstree {
            inner: Arc::new(Mutex::new(Inner {
                osname: osname.to_string(),
                deployments: vec![booted],
                remote,
                active: None,
                clients: Vec::new(),
                serial: 0,
                transactions: 0,
                fail_next: None,
                conn: None,
            })),
            step,
            run_dir,
            reboots,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut i| f(&mut i))
    }

    /// Publishes `version` as the new head of `refspec` on the remote (the stream moves on).
    pub fn publish(&self, refspec: &str, version: &str) {
        self.with(|i| {
            i.remote
                .entry(refspec.to_string())
                .or_default()
                .push(Commit {
                    version: version.to_string(),
                    checksum: checksum_of(version),
                    timestamp: timestamp_of(version),
                })
        });
    }

    /// The deployments, in boot order.
    pub fn deployments(&self) -> Vec<Deployment> {
        self.with(|i| i.deployments.clone()).unwrap_or_default()
    }

    /// The staged deployment, if any.
    pub fn staged(&self) -> Option<Deployment> {
        self.deployments().into_iter().find(|d| d.staged)
    }

    /// The booted deployment.
    pub fn booted(&self) -> Option<Deployment> {
        self.deployments().into_iter().find(|d| d.booted)
    }

    /// Pins or unpins the deployment at `index` (what `ostree admin pin` does).
    pub fn set_pinned(&self, index: usize, pinned: bool) {
        self.with(|i| {
            if let Some(d) = i.deployments.get_mut(index) {
                d.pinned = pinned;
            }
        });
    }

    /// Makes the next transaction fail with `message` (a pull error, say).
    pub fn fail_next_transaction(&self, message: &str) {
        self.with(|i| i.fail_next = Some(message.to_string()));
    }

    /// Unique names of the clients registered with `RegisterClient` and not unregistered.
    pub fn clients(&self) -> Vec<String> {
        self.with(|i| i.clients.clone()).unwrap_or_default()
    }

    /// What a boot does to the deployments: an unlocked staged deployment becomes the
    /// booted one — unless `fail` (it does not come up and the old one boots: a
    /// rollback, reported as `true`); a locked one is dropped. Returns the booted
    /// deployment and whether this was a rollback.
    pub fn boot(&self, fail: bool) -> Option<(Deployment, bool)> {
        self.with(|i| {
            let staged = i.deployments.iter().position(|d| d.staged);
            let mut rolled_back = false;
            if let Some(s) = staged {
                let locked = i.deployments[s].finalization_locked;
                if locked || fail {
                    rolled_back = !locked;
                    i.deployments.remove(s);
                } else {
                    for d in &mut i.deployments {
                        d.booted = false;
                    }
                    let d = &mut i.deployments[s];
                    d.staged = false;
                    d.booted = true;
                    d.finalization_locked = false;
                }
            }
            prune(&mut i.deployments);
            i.active = None;
            i.deployments
                .iter()
                .find(|d| d.booted)
                .cloned()
                .map(|d| (d, rolled_back))
        })
        .flatten()
    }

    async fn notify(&self) {
        let Some(conn) = self.with(|i| i.conn.clone()).flatten() else {
            return;
        };
        let osname = self.with(|i| i.osname.clone()).unwrap_or_default();
        let server = conn.object_server();
        if let Ok(iface) = server.interface::<_, Sysroot>(SYSROOT_PATH).await {
            let emitter = iface.signal_emitter();
            let s = iface.get().await;
            let _ = s.deployments_changed(emitter).await;
            let _ = s.active_transaction_changed(emitter).await;
            let _ = s.active_transaction_path_changed(emitter).await;
        }
        if let Ok(iface) = server.interface::<_, Os>(os_path(&osname)).await {
            let emitter = iface.signal_emitter();
            let o = iface.get().await;
            let _ = o.default_deployment_changed(emitter).await;
            let _ = o.booted_deployment_changed(emitter).await;
            let _ = o.rollback_deployment_changed(emitter).await;
        }
    }

    /// Registers a transaction and opens its socket; returns its address.
    async fn begin(&self, method: &str, sender: &str, work: Work) -> Result<String, Fault> {
        let n = {
            let Ok(mut i) = self.inner.lock() else {
                return Err(Fault::Failed("daemon state poisoned".into()));
            };
            if let Some(a) = &i.active {
                if a.method == method && a.sender == sender {
                    return Ok(a.address.clone());
                }
                return Err(Fault::UpdateInProgress(format!(
                    "Transaction in progress: {} (requested by {})",
                    a.method, a.sender
                )));
            }
            i.transactions += 1;
            i.transactions
        };
        std::fs::create_dir_all(&self.run_dir)
            .map_err(|e| Fault::Failed(format!("{}: {e}", self.run_dir.display())))?;
        let path = self.run_dir.join(format!("transaction-{n}"));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| Fault::Failed(format!("{}: {e}", path.display())))?;
        let address = format!("unix:path={}", path.display());
        self.with(|i| {
            i.active = Some(Active {
                method: method.to_string(),
                sender: sender.to_string(),
                address: address.clone(),
            })
        });
        let (finished_tx, finished_rx) = watch::channel(false);
        let txn = Arc::new(Txn {
            title: method.to_string(),
            initiator: sender.to_string(),
            sim: self.clone(),
            state: Mutex::new(TxnState::default()),
            work: Mutex::new(Some(work)),
            finished_tx,
        });
        tokio::spawn(accept_loop(listener, path, txn, finished_rx));
        self.notify().await;
        Ok(address)
    }

    /// Does the work of a started transaction; Ok carries a message for `Finished`'s log.
    async fn execute(&self, txn: &Txn, work: Work) -> Result<bool, String> {
        if let Some(msg) = self.with(|i| i.fail_next.take()).flatten() {
            txn.task_begin("Receiving objects").await;
            tokio::time::sleep(self.step).await;
            return Err(msg);
        }
        match work {
            Work::Deploy {
                refspec,
                revision,
                lock,
                allow_downgrade,
                skip_branch_check,
                reboot,
            } => {
                let target = self
                    .with(|i| resolve(i, refspec.as_deref(), &revision, skip_branch_check))
                    .ok_or("daemon state poisoned")??;
                txn.task_begin(&format!("Receiving objects for {}", target.1))
                    .await;
                for pct in [0u32, 25, 50, 75, 100] {
                    tokio::time::sleep(self.step).await;
                    txn.percent("Receiving objects", pct).await;
                }
                txn.task_end("Receiving objects").await;
                let outcome = self
                    .with(|i| stage(i, target, lock, allow_downgrade))
                    .ok_or("daemon state poisoned")??;
                txn.message(&outcome).await;
                self.notify().await;
                Ok(reboot)
            }
            Work::Finalize {
                checksum,
                allow_unlocked,
            } => {
                tokio::time::sleep(self.step).await;
                self.with(|i| {
                    let Some(s) = i.deployments.iter_mut().find(|d| d.staged) else {
                        return Err("No staged deployment found".to_string());
                    };
                    if let Some(c) = &checksum
                        && *c != s.checksum
                    {
                        return Err(format!(
                            "Expected staged base checksum {c}, but found {}",
                            s.checksum
                        ));
                    }
                    if !s.finalization_locked && !allow_unlocked {
                        return Err("Staged deployment already unlocked".to_string());
                    }
                    s.finalization_locked = false;
                    Ok(())
                })
                .ok_or("daemon state poisoned")??;
                txn.message("Finalizing staged deployment; rebooting").await;
                self.notify().await;
                Ok(true)
            }
        }
    }
}

/// Keeps the booted, staged, pinned and one rollback deployment (ostree's pruning).
fn prune(deployments: &mut Vec<Deployment>) {
    let mut rollback_kept = false;
    deployments.retain(|d| {
        if d.booted || d.staged || d.pinned {
            return true;
        }
        if rollback_kept {
            return false;
        }
        rollback_kept = true;
        true
    });
}

/// (origin refspec, commit) a deploy asks for.
fn resolve(
    i: &Inner,
    refspec: Option<&str>,
    revision: &Revision,
    skip_branch_check: bool,
) -> Result<(String, String, Commit), String> {
    let booted = i
        .deployments
        .iter()
        .find(|d| d.booted)
        .ok_or("no booted deployment")?;
    let (cur_remote, cur_ref) = split_refspec(&booted.origin, REMOTE)?;
    let (remote, r) = match refspec {
        Some(s) => split_refspec(s, &cur_remote)?,
        None => (cur_remote, cur_ref),
    };
    if remote != REMOTE {
        return Err(format!("Remote \"{remote}\" not found"));
    }
    let commits = i
        .remote
        .get(&r)
        .ok_or_else(|| format!("While pulling {r}: No such branch '{r}' in repository summary"))?;
    let all = || i.remote.values().flatten();
    let commit = match revision {
        Revision::Head => commits.last().cloned(),
        Revision::Checksum(c) if skip_branch_check => all().find(|x| &x.checksum == c).cloned(),
        Revision::Checksum(c) => commits.iter().find(|x| &x.checksum == c).cloned(),
        Revision::Version(v) => commits.iter().find(|x| &x.version == v).cloned(),
    }
    .ok_or_else(|| match revision {
        Revision::Version(v) => format!("Unable to find version {v} in {r} history"),
        Revision::Checksum(c) => format!("Commit {c} is not in the history of {r}"),
        Revision::Head => format!("{r} has no commits"),
    })?;
    Ok((format!("{remote}:{r}"), commit.version.clone(), commit))
}

/// Stages `target` (replacing a staged deployment); returns what happened.
fn stage(
    i: &mut Inner,
    target: (String, String, Commit),
    lock: bool,
    allow_downgrade: bool,
) -> Result<String, String> {
    let (origin, _, commit) = target;
    let booted = i
        .deployments
        .iter()
        .find(|d| d.booted)
        .cloned()
        .ok_or("no booted deployment")?;
    if commit.checksum == booted.checksum && origin == booted.origin {
        let had_staged = i.deployments.iter().any(|d| d.staged);
        i.deployments.retain(|d| !d.staged);
        return Ok(if had_staged {
            "Staged deployment removed; the booted deployment is the target".into()
        } else {
            "No upgrade available.".into()
        });
    }
    if let Some(s) = i.deployments.iter_mut().find(|d| d.staged)
        && s.checksum == commit.checksum
        && s.origin == origin
    {
        s.finalization_locked = lock;
        return Ok("No change.".into());
    }
    if commit.timestamp < booted.timestamp && !allow_downgrade {
        return Err(format!(
            "Upgrade target revision '{}' with timestamp '{}' is chronologically older than current revision '{}' with timestamp '{}'; use --allow-downgrade to permit",
            commit.checksum, commit.timestamp, booted.checksum, booted.timestamp
        ));
    }
    i.deployments.retain(|d| !d.staged);
    i.serial += 1;
    let d = Deployment {
        id: format!("{}-{}.{}", i.osname, commit.checksum, i.serial),
        osname: i.osname.clone(),
        serial: i.serial,
        checksum: commit.checksum.clone(),
        version: commit.version.clone(),
        timestamp: commit.timestamp,
        origin,
        booted: false,
        staged: true,
        pinned: false,
        finalization_locked: lock,
    };
    i.deployments.insert(0, d);
    prune(&mut i.deployments);
    Ok(format!(
        "Staging deployment {} ({})",
        commit.version, commit.checksum
    ))
}

#[derive(Debug, Default)]
struct TxnState {
    started: bool,
    finished: Option<(bool, String)>,
    peers: Vec<zbus::Connection>,
}

#[derive(Debug)]
struct Txn {
    title: String,
    initiator: String,
    sim: RpmOstree,
    state: Mutex<TxnState>,
    work: Mutex<Option<Work>>,
    finished_tx: watch::Sender<bool>,
}

/// A signal to every peer of a transaction.
enum Sig<'a> {
    TaskBegin(&'a str),
    TaskEnd(&'a str),
    Percent(&'a str, u32),
    Message(&'a str),
    End(bool, &'a str),
}

/// The transaction object one peer sees.
#[derive(Debug, Clone)]
struct TxnObj(Arc<Txn>);

impl Txn {
    fn peers(&self) -> Vec<zbus::Connection> {
        self.state
            .lock()
            .map(|s| s.peers.clone())
            .unwrap_or_default()
    }

    async fn emit(&self, sig: Sig<'_>) {
        for conn in self.peers() {
            let Ok(e) = SignalEmitter::new(&conn, "/") else {
                continue;
            };
            let _ = match &sig {
                Sig::TaskBegin(t) => TxnObj::task_begin(&e, t).await,
                Sig::TaskEnd(t) => TxnObj::task_end(&e, t).await,
                Sig::Percent(t, p) => TxnObj::percent_progress(&e, t, *p).await,
                Sig::Message(t) => TxnObj::message(&e, t).await,
                Sig::End(ok, msg) => {
                    let _ = TxnObj::progress_end(&e).await;
                    TxnObj::finished(&e, *ok, msg).await
                }
            };
        }
    }

    async fn task_begin(&self, text: &str) {
        self.emit(Sig::TaskBegin(text)).await;
    }

    async fn task_end(&self, text: &str) {
        self.emit(Sig::TaskEnd(text)).await;
    }

    async fn percent(&self, text: &str, pct: u32) {
        self.emit(Sig::Percent(text, pct)).await;
    }

    async fn message(&self, text: &str) {
        self.emit(Sig::Message(text)).await;
    }

    async fn run(self: Arc<Self>) {
        let work = self.work.lock().ok().and_then(|mut w| w.take());
        let result = match work {
            Some(w) => self.sim.execute(&self, w).await,
            None => Err("transaction has no work".into()),
        };
        let (success, error, reboot) = match result {
            Ok(reboot) => (true, String::new(), reboot),
            Err(e) => (false, e, false),
        };
        if let Ok(mut s) = self.state.lock() {
            s.finished = Some((success, error.clone()));
        }
        self.emit(Sig::End(success, &error)).await;
        self.sim.with(|i| i.active = None);
        self.sim.notify().await;
        let _ = self.finished_tx.send(true);
        if reboot {
            let _ = self.sim.reboots.send(false);
        }
    }
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    txn: Arc<Txn>,
    mut finished: watch::Receiver<bool>,
) {
    let guid = zbus::Guid::generate();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let built = match zbus::connection::Builder::unix_stream(stream)
                    .server(guid.clone())
                    .map(|b| b.p2p())
                    .and_then(|b| b.serve_at("/", TxnObj(txn.clone())))
                {
                    Ok(b) => b.build().await,
                    Err(e) => Err(e),
                };
                if let Ok(conn) = built
                    && let Ok(mut s) = txn.state.lock()
                {
                    s.peers.push(conn);
                }
            }
            _ = async {
                let _ = finished.wait_for(|f| *f).await;
                tokio::time::sleep(LINGER).await;
            } => break,
        }
    }
    if let Ok(mut s) = txn.state.lock() {
        s.peers.clear();
    }
    let _ = std::fs::remove_file(path);
}

mod txn_iface {
    use super::*;

    #[zbus::interface(name = "org.projectatomic.rpmostree1.Transaction")]
    impl TxnObj {
        /// What the transaction does.
        #[zbus(property)]
        async fn title(&self) -> String {
            self.0.title.clone()
        }

        /// Who started it.
        #[zbus(property)]
        async fn initiating_client_description(&self) -> String {
            self.0.initiator.clone()
        }

        /// Not simulated: a started transaction runs to its end.
        async fn cancel(&self) -> Result<(), Fault> {
            not_simulated("Cancel")
        }

        /// Starts the work (the first caller) or, after the end, repeats `Finished`.
        #[zbus(out_args("started"))]
        async fn start(&self, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) -> bool {
            let (first, finished) = match self.0.state.lock() {
                Ok(mut s) => {
                    let first = !s.started;
                    s.started = true;
                    (first, s.finished.clone())
                }
                Err(_) => (false, None),
            };
            if let Some((ok, msg)) = finished {
                let _ = TxnObj::finished(&emitter, ok, &msg).await;
                return false;
            }
            if first {
                let t = self.0.clone();
                tokio::spawn(t.run());
            }
            first
        }

        /// The end of the transaction.
        #[zbus(signal)]
        pub(super) async fn finished(
            emitter: &SignalEmitter<'_>,
            success: bool,
            error_message: &str,
        ) -> zbus::Result<()>;

        /// A log line.
        #[zbus(signal)]
        pub(super) async fn message(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;

        /// A task started.
        #[zbus(signal)]
        pub(super) async fn task_begin(emitter: &SignalEmitter<'_>, text: &str)
        -> zbus::Result<()>;

        /// A task ended.
        #[zbus(signal)]
        pub(super) async fn task_end(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;

        /// Percent done.
        #[zbus(signal)]
        pub(super) async fn percent_progress(
            emitter: &SignalEmitter<'_>,
            text: &str,
            percentage: u32,
        ) -> zbus::Result<()>;

        /// Pull statistics (never emitted by the simulation; declared as upstream).
        #[zbus(signal)]
        pub(super) async fn download_progress(
            emitter: &SignalEmitter<'_>,
            time: (u64, u64),
            outstanding: (u32, u32),
            metadata: (u32, u32, u32),
            delta: (u32, u32, u32, u64),
            content: (u32, u32),
            transfer: (u64, u64),
        ) -> zbus::Result<()>;

        /// Signature checks (never emitted by the simulation; declared as upstream).
        #[zbus(signal)]
        pub(super) async fn signature_progress(
            emitter: &SignalEmitter<'_>,
            signature: Vec<OwnedValue>,
            commit: &str,
        ) -> zbus::Result<()>;

        /// Progress reporting is over.
        #[zbus(signal)]
        pub(super) async fn progress_end(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
    }
}

/// The Sysroot object.
#[derive(Debug, Clone)]
pub struct Sysroot(RpmOstree);

/// The booted OS's object.
#[derive(Debug, Clone)]
pub struct Os(RpmOstree);

/// The booted OS's experimental interface.
#[derive(Debug, Clone)]
pub struct OsExperimental;

fn sender_of(header: &Header<'_>) -> String {
    header.sender().map(|s| s.to_string()).unwrap_or_default()
}

mod sysroot_iface {
    use super::*;

    #[zbus::interface(name = "org.projectatomic.rpmostree1.Sysroot")]
    impl Sysroot {
        /// The booted OS's object.
        #[zbus(property)]
        async fn booted(&self) -> OwnedObjectPath {
            let name = self.0.with(|i| i.osname.clone()).unwrap_or_default();
            OwnedObjectPath::try_from(os_path(&name)).unwrap_or_else(|_| OwnedObjectPath::default())
        }

        /// The system root.
        #[zbus(property)]
        async fn path(&self) -> String {
            "/".into()
        }

        /// (method, sender, path) of the running transaction, or empty strings.
        #[zbus(property)]
        async fn active_transaction(&self) -> (String, String, String) {
            self.0
                .with(|i| i.active.clone())
                .flatten()
                .map(|a| (a.method, a.sender, "/".to_string()))
                .unwrap_or_default()
        }

        /// The running transaction's address, or empty.
        #[zbus(property)]
        async fn active_transaction_path(&self) -> String {
            self.0
                .with(|i| i.active.clone())
                .flatten()
                .map(|a| a.address)
                .unwrap_or_default()
        }

        /// Records the caller as a client.
        async fn register_client(
            &self,
            #[zbus(header)] header: Header<'_>,
            options: Dict,
        ) -> Result<(), Fault> {
            opt_str(&options, "id")?;
            let sender = sender_of(&header);
            self.0.with(|i| {
                if !i.clients.contains(&sender) {
                    i.clients.push(sender);
                }
            });
            Ok(())
        }

        /// Forgets the caller.
        async fn unregister_client(
            &self,
            #[zbus(header)] header: Header<'_>,
            options: Dict,
        ) -> Result<(), Fault> {
            let _ = options;
            let sender = sender_of(&header);
            self.0.with(|i| i.clients.retain(|c| *c != sender));
            Ok(())
        }

        /// Nothing to reload: the simulated state is always current.
        async fn reload(&self) {}

        /// Nothing to reload.
        async fn reload_config(&self) {}

        /// drydock drives updates, so the daemon's own policy is off.
        #[zbus(property)]
        async fn automatic_update_policy(&self) -> String {
            "none".into()
        }

        /// The object of OS `name` (`""`: the booted one).
        #[zbus(name = "GetOS", out_args("object_path"))]
        async fn get_os(&self, name: String) -> Result<OwnedObjectPath, Fault> {
            let osname = self.0.with(|i| i.osname.clone()).unwrap_or_default();
            if !name.is_empty() && name != osname {
                return Err(Fault::Failed(format!("OS name \"{name}\" not found")));
            }
            OwnedObjectPath::try_from(os_path(&osname)).map_err(|e| Fault::ZBus(e.into()))
        }

        /// Every deployment, in boot order.
        #[zbus(property)]
        async fn deployments(&self) -> Vec<Dict> {
            self.0
                .deployments()
                .iter()
                .map(Deployment::to_dict)
                .collect()
        }
    }
}

fn deploy_options(options: &Dict, set_rev_or_ref: bool) -> Result<(bool, bool, bool, bool), Fault> {
    Ok((
        opt_bool(options, "lock-finalization")?.unwrap_or(false),
        opt_bool(options, "allow-downgrade")?.unwrap_or(set_rev_or_ref),
        opt_bool(options, "skip-branch-check")?.unwrap_or(false),
        opt_bool(options, "reboot")?.unwrap_or(false),
    ))
}

mod os_iface {
    use super::*;

    #[zbus::interface(name = "org.projectatomic.rpmostree1.OS")]
    impl Os {
        /// The booted deployment.
        #[zbus(property)]
        async fn booted_deployment(&self) -> Dict {
            self.0.booted().map(|d| d.to_dict()).unwrap_or_default()
        }

        /// The deployment the next boot uses.
        #[zbus(property)]
        async fn default_deployment(&self) -> Dict {
            self.0
                .deployments()
                .first()
                .map(Deployment::to_dict)
                .unwrap_or_default()
        }

        /// The deployment a rollback would boot.
        #[zbus(property)]
        async fn rollback_deployment(&self) -> Dict {
            self.0
                .deployments()
                .iter()
                .find(|d| !d.booted && !d.staged)
                .map(Deployment::to_dict)
                .unwrap_or_default()
        }

        /// Not simulated: empty.
        #[zbus(property)]
        async fn cached_update(&self) -> Dict {
            Dict::new()
        }

        /// Not simulated.
        #[zbus(property)]
        async fn has_cached_update_rpm_diff(&self) -> bool {
            false
        }

        /// Not simulated (automatic updates are off).
        #[zbus(out_args("enabled", "transaction_address"))]
        async fn automatic_update_trigger(&self, options: Dict) -> Result<(bool, String), Fault> {
            let _ = options;
            Ok((false, String::new()))
        }

        /// The OS name.
        #[zbus(property)]
        async fn name(&self) -> String {
            self.0.with(|i| i.osname.clone()).unwrap_or_default()
        }

        /// Not simulated.
        #[zbus(out_args("result"))]
        async fn get_deployments_rpm_diff(
            &self,
            deployid0: String,
            deployid1: String,
        ) -> Result<Vec<(String, u32, Dict)>, Fault> {
            let _ = (deployid0, deployid1);
            not_simulated("GetDeploymentsRpmDiff")
        }

        /// Deploys `revision` (a checksum or `version=`).
        #[zbus(out_args("transaction_address"))]
        async fn deploy(
            &self,
            #[zbus(header)] header: Header<'_>,
            revision: String,
            options: Dict,
        ) -> Result<String, Fault> {
            let (lock, allow_downgrade, skip, reboot) = deploy_options(&options, true)?;
            let work = Work::Deploy {
                refspec: None,
                revision: parse_revision(&revision),
                lock,
                allow_downgrade,
                skip_branch_check: skip,
                reboot,
            };
            self.0.begin("Deploy", &sender_of(&header), work).await
        }

        /// Not simulated.
        #[zbus(out_args("result", "details"))]
        async fn get_cached_deploy_rpm_diff(
            &self,
            revision: String,
            packages: Vec<String>,
        ) -> Result<(Vec<(String, u32, Dict)>, Dict), Fault> {
            let _ = (revision, packages);
            not_simulated("GetCachedDeployRpmDiff")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn download_deploy_rpm_diff(
            &self,
            revision: String,
            packages: Vec<String>,
        ) -> Result<String, Fault> {
            let _ = (revision, packages);
            not_simulated("DownloadDeployRpmDiff")
        }

        /// Deploys the head of the booted origin.
        #[zbus(out_args("transaction_address"))]
        async fn upgrade(
            &self,
            #[zbus(header)] header: Header<'_>,
            options: Dict,
        ) -> Result<String, Fault> {
            let (lock, allow_downgrade, skip, reboot) = deploy_options(&options, false)?;
            let work = Work::Deploy {
                refspec: None,
                revision: Revision::Head,
                lock,
                allow_downgrade,
                skip_branch_check: skip,
                reboot,
            };
            self.0.begin("Upgrade", &sender_of(&header), work).await
        }

        /// Not simulated.
        #[zbus(out_args("result", "details"))]
        async fn get_cached_update_rpm_diff(
            &self,
            deployid: String,
        ) -> Result<(Vec<(String, u32, Dict)>, Dict), Fault> {
            let _ = deployid;
            not_simulated("GetCachedUpdateRpmDiff")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn download_update_rpm_diff(&self) -> Result<String, Fault> {
            not_simulated("DownloadUpdateRpmDiff")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn rollback(&self, options: Dict) -> Result<String, Fault> {
            let _ = options;
            not_simulated("Rollback")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn clear_rollback_target(&self, options: Dict) -> Result<String, Fault> {
            let _ = options;
            not_simulated("ClearRollbackTarget")
        }

        /// Stages the head (or option `revision`) of `refspec`. No finalization lock:
        /// upstream's `Rebase` has no such option.
        #[zbus(out_args("transaction_address"))]
        async fn rebase(
            &self,
            #[zbus(header)] header: Header<'_>,
            options: Dict,
            refspec: String,
            packages: Vec<String>,
        ) -> Result<String, Fault> {
            if !packages.is_empty() {
                return not_simulated("Rebase with packages");
            }
            split_refspec(&refspec, REMOTE).map_err(Fault::InvalidRefspec)?;
            opt_bool(&options, "skip-purge")?;
            let revision = opt_str(&options, "revision")?
                .map(|r| parse_revision(&r))
                .unwrap_or(Revision::Head);
            let work = Work::Deploy {
                refspec: Some(refspec),
                revision,
                lock: false,
                allow_downgrade: true,
                skip_branch_check: false,
                reboot: opt_bool(&options, "reboot")?.unwrap_or(false),
            };
            self.0.begin("Rebase", &sender_of(&header), work).await
        }

        /// Not simulated.
        #[zbus(out_args("result", "details"))]
        async fn get_cached_rebase_rpm_diff(
            &self,
            refspec: String,
            packages: Vec<String>,
        ) -> Result<(Vec<(String, u32, Dict)>, Dict), Fault> {
            let _ = (refspec, packages);
            not_simulated("GetCachedRebaseRpmDiff")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn download_rebase_rpm_diff(
            &self,
            refspec: String,
            packages: Vec<String>,
        ) -> Result<String, Fault> {
            let _ = (refspec, packages);
            not_simulated("DownloadRebaseRpmDiff")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn pkg_change(
            &self,
            options: Dict,
            packages_added: Vec<String>,
            packages_removed: Vec<String>,
        ) -> Result<String, Fault> {
            let _ = (options, packages_added, packages_removed);
            not_simulated("PkgChange")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn set_initramfs_state(
            &self,
            regenerate: bool,
            args: Vec<String>,
            options: Dict,
        ) -> Result<String, Fault> {
            let _ = (regenerate, args, options);
            not_simulated("SetInitramfsState")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn initramfs_etc(
            &self,
            track: Vec<String>,
            untrack: Vec<String>,
            untrack_all: bool,
            force_sync: bool,
            options: Dict,
        ) -> Result<String, Fault> {
            let _ = (track, untrack, untrack_all, force_sync, options);
            not_simulated("InitramfsEtc")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn kernel_args(
            &self,
            existing_kernel_arg_string: String,
            kernel_args_added: Vec<String>,
            kernel_args_replaced: Vec<String>,
            kernel_args_removed: Vec<String>,
            options: Dict,
        ) -> Result<String, Fault> {
            let _ = (
                existing_kernel_arg_string,
                kernel_args_added,
                kernel_args_replaced,
                kernel_args_removed,
                options,
            );
            not_simulated("KernelArgs")
        }

        /// Not simulated.
        #[zbus(out_args("bootconfig"))]
        async fn get_deployment_boot_config(
            &self,
            deployid: String,
            is_pending: bool,
        ) -> Result<Dict, Fault> {
            let _ = (deployid, is_pending);
            not_simulated("GetDeploymentBootConfig")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn cleanup(&self, elements: Vec<String>) -> Result<String, Fault> {
            let _ = elements;
            not_simulated("Cleanup")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn refresh_md(&self, options: Dict) -> Result<String, Fault> {
            let _ = options;
            not_simulated("RefreshMd")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn modify_yum_repo(
            &self,
            repo_id: String,
            settings: HashMap<String, String>,
        ) -> Result<String, Fault> {
            let _ = (repo_id, settings);
            not_simulated("ModifyYumRepo")
        }

        /// Not simulated.
        #[zbus(out_args("repos"))]
        async fn list_repos(&self) -> Result<Vec<Dict>, Fault> {
            not_simulated("ListRepos")
        }

        /// Stages a deployment: `set-refspec` and `set-revision` modifiers, the options
        /// in the module docs (others are refused as not simulated).
        #[zbus(out_args("transaction_address"))]
        async fn update_deployment(
            &self,
            #[zbus(header)] header: Header<'_>,
            modifiers: Dict,
            options: Dict,
        ) -> Result<String, Fault> {
            for key in modifiers.keys() {
                if key != "set-refspec" && key != "set-revision" {
                    return not_simulated(&format!("UpdateDeployment modifier {key:?}"));
                }
            }
            let refspec = opt_str(&modifiers, "set-refspec")?;
            if let Some(r) = &refspec {
                split_refspec(r, REMOTE).map_err(Fault::InvalidRefspec)?;
            }
            let revision = opt_str(&modifiers, "set-revision")?;
            for key in options.keys() {
                match key.as_str() {
                    "lock-finalization"
                    | "allow-downgrade"
                    | "skip-branch-check"
                    | "reboot"
                    | "skip-purge"
                    | "initiating-command-line" => {}
                    other => return not_simulated(&format!("UpdateDeployment option {other:?}")),
                }
            }
            opt_str(&options, "initiating-command-line")?;
            opt_bool(&options, "skip-purge")?;
            let (lock, allow_downgrade, skip, reboot) =
                deploy_options(&options, refspec.is_some() || revision.is_some())?;
            let work = Work::Deploy {
                refspec,
                revision: revision
                    .map(|r| parse_revision(&r))
                    .unwrap_or(Revision::Head),
                lock,
                allow_downgrade,
                skip_branch_check: skip,
                reboot,
            };
            self.0
                .begin("UpdateDeployment", &sender_of(&header), work)
                .await
        }

        /// Unlocks the staged deployment (checking its checksum) and reboots.
        #[zbus(out_args("transaction_address"))]
        async fn finalize_deployment(
            &self,
            #[zbus(header)] header: Header<'_>,
            options: Dict,
        ) -> Result<String, Fault> {
            let checksum = opt_str(&options, "checksum")?;
            let allow_missing = opt_bool(&options, "allow-missing-checksum")?.unwrap_or(false);
            if checksum.is_none() && !allow_missing {
                return Err(Fault::Failed(
                    "Missing expected checksum; use allow-missing-checksum to finalize without one"
                        .into(),
                ));
            }
            let work = Work::Finalize {
                checksum,
                allow_unlocked: opt_bool(&options, "allow-unlocked")?.unwrap_or(false),
            };
            self.0
                .begin("FinalizeDeployment", &sender_of(&header), work)
                .await
        }

        /// Not simulated.
        #[zbus(out_args("packages"))]
        async fn what_provides(&self, provides: Vec<String>) -> Result<Vec<Dict>, Fault> {
            let _ = provides;
            not_simulated("WhatProvides")
        }

        /// Not simulated.
        #[zbus(out_args("packages"))]
        async fn get_packages(&self, names: Vec<String>) -> Result<Vec<Dict>, Fault> {
            let _ = names;
            not_simulated("GetPackages")
        }

        /// Not simulated.
        #[zbus(out_args("packages"))]
        async fn search(&self, names: Vec<String>) -> Result<Vec<Dict>, Fault> {
            let _ = names;
            not_simulated("Search")
        }
    }

    #[zbus::interface(name = "org.projectatomic.rpmostree1.OSExperimental")]
    impl OsExperimental {
        /// Not simulated.
        #[zbus(out_args("result"))]
        async fn moo(&self, utf8: bool) -> Result<String, Fault> {
            let _ = utf8;
            not_simulated("Moo")
        }

        /// Not simulated.
        #[zbus(out_args("transaction_address"))]
        async fn live_fs(&self, options: Dict) -> Result<String, Fault> {
            let _ = options;
            not_simulated("LiveFs")
        }

        /// Not simulated.
        async fn download_packages(
            &self,
            queries: Vec<String>,
            source: String,
        ) -> Result<(), Fault> {
            let _ = (queries, source);
            not_simulated("DownloadPackages")
        }
    }
}

/// A running simulated daemon: it leaves the bus when this is dropped.
#[derive(Debug)]
pub struct Daemon {
    conn: zbus::Connection,
    sim: RpmOstree,
}

impl Daemon {
    /// The daemon's bus connection.
    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let me = self.conn.unique_name().map(|n| n.to_string());
        self.sim.with(|i| {
            let same = i
                .conn
                .as_ref()
                .is_some_and(|c| c.unique_name().map(|n| n.to_string()) == me);
            if same {
                i.conn = None;
            }
        });
    }
}

/// Serves `sim` on the bus at `address` under `org.projectatomic.rpmostree1` (a new
/// daemon process: a new owner of the name), until the returned [`Daemon`] is dropped.
pub async fn serve(address: &str, sim: RpmOstree) -> zbus::Result<Daemon> {
    let osname = sim.with(|i| i.osname.clone()).unwrap_or_default();
    let conn = zbus::connection::Builder::address(address)?
        .serve_at(SYSROOT_PATH, Sysroot(sim.clone()))?
        .serve_at(os_path(&osname), Os(sim.clone()))?
        .serve_at(os_path(&osname), OsExperimental)?
        .name(BUS_NAME)?
        .build()
        .await?;
    sim.with(|i| {
        i.conn = Some(conn.clone());
        i.clients.clear();
    });
    Ok(Daemon { conn, sim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_the_version_date() {
        assert_eq!(timestamp_of("41.20241109.3.0"), 1_731_110_400);
        assert!(timestamp_of("41.20241122.3.0") > timestamp_of("41.20241109.3.1"));
        assert!(timestamp_of("41.20241109.3.1") > timestamp_of("41.20241109.3.0"));
    }

    #[test]
    fn refspecs_keep_the_remote_and_reject_nonsense() {
        assert_eq!(
            split_refspec("fedora/x86_64/coreos/testing", "fedora").unwrap(),
            ("fedora".into(), "fedora/x86_64/coreos/testing".into())
        );
        assert_eq!(
            split_refspec("other:a/b", "fedora").unwrap(),
            ("other".into(), "a/b".into())
        );
        assert!(split_refspec("fedora:", "fedora").is_err());
        assert!(split_refspec("../etc", "fedora").is_err());
    }

    #[test]
    fn a_locked_staged_deployment_is_dropped_at_boot_and_an_unlocked_one_boots() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let sim = RpmOstree::new(
            "fedora-coreos",
            "41.20241109.3.0",
            "fedora/x86_64/coreos/stable",
            Duration::from_millis(1),
            PathBuf::from("/nonexistent"),
            tx,
        );
        sim.publish("fedora/x86_64/coreos/stable", "41.20241122.3.0");
        let head = sim
            .with(|i| resolve(i, None, &Revision::Head, false))
            .unwrap()
            .unwrap();
        sim.with(|i| stage(i, head.clone(), true, false))
            .unwrap()
            .unwrap();
        let (booted, rb) = sim.boot(false).unwrap();
        assert_eq!((booted.version.as_str(), rb), ("41.20241109.3.0", false));
        assert!(sim.staged().is_none());
        sim.with(|i| stage(i, head, false, false)).unwrap().unwrap();
        let (booted, rb) = sim.boot(false).unwrap();
        assert_eq!((booted.version.as_str(), rb), ("41.20241122.3.0", false));
        assert_eq!(sim.deployments().len(), 2, "booted and rollback");
    }
}

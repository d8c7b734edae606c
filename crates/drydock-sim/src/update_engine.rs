//! A simulated Flatcar `update_engine` on D-Bus: `com.coreos.update1` at
//! `/com/coreos/update1`, interface `com.coreos.update1.Manager`, with exactly the
//! methods, argument names and types, and signal of the upstream introspection file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::object_server::SignalEmitter;

/// Well-known bus name.
pub const BUS_NAME: &str = "com.coreos.update1";
/// Object path.
pub const PATH: &str = "/com/coreos/update1";

/// The five values of `GetStatus` and `StatusUpdate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Unix time of the last check.
    pub last_checked_time: i64,
    /// Download progress, 0.0 to 1.0.
    pub progress: f64,
    /// `UPDATE_STATUS_*`.
    pub current_operation: String,
    /// Version being or having been downloaded (`0.0.0` when unknown).
    pub new_version: String,
    /// Payload size in bytes.
    pub new_size: i64,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            last_checked_time: 0,
            progress: 0.0,
            current_operation: "UPDATE_STATUS_IDLE".into(),
            new_version: "0.0.0".into(),
            new_size: 0,
        }
    }
}

impl Status {
    /// IDLE with nothing known about an update: after a failure and after ResetStatus.
    fn clear_to_idle(&mut self) {
        let last_checked_time = self.last_checked_time;
        *self = Status {
            last_checked_time,
            ..Status::default()
        };
    }
}

/// An update the simulated server would offer on the next check.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// Version.
    pub version: String,
    /// Payload size.
    pub size: i64,
    /// Whether the download fails (the engine reports an error event, then goes idle).
    pub fail_download: bool,
}

#[derive(Debug, Default)]
struct Inner {
    status: Status,
    offer: Option<Offer>,
    busy: bool,
    /// The version written to the spare slot by the last successful attempt.
    staged: Option<String>,
}

/// The simulated service. Clone it to keep a handle for driving it from a test.
#[derive(Debug, Clone, Default)]
pub struct UpdateEngine {
    inner: Arc<Mutex<Inner>>,
    step: Duration,
    /// The host's root: when set, each check reads `GROUP` and `SERVER` from its
    /// update.conf and, with a server, speaks Omaha to it.
    root: Option<std::path::PathBuf>,
}

/// `KEY=value` pairs of a config file (missing file: none).
fn conf(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// What update_engine reads before a check: GROUP and SERVER (the administrator's
/// /etc/flatcar/update.conf over the OS's /usr/share/flatcar/update.conf), the running
/// version, the machine id and the boot id.
struct CheckInput {
    group: String,
    server: Option<String>,
    version: String,
    machine_id: String,
    boot_id: String,
}

fn check_input(root: &std::path::Path) -> CheckInput {
    let mut merged = conf(&root.join("usr/share/flatcar/update.conf"));
    merged.extend(conf(&root.join("etc/flatcar/update.conf")));
    let last = |k: &str, from: &[(String, String)]| {
        from.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let os = conf(&root.join("etc/os-release"));
    CheckInput {
        group: last("GROUP", &merged).unwrap_or_else(|| "stable".into()),
        server: last("SERVER", &merged).filter(|s| !s.is_empty()),
        version: last("VERSION_ID", &os).unwrap_or_else(|| "0.0.0".into()),
        machine_id: std::fs::read_to_string(root.join("etc/machine-id"))
            .unwrap_or_default()
            .trim()
            .to_string(),
        boot_id: std::fs::read_to_string(root.join("proc/sys/kernel/random/boot_id"))
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

impl UpdateEngine {
    /// A service in IDLE whose state machine advances one step every `step`.
    pub fn new(step: Duration) -> UpdateEngine {
        UpdateEngine {
            inner: Arc::default(),
            step,
            root: None,
        }
    }

    /// Reads update.conf and the host's identity under `root` before each check, and
    /// speaks Omaha to `SERVER` when it is set.
    pub fn with_root(mut self, root: &std::path::Path) -> UpdateEngine {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Starts in a given status (for example UPDATED_NEED_REBOOT after a restart, where
    /// upstream reports `new_version` as `0.0.0`).
    pub fn with_status(self, status: Status) -> UpdateEngine {
        if let Ok(mut i) = self.inner.lock() {
            i.status = status;
        }
        self
    }

    /// Records `version` as already staged in the spare slot (a restarted engine).
    pub fn with_staged(self, version: &str) -> UpdateEngine {
        if let Ok(mut i) = self.inner.lock() {
            i.staged = Some(version.to_string());
        }
        self
    }

    /// What the next check finds.
    pub fn set_offer(&self, offer: Option<Offer>) {
        if let Ok(mut i) = self.inner.lock() {
            i.offer = offer;
        }
    }

    /// The version the last successful attempt staged in the spare slot, if any.
    pub fn staged(&self) -> Option<String> {
        self.inner.lock().ok().and_then(|i| i.staged.clone())
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.inner
            .lock()
            .map(|i| i.status.clone())
            .unwrap_or_default()
    }

    async fn set(&self, emitter: &SignalEmitter<'_>, f: impl FnOnce(&mut Status)) {
        let s = {
            let Ok(mut i) = self.inner.lock() else { return };
            f(&mut i.status);
            i.status.clone()
        };
        let _ = Self::status_update(
            emitter,
            s.last_checked_time,
            s.progress,
            &s.current_operation,
            &s.new_version,
            s.new_size,
        )
        .await;
    }

    /// One update attempt, as update_engine runs it.
    async fn run_attempt(&self, emitter: SignalEmitter<'static>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.set(&emitter, |s| {
            s.current_operation = "UPDATE_STATUS_CHECKING_FOR_UPDATE".into();
            s.progress = 0.0;
        })
        .await;
        tokio::time::sleep(self.step).await;
        if let Some(root) = &self.root {
            let input = check_input(root);
            if let Some(server) = input.server.clone() {
                return self.omaha_attempt(&emitter, now, &server, &input).await;
            }
        }
        let offer = self.inner.lock().ok().and_then(|i| i.offer.clone());
        let Some(offer) = offer else {
            self.set(&emitter, |s| {
                s.last_checked_time = now;
                s.current_operation = "UPDATE_STATUS_IDLE".into();
            })
            .await;
            return;
        };
        self.set(&emitter, |s| {
            s.last_checked_time = now;
            s.current_operation = "UPDATE_STATUS_UPDATE_AVAILABLE".into();
            s.new_version = offer.version.clone();
            s.new_size = offer.size;
        })
        .await;
        for p in [0.0, 0.25, 0.5, 0.75, 1.0] {
            tokio::time::sleep(self.step).await;
            if offer.fail_download && p >= 0.5 {
                self.set(&emitter, |s| {
                    s.current_operation = "UPDATE_STATUS_REPORTING_ERROR_EVENT".into()
                })
                .await;
                tokio::time::sleep(self.step).await;
                self.set(&emitter, Status::clear_to_idle).await;
                return;
            }
            self.set(&emitter, |s| {
                s.current_operation = "UPDATE_STATUS_DOWNLOADING".into();
                s.progress = p;
            })
            .await;
        }
        for op in ["UPDATE_STATUS_VERIFYING", "UPDATE_STATUS_FINALIZING"] {
            tokio::time::sleep(self.step).await;
            self.set(&emitter, |s| s.current_operation = op.into())
                .await;
        }
        tokio::time::sleep(self.step).await;
        // The payload is in the spare slot, which now has the higher priority, one try,
        // and is not yet marked successful.
        if let Ok(mut i) = self.inner.lock() {
            i.staged = Some(offer.version.clone());
        }
        self.set(&emitter, |s| {
            s.current_operation = "UPDATE_STATUS_UPDATED_NEED_REBOOT".into()
        })
        .await;
    }
}

impl UpdateEngine {
    async fn fail(&self, emitter: &SignalEmitter<'_>, now: i64) {
        self.set(emitter, |s| {
            s.last_checked_time = now;
            s.current_operation = "UPDATE_STATUS_REPORTING_ERROR_EVENT".into();
        })
        .await;
        tokio::time::sleep(self.step).await;
        self.set(emitter, Status::clear_to_idle).await;
    }

    /// A check against an Omaha server: request, offer, download with progress, SHA-256
    /// verification against the offer, then the payload is staged.
    async fn omaha_attempt(
        &self,
        emitter: &SignalEmitter<'_>,
        now: i64,
        server: &str,
        input: &CheckInput,
    ) {
        use base64::Engine as _;
        use futures_util::StreamExt as _;
        use sha2::Digest as _;

        let request = drydock_core::omaha::build_request(&drydock_core::omaha::AppRequest {
            appid: drydock_core::omaha::FLATCAR_APP_ID.into(),
            version: input.version.clone(),
            track: input.group.clone(),
            machineid: input.machine_id.clone(),
            bootid: format!("{{{}}}", input.boot_id),
            updatecheck: true,
            events: Vec::new(),
        });
        let Ok(http) = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
        else {
            return self.fail(emitter, now).await;
        };
        let reply = match http
            .post(server)
            .header("content-type", "text/xml")
            .body(request)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        let Some(Ok(check)) = reply.map(|t| drydock_core::omaha::parse_response(&t)) else {
            return self.fail(emitter, now).await;
        };
        let offer = match check {
            drydock_core::omaha::UpdateCheck::Offer(o) => o,
            drydock_core::omaha::UpdateCheck::NoUpdate => {
                self.set(emitter, |s| {
                    s.last_checked_time = now;
                    s.current_operation = "UPDATE_STATUS_IDLE".into();
                })
                .await;
                return;
            }
            drydock_core::omaha::UpdateCheck::Error(_) => return self.fail(emitter, now).await,
        };
        let size = i64::try_from(offer.size).unwrap_or(i64::MAX);
        self.set(emitter, |s| {
            s.last_checked_time = now;
            s.current_operation = "UPDATE_STATUS_UPDATE_AVAILABLE".into();
            s.new_version = offer.version.clone();
            s.new_size = size;
        })
        .await;
        let url = format!("{}{}", offer.codebases[0], offer.package);
        let Ok(resp) = http.get(&url).send().await else {
            return self.fail(emitter, now).await;
        };
        if !resp.status().is_success() {
            return self.fail(emitter, now).await;
        }
        let mut hasher = sha2::Sha256::new();
        let mut received: u64 = 0;
        let mut reported = 0.0f64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return self.fail(emitter, now).await;
            };
            received += chunk.len() as u64;
            if received > offer.size {
                return self.fail(emitter, now).await;
            }
            hasher.update(&chunk);
            let progress = (received as f64 / offer.size.max(1) as f64).min(1.0);
            if progress - reported >= 0.25 || progress >= 1.0 {
                reported = progress;
                self.set(emitter, |s| {
                    s.current_operation = "UPDATE_STATUS_DOWNLOADING".into();
                    s.progress = progress;
                })
                .await;
                tokio::time::sleep(self.step).await;
            }
        }
        self.set(emitter, |s| {
            s.current_operation = "UPDATE_STATUS_VERIFYING".into()
        })
        .await;
        tokio::time::sleep(self.step).await;
        let digest = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
        if received != offer.size || digest != offer.sha256 {
            return self.fail(emitter, now).await;
        }
        self.set(emitter, |s| {
            s.current_operation = "UPDATE_STATUS_FINALIZING".into()
        })
        .await;
        tokio::time::sleep(self.step).await;
        if let Ok(mut i) = self.inner.lock() {
            i.staged = Some(offer.version.clone());
        }
        self.set(emitter, |s| {
            s.current_operation = "UPDATE_STATUS_UPDATED_NEED_REBOOT".into()
        })
        .await;
    }
}

/// The D-Bus interface, in its own module: the macro also generates a public signal-helper
/// trait here, which stays private to the crate.
mod iface {
    use super::*;

    #[zbus::interface(name = "com.coreos.update1.Manager")]
    impl UpdateEngine {
        /// Starts a check (and download, if an update is offered) unless one is running.
        async fn attempt_update(&self, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) {
            let start = self
                .inner
                .lock()
                .map(|mut i| {
                    let idle = !i.busy && i.status.current_operation == "UPDATE_STATUS_IDLE";
                    if idle {
                        i.busy = true;
                    }
                    idle
                })
                .unwrap_or(false);
            if start {
                let me = self.clone();
                let emitter = emitter.into_owned();
                tokio::spawn(async move {
                    me.run_attempt(emitter).await;
                    if let Ok(mut i) = me.inner.lock() {
                        i.busy = false;
                    }
                });
            }
        }

        /// Back to IDLE (what `update_engine_client -reset_status` does).
        async fn reset_status(&self, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) {
            self.set(&emitter, Status::clear_to_idle).await;
        }

        /// The current status.
        #[zbus(out_args(
            "last_checked_time",
            "progress",
            "current_operation",
            "new_version",
            "new_size"
        ))]
        async fn get_status(&self) -> (i64, f64, String, String, i64) {
            let s = self.status();
            (
                s.last_checked_time,
                s.progress,
                s.current_operation,
                s.new_version,
                s.new_size,
            )
        }

        /// Emitted on every status change.
        #[zbus(signal)]
        pub(super) async fn status_update(
            emitter: &SignalEmitter<'_>,
            last_checked_time: i64,
            progress: f64,
            current_operation: &str,
            new_version: &str,
            new_size: i64,
        ) -> zbus::Result<()>;
    }
}

/// Serves `engine` on the bus at `address` under `com.coreos.update1`. The service
/// lives as long as the returned connection.
pub async fn serve(address: &str, engine: UpdateEngine) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::address(address)?
        .serve_at(PATH, engine)?
        .name(BUS_NAME)?
        .build()
        .await
}

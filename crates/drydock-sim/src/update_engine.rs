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
}

impl UpdateEngine {
    /// A service in IDLE whose state machine advances one step every `step`.
    pub fn new(step: Duration) -> UpdateEngine {
        UpdateEngine {
            inner: Arc::default(),
            step,
        }
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

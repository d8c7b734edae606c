//! A simulated systemd-logind: `org.freedesktop.login1.Manager.Reboot(b interactive)` on
//! `/org/freedesktop/login1`. A reboot request is handed to whoever simulates the host
//! (see `host`), or refused with logind's own error when told to.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Bus name.
pub const BUS_NAME: &str = "org.freedesktop.login1";
/// Object path.
pub const PATH: &str = "/org/freedesktop/login1";

/// logind's error for a reboot it will not do.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.login1")]
pub enum LogindFault {
    /// Transparent zbus error.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Another shutdown is already under way.
    OperationInProgress(String),
}

/// The simulated service. `requests` receives one message per accepted `Reboot`.
#[derive(Debug, Clone)]
pub struct Logind {
    requests: mpsc::UnboundedSender<bool>,
    refuse: Arc<Mutex<Option<String>>>,
}

impl Logind {
    /// A logind whose accepted reboots arrive on the returned receiver (the value is the
    /// `interactive` argument).
    pub fn new() -> (Logind, mpsc::UnboundedReceiver<bool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Logind {
                requests: tx,
                refuse: Arc::default(),
            },
            rx,
        )
    }

    /// A logind whose accepted reboots are sent on `requests` (shared across boots).
    pub fn with_sender(requests: mpsc::UnboundedSender<bool>) -> Logind {
        Logind {
            requests,
            refuse: Arc::default(),
        }
    }

    /// Refuse the next reboots with `OperationInProgress(message)`; None accepts again.
    pub fn refuse(&self, message: Option<&str>) {
        if let Ok(mut r) = self.refuse.lock() {
            *r = message.map(str::to_string);
        }
    }
}

mod iface {
    use super::*;

    #[zbus::interface(name = "org.freedesktop.login1.Manager")]
    impl Logind {
        /// Reboots the (simulated) machine.
        async fn reboot(&self, interactive: bool) -> Result<(), LogindFault> {
            if let Some(msg) = self.refuse.lock().ok().and_then(|r| r.clone()) {
                return Err(LogindFault::OperationInProgress(msg));
            }
            let _ = self.requests.send(interactive);
            Ok(())
        }
    }
}

/// Serves `logind` on the bus at `address`.
pub async fn serve(address: &str, logind: Logind) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::address(address)?
        .serve_at(PATH, logind)?
        .name(BUS_NAME)?
        .build()
        .await
}

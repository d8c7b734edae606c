//! systemd-logind: `org.freedesktop.login1.Manager.Reboot(false)` on
//! `/org/freedesktop/login1` — the one call the agent makes to reboot, non-interactive so
//! no polkit prompt can hang it. Its error is checked and reported, never ignored.

use zbus::Connection;

/// Bus name.
pub const BUS_NAME: &str = "org.freedesktop.login1";
/// Object path.
pub const PATH: &str = "/org/freedesktop/login1";
/// Interface.
pub const INTERFACE: &str = "org.freedesktop.login1.Manager";

/// Why the reboot request failed.
#[derive(Debug, thiserror::Error)]
pub enum LogindError {
    /// logind is not on the bus.
    #[error("systemd-logind is not running (nobody owns {BUS_NAME})")]
    Absent,
    /// logind answered with an error (access denied, inhibited, already rebooting, ...).
    #[error("logind refused the reboot: {name}: {message}")]
    Refused {
        /// D-Bus error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The call failed on the bus.
    #[error("calling logind Reboot failed: {0}")]
    Call(#[source] Box<zbus::Error>),
}

impl LogindError {
    /// A small fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LogindError::Absent => "absent",
            LogindError::Refused { .. } => "refused",
            LogindError::Call(_) => "call",
        }
    }
}

/// A logind client on one connection (the system bus in production).
#[derive(Debug, Clone)]
pub struct Logind {
    conn: Connection,
}

impl Logind {
    /// A client over `conn`.
    pub fn new(conn: Connection) -> Logind {
        Logind { conn }
    }

    /// Asks logind to reboot now, without interactive authorization.
    pub async fn reboot(&self) -> Result<(), LogindError> {
        match self
            .conn
            .call_method(Some(BUS_NAME), PATH, Some(INTERFACE), "Reboot", &(false,))
            .await
        {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, message, _)) => {
                let name = name.to_string();
                if name == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
                {
                    Err(LogindError::Absent)
                } else {
                    Err(LogindError::Refused {
                        name,
                        message: message.unwrap_or_default(),
                    })
                }
            }
            Err(e) => Err(LogindError::Call(Box::new(e))),
        }
    }
}

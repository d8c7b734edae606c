//! Client of Flatcar's `update_engine` (`com.coreos.update1`, `/com/coreos/update1`,
//! interface `com.coreos.update1.Manager`), with the exact signatures of the upstream
//! introspection: `AttemptUpdate()`, `ResetStatus()`, `GetStatus() -> (xdssx)` and the
//! `StatusUpdate (xdssx)` signal.
//!
//! [`Client::watch`] follows the service: it reads `GetStatus` at start and whenever the
//! owner of the bus name changes (update_engine restarted), reports when the service is
//! absent, and accepts `StatusUpdate` signals only from the current owner of the name —
//! anything else on the bus could send a signal with the same interface and member.
//! Everything is read from one ordered message stream, so an owner change is always
//! handled before the signals of the new owner.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, Message};

use crate::backoff::Backoff;
use crate::owner::{Follower, Seen};

/// Well-known bus name.
pub const BUS_NAME: &str = "com.coreos.update1";
/// Object path.
pub const PATH: &str = "/com/coreos/update1";
/// Interface.
pub const INTERFACE: &str = "com.coreos.update1.Manager";
/// Signal member.
pub const SIGNAL: &str = "StatusUpdate";
/// The version update_engine reports when it does not know one.
pub const UNKNOWN_VERSION: &str = "0.0.0";

/// `current_operation` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `UPDATE_STATUS_IDLE`.
    Idle,
    /// `UPDATE_STATUS_CHECKING_FOR_UPDATE`.
    CheckingForUpdate,
    /// `UPDATE_STATUS_UPDATE_AVAILABLE`.
    UpdateAvailable,
    /// `UPDATE_STATUS_DOWNLOADING`.
    Downloading,
    /// `UPDATE_STATUS_VERIFYING`.
    Verifying,
    /// `UPDATE_STATUS_FINALIZING`.
    Finalizing,
    /// `UPDATE_STATUS_UPDATED_NEED_REBOOT`.
    UpdatedNeedReboot,
    /// `UPDATE_STATUS_REPORTING_ERROR_EVENT`.
    ReportingErrorEvent,
}

impl Operation {
    /// All operations.
    pub const ALL: [Operation; 8] = [
        Operation::Idle,
        Operation::CheckingForUpdate,
        Operation::UpdateAvailable,
        Operation::Downloading,
        Operation::Verifying,
        Operation::Finalizing,
        Operation::UpdatedNeedReboot,
        Operation::ReportingErrorEvent,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Idle => "UPDATE_STATUS_IDLE",
            Operation::CheckingForUpdate => "UPDATE_STATUS_CHECKING_FOR_UPDATE",
            Operation::UpdateAvailable => "UPDATE_STATUS_UPDATE_AVAILABLE",
            Operation::Downloading => "UPDATE_STATUS_DOWNLOADING",
            Operation::Verifying => "UPDATE_STATUS_VERIFYING",
            Operation::Finalizing => "UPDATE_STATUS_FINALIZING",
            Operation::UpdatedNeedReboot => "UPDATE_STATUS_UPDATED_NEED_REBOOT",
            Operation::ReportingErrorEvent => "UPDATE_STATUS_REPORTING_ERROR_EVENT",
        }
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown current_operation {s:?}"))
    }
}

/// What `new_version` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewVersion {
    /// No update known.
    None,
    /// This version is being, or has been, downloaded.
    Known(String),
    /// An update is staged but update_engine was restarted since, and reports `0.0.0`
    /// (a known upstream quirk): the version must come from elsewhere (the spare slot).
    UnknownAfterRestart,
}

/// A validated `GetStatus`/`StatusUpdate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Unix time of the last check (0: never).
    pub last_checked_time: i64,
    /// Download progress, 0.0 to 1.0.
    pub progress: f64,
    /// Operation.
    pub operation: Operation,
    /// New version.
    pub new_version: NewVersion,
    /// Payload size in bytes.
    pub new_size: i64,
}

impl Status {
    /// Validates the five raw values.
    pub fn from_raw(raw: (i64, f64, String, String, i64)) -> Result<Status, String> {
        let (last_checked_time, progress, op, version, new_size) = raw;
        let operation: Operation = op.parse()?;
        if !progress.is_finite() || !(0.0..=1.0).contains(&progress) {
            return Err(format!("progress {progress} is not between 0 and 1"));
        }
        if new_size < 0 {
            return Err(format!("new_size {new_size} is negative"));
        }
        if last_checked_time < 0 {
            return Err(format!("last_checked_time {last_checked_time} is negative"));
        }
        let valid_version = !version.is_empty()
            && version.len() <= 64
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if !valid_version {
            return Err(format!("new_version {version:?} is not a version"));
        }
        let new_version = match (version.as_str(), operation) {
            (UNKNOWN_VERSION, Operation::UpdatedNeedReboot) => NewVersion::UnknownAfterRestart,
            (UNKNOWN_VERSION, _) => NewVersion::None,
            (v, _) => NewVersion::Known(v.to_string()),
        };
        Ok(Status {
            last_checked_time,
            progress,
            operation,
            new_version,
            new_size,
        })
    }
}

/// Why a call to update_engine failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateEngineError {
    /// Nobody owns `com.coreos.update1`.
    #[error("update_engine is not running (nobody owns {BUS_NAME} on the bus)")]
    Absent,
    /// The call failed on the bus or in the service.
    #[error("update_engine {method} failed: {source}")]
    Call {
        /// Method.
        method: &'static str,
        /// Cause.
        #[source]
        source: Box<zbus::Error>,
    },
    /// The reply (or a signal) did not match the upstream interface.
    #[error("unexpected {what} from update_engine: {detail}")]
    UnexpectedReply {
        /// `GetStatus reply`, `StatusUpdate signal`.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The bus connection itself failed.
    #[error("D-Bus connection: {0}")]
    Connection(#[source] Box<zbus::Error>),
}

impl UpdateEngineError {
    /// A small fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpdateEngineError::Absent => "absent",
            UpdateEngineError::Call { .. } => "call",
            UpdateEngineError::UnexpectedReply { .. } => "unexpected_reply",
            UpdateEngineError::Connection(_) => "connection",
        }
    }
}

fn is_absent(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
        ),
        zbus::Error::FDO(e) => matches!(
            **e,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        _ => false,
    }
}

/// What [`Client::watch`] reports.
#[derive(Debug)]
pub enum Event {
    /// A fresh status (from `GetStatus` after start or an owner change, or a signal).
    Status(Status),
    /// update_engine is not on the bus (at start, or it went away).
    Absent,
    /// A `StatusUpdate` from a connection that does not own the name: ignored.
    ForgedSignal {
        /// The sender's unique name.
        sender: String,
    },
    /// Something could not be read; the watch goes on.
    Error(UpdateEngineError),
}

/// A client on one bus connection.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
}

impl Client {
    /// A client over `conn` (the system bus in production).
    pub fn new(conn: Connection) -> Client {
        Client { conn }
    }

    async fn call(&self, method: &'static str) -> Result<Message, UpdateEngineError> {
        self.conn
            .call_method(Some(BUS_NAME), PATH, Some(INTERFACE), method, &())
            .await
            .map_err(|e| {
                if is_absent(&e) {
                    UpdateEngineError::Absent
                } else {
                    UpdateEngineError::Call {
                        method,
                        source: Box::new(e),
                    }
                }
            })
    }

    /// `GetStatus`, validated.
    pub async fn status(&self) -> Result<Status, UpdateEngineError> {
        let reply = self.call("GetStatus").await?;
        parse_status(&reply, "GetStatus reply")
    }

    /// `AttemptUpdate`: check now (and download what is found).
    pub async fn attempt_update(&self) -> Result<(), UpdateEngineError> {
        self.call("AttemptUpdate").await.map(|_| ())
    }

    /// `ResetStatus`.
    pub async fn reset_status(&self) -> Result<(), UpdateEngineError> {
        self.call("ResetStatus").await.map(|_| ())
    }

    /// Follows update_engine until the receiver is dropped (see the module docs).
    pub async fn watch(&self) -> Result<mpsc::Receiver<Event>, UpdateEngineError> {
        let conn_err = |e: zbus::Error| UpdateEngineError::Connection(Box::new(e));
        let status_rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(INTERFACE)
            .and_then(|b| b.member(SIGNAL))
            .and_then(|b| b.path(PATH))
            .map_err(conn_err)?
            .build();
        let mut follower = Follower::start(&self.conn, BUS_NAME, status_rule, |h| {
            h.interface().map(|i| i.as_str()) == Some(INTERFACE)
                && h.member().map(|m| m.as_str()) == Some(SIGNAL)
        })
        .await
        .map_err(conn_err)?;
        let (tx, rx) = mpsc::channel(64);
        let client = self.clone();
        tokio::spawn(async move {
            let first = match follower.owner() {
                Some(_) => client.resync().await,
                None => Event::Absent,
            };
            if tx.send(first).await.is_err() {
                return;
            }
            while let Some(msg) = follower.stream.next().await {
                let Ok(msg) = msg else { continue };
                let event = match follower.classify(msg) {
                    None => continue,
                    Some(Seen::Owner(None)) => Event::Absent,
                    Some(Seen::Owner(Some(_))) => client.resync().await,
                    Some(Seen::Forged(sender)) => Event::ForgedSignal { sender },
                    Some(Seen::Signal(msg)) => match parse_status(&msg, "StatusUpdate signal") {
                        Ok(s) => Event::Status(s),
                        Err(e) => Event::Error(e),
                    },
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// `GetStatus` after an owner change; a starting service may not answer at once.
    async fn resync(&self) -> Event {
        let mut backoff = Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
            u64::from(std::process::id()),
        );
        loop {
            match self.status().await {
                Ok(s) => return Event::Status(s),
                Err(UpdateEngineError::Absent) => return Event::Absent,
                Err(e) if backoff.attempts() >= 5 => return Event::Error(e),
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }
}

fn parse_status(msg: &Message, what: &'static str) -> Result<Status, UpdateEngineError> {
    let raw = msg
        .body()
        .deserialize::<(i64, f64, String, String, i64)>()
        .map_err(|e| UpdateEngineError::UnexpectedReply {
            what,
            detail: format!("signature is not (xdssx): {e}"),
        })?;
    Status::from_raw(raw).map_err(|detail| UpdateEngineError::UnexpectedReply { what, detail })
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(op: &str, version: &str) -> (i64, f64, String, String, i64) {
        (1_700_000_000, 0.5, op.into(), version.into(), 1024)
    }

    #[test]
    fn statuses_are_validated() {
        let s = Status::from_raw(raw("UPDATE_STATUS_DOWNLOADING", "4230.0.0")).unwrap();
        assert_eq!(s.operation, Operation::Downloading);
        assert_eq!(s.new_version, NewVersion::Known("4230.0.0".into()));
        assert!(
            Status::from_raw(raw("UPDATE_STATUS_EXPLODED", "1"))
                .unwrap_err()
                .contains("unknown current_operation")
        );
        assert!(
            Status::from_raw((0, f64::NAN, "UPDATE_STATUS_IDLE".into(), "0.0.0".into(), 0))
                .unwrap_err()
                .contains("progress")
        );
        assert!(
            Status::from_raw((0, 1.5, "UPDATE_STATUS_IDLE".into(), "0.0.0".into(), 0)).is_err()
        );
        assert!(
            Status::from_raw((0, 0.0, "UPDATE_STATUS_IDLE".into(), "0.0.0".into(), -1)).is_err()
        );
        assert!(
            Status::from_raw(raw("UPDATE_STATUS_IDLE", "4230;rm -rf"))
                .unwrap_err()
                .contains("is not a version")
        );
    }

    #[test]
    fn zero_version_after_a_restart_in_need_reboot_is_unknown_not_none() {
        let s = Status::from_raw(raw("UPDATE_STATUS_UPDATED_NEED_REBOOT", "0.0.0")).unwrap();
        assert_eq!(s.new_version, NewVersion::UnknownAfterRestart);
        let s = Status::from_raw(raw("UPDATE_STATUS_IDLE", "0.0.0")).unwrap();
        assert_eq!(s.new_version, NewVersion::None);
    }

    #[test]
    fn error_kinds_are_fixed_labels() {
        assert_eq!(UpdateEngineError::Absent.kind(), "absent");
        let e = UpdateEngineError::UnexpectedReply {
            what: "x",
            detail: "y".into(),
        };
        assert_eq!(e.kind(), "unexpected_reply");
    }
}

//! Client for rpm-ostree (`org.projectatomic.rpmostree1`), following
//! `upstream/org.projectatomic.rpmostree1.xml`.
//!
//! - [`Client::register`] calls `RegisterClient` (the daemon may exit when no client is
//!   registered); [`Client::watch`] does it again whenever a new daemon takes the name.
//! - [`Client::deployments`] reads the Sysroot's `Deployments` (booted, staged, pinned,
//!   versions, checksums), strictly: a key of the wrong type is an error naming the
//!   deployment and the key. [`Client::watch`] follows its changes (`PropertiesChanged`
//!   from the current owner of the name only) and the owner itself.
//! - [`Client::update_deployment`], [`Client::rebase`] and [`Client::finalize`] call the
//!   booted OS's methods and follow the returned transaction over its peer-to-peer address
//!   (`Start`, then the signals until `Finished`). A transaction whose connection closes
//!   without `Finished` is [`RpmOstreeError::TransactionVanished`]. After a successful
//!   `FinalizeDeployment` the host reboots; the connection may close first, which is
//!   reported as success because the daemon already accepted the request.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::owner::{Follower, Seen};

use crate::backoff::Backoff;

/// Bus name.
pub const BUS_NAME: &str = "org.projectatomic.rpmostree1";
/// The Sysroot object.
pub const SYSROOT_PATH: &str = "/org/projectatomic/rpmostree1/Sysroot";
/// The Sysroot interface.
pub const SYSROOT_INTERFACE: &str = "org.projectatomic.rpmostree1.Sysroot";
/// The per-OS interface.
pub const OS_INTERFACE: &str = "org.projectatomic.rpmostree1.OS";
/// The transaction interface.
pub const TRANSACTION_INTERFACE: &str = "org.projectatomic.rpmostree1.Transaction";
/// The id drydock registers with.
pub const CLIENT_ID: &str = "drydock-agent";
/// How long a transaction may run (a slow pull of a whole OS image included).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3600);

const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// One deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Deployment id.
    pub id: String,
    /// OS name.
    pub osname: String,
    /// Commit checksum (64 hex digits).
    pub checksum: String,
    /// Commit version, when the commit has one.
    pub version: Option<String>,
    /// Origin refspec (`fedora:fedora/x86_64/coreos/stable`).
    pub origin: Option<String>,
    /// Commit timestamp.
    pub timestamp: Option<u64>,
    /// The running deployment.
    pub booted: bool,
    /// Staged for the next boot.
    pub staged: bool,
    /// Pinned.
    pub pinned: bool,
    /// Staged with `lock-finalization` and not yet finalized.
    pub finalization_locked: bool,
}

impl Deployment {
    /// The stream (the last component of the origin's ref): `stable`, `testing`, …
    pub fn stream(&self) -> Option<&str> {
        let origin = self.origin.as_deref()?;
        let r = origin.split_once(':').map_or(origin, |(_, r)| r);
        r.rsplit('/').next().filter(|s| !s.is_empty())
    }
}

/// The booted and the staged deployment among `all`.
pub fn booted_and_staged(all: &[Deployment]) -> (Option<&Deployment>, Option<&Deployment>) {
    (all.iter().find(|d| d.booted), all.iter().find(|d| d.staged))
}

/// Why a call to rpm-ostree failed.
#[derive(Debug, thiserror::Error)]
pub enum RpmOstreeError {
    /// Nobody owns `org.projectatomic.rpmostree1`.
    #[error("rpm-ostree is not running (nobody owns {BUS_NAME} on the bus)")]
    Absent,
    /// The daemon refused the call with an error of its own.
    #[error("rpm-ostree refused {method}: {name}: {message}")]
    Refused {
        /// Method.
        method: &'static str,
        /// D-Bus error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The call failed on the bus.
    #[error("rpm-ostree {method} failed: {source}")]
    Call {
        /// Method.
        method: &'static str,
        /// Cause.
        #[source]
        source: Box<zbus::Error>,
    },
    /// A reply, property or signal did not match the upstream interface.
    #[error("unexpected {what} from rpm-ostree: {detail}")]
    UnexpectedReply {
        /// What was read.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The transaction ended with `Finished(false, message)`.
    #[error("rpm-ostree {method} failed: {message}")]
    TransactionFailed {
        /// Method that started it.
        method: &'static str,
        /// `error_message`.
        message: String,
    },
    /// The transaction's connection failed or closed before `Finished`.
    #[error("rpm-ostree {method}: the transaction went away before it finished ({detail})")]
    TransactionVanished {
        /// Method that started it.
        method: &'static str,
        /// What happened.
        detail: String,
    },
    /// The bus connection itself failed.
    #[error("D-Bus connection: {0}")]
    Connection(#[source] Box<zbus::Error>),
}

impl RpmOstreeError {
    /// A small fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RpmOstreeError::Absent => "absent",
            RpmOstreeError::Refused { .. } => "refused",
            RpmOstreeError::Call { .. } => "call",
            RpmOstreeError::UnexpectedReply { .. } => "unexpected_reply",
            RpmOstreeError::TransactionFailed { .. } => "transaction_failed",
            RpmOstreeError::TransactionVanished { .. } => "transaction_vanished",
            RpmOstreeError::Connection(_) => "connection",
        }
    }
}

fn call_error(method: &'static str, e: zbus::Error) -> RpmOstreeError {
    match &e {
        zbus::Error::MethodError(name, msg, _) => match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => RpmOstreeError::Absent,
            n => RpmOstreeError::Refused {
                method,
                name: n.to_string(),
                message: msg.clone().unwrap_or_default(),
            },
        },
        zbus::Error::FDO(f)
            if matches!(
                **f,
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
            ) =>
        {
            RpmOstreeError::Absent
        }
        _ => RpmOstreeError::Call {
            method,
            source: Box::new(e),
        },
    }
}

/// What to stage with `UpdateDeployment`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateRequest {
    /// `set-refspec`: move to another ref (a stream change).
    pub refspec: Option<String>,
    /// `set-revision`: a commit checksum (or `version=V`); None: the ref's head.
    pub revision: Option<String>,
    /// `lock-finalization`: only [`Client::finalize`] applies it.
    pub lock_finalization: bool,
    /// `allow-downgrade` (upstream's default when unset).
    pub allow_downgrade: Option<bool>,
}

/// What [`Client::watch`] reports.
#[derive(Debug)]
pub enum Event {
    /// The deployments now (after start, an owner change, or a change notification).
    Deployments(Vec<Deployment>),
    /// rpm-ostree is not on the bus.
    Absent,
    /// A `PropertiesChanged` for the Sysroot from a connection that does not own the name.
    ForgedSignal {
        /// The sender's unique name.
        sender: String,
    },
    /// Something could not be read; the watch goes on.
    Error(RpmOstreeError),
}

/// A client on one bus connection.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
}

fn bad(what: &'static str, detail: String) -> RpmOstreeError {
    RpmOstreeError::UnexpectedReply { what, detail }
}

/// Parses the `Deployments` property (`aa{sv}`), strictly.
pub fn parse_deployments(value: &Value<'_>) -> Result<Vec<Deployment>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "Deployments has type '{}', expected 'aa{{sv}}'",
            value.value_signature()
        ));
    };
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let Value::Dict(dict) = item else {
            return Err(format!(
                "deployment {n} has type '{}', expected 'a{{sv}}'",
                item.value_signature()
            ));
        };
        let map: HashMap<String, OwnedValue> = HashMap::try_from(
            dict.try_clone()
                .map_err(|e| format!("deployment {n}: {e}"))?,
        )
        .map_err(|e| format!("deployment {n} is not a{{sv}}: {e}"))?;
        out.push(parse_deployment(n, &map)?);
    }
    Ok(out)
}

fn parse_deployment(n: usize, m: &HashMap<String, OwnedValue>) -> Result<Deployment, String> {
    let wrong = |key: &str, v: &Value<'_>, want: &str| {
        format!(
            "deployment {n}: key {key:?} has type '{}', expected '{want}'",
            v.value_signature()
        )
    };
    let s = |key: &str| -> Result<Option<String>, String> {
        match m.get(key).map(|v| &**v) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.to_string())),
            Some(v) => Err(wrong(key, v, "s")),
        }
    };
    let b = |key: &str| -> Result<bool, String> {
        match m.get(key).map(|v| &**v) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(wrong(key, v, "b")),
        }
    };
    let required = |key: &str| -> Result<String, String> {
        s(key)?.ok_or_else(|| format!("deployment {n} has no {key:?}"))
    };
    let checksum = required("checksum")?;
    if checksum.len() != 64 || !checksum.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "deployment {n}: checksum {checksum:?} is not 64 hex digits"
        ));
    }
    let timestamp = match m.get("timestamp").map(|v| &**v) {
        None => None,
        Some(Value::U64(t)) => Some(*t),
        Some(v) => return Err(wrong("timestamp", v, "t")),
    };
    Ok(Deployment {
        id: required("id")?,
        osname: required("osname")?,
        checksum,
        version: s("version")?,
        origin: s("origin")?,
        timestamp,
        booted: b("booted")?,
        staged: b("staged")?,
        pinned: b("pinned")?,
        finalization_locked: b("finalization-locked")?,
    })
}

type Options<'a> = HashMap<&'a str, Value<'a>>;

impl Client {
    /// A client over `conn` (the system bus in production).
    pub fn new(conn: Connection) -> Client {
        Client { conn }
    }

    async fn call<B>(
        &self,
        method: &'static str,
        path: &str,
        interface: &str,
        body: &B,
    ) -> Result<Message, RpmOstreeError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn
            .call_method(Some(BUS_NAME), path, Some(interface), method, body)
            .await
            .map_err(|e| call_error(method, e))
    }

    async fn property(&self, name: &'static str) -> Result<OwnedValue, RpmOstreeError> {
        let reply = self
            .call("Get", SYSROOT_PATH, PROPERTIES, &(SYSROOT_INTERFACE, name))
            .await?;
        reply
            .body()
            .deserialize::<OwnedValue>()
            .map_err(|e| bad("Properties.Get reply", format!("{name}: {e}")))
    }

    /// `RegisterClient({"id": "drydock-agent"})`.
    pub async fn register(&self) -> Result<(), RpmOstreeError> {
        let mut options = Options::new();
        options.insert("id", Value::from(CLIENT_ID));
        self.call(
            "RegisterClient",
            SYSROOT_PATH,
            SYSROOT_INTERFACE,
            &(options,),
        )
        .await
        .map(|_| ())
    }

    /// The Sysroot's `Deployments`, in boot order.
    pub async fn deployments(&self) -> Result<Vec<Deployment>, RpmOstreeError> {
        let v = self.property("Deployments").await?;
        parse_deployments(&v).map_err(|d| bad("Deployments property", d))
    }

    /// The booted OS's object (the Sysroot's `Booted`).
    pub async fn booted_os(&self) -> Result<OwnedObjectPath, RpmOstreeError> {
        let v = self.property("Booted").await?;
        match &*v {
            Value::ObjectPath(p) => Ok(OwnedObjectPath::from(p.to_owned())),
            other => Err(bad(
                "Booted property",
                format!("type '{}', expected 'o'", other.value_signature()),
            )),
        }
    }

    /// Stages a deployment as `req` says and waits for the transaction to finish.
    pub async fn update_deployment(&self, req: &UpdateRequest) -> Result<(), RpmOstreeError> {
        let mut modifiers = Options::new();
        if let Some(r) = &req.refspec {
            modifiers.insert("set-refspec", Value::from(r.as_str()));
        }
        if let Some(r) = &req.revision {
            modifiers.insert("set-revision", Value::from(r.as_str()));
        }
        let mut options = Options::new();
        options.insert("lock-finalization", Value::from(req.lock_finalization));
        options.insert("reboot", Value::from(false));
        options.insert("initiating-command-line", Value::from(CLIENT_ID));
        if let Some(a) = req.allow_downgrade {
            options.insert("allow-downgrade", Value::from(a));
        }
        let os = self.booted_os().await?;
        let reply = self
            .call(
                "UpdateDeployment",
                os.as_str(),
                OS_INTERFACE,
                &(modifiers, options),
            )
            .await?;
        self.follow("UpdateDeployment", &reply).await
    }

    /// `Rebase` to `refspec` (its head), and waits for the transaction to finish. Upstream's
    /// `Rebase` cannot lock finalization: a reboot for any reason applies it. To change
    /// streams under drydock's control use [`Client::update_deployment`] with `refspec`.
    pub async fn rebase(&self, refspec: &str) -> Result<(), RpmOstreeError> {
        let mut options = Options::new();
        options.insert("reboot", Value::from(false));
        let packages: Vec<String> = Vec::new();
        let os = self.booted_os().await?;
        let reply = self
            .call(
                "Rebase",
                os.as_str(),
                OS_INTERFACE,
                &(options, refspec, packages),
            )
            .await?;
        self.follow("Rebase", &reply).await
    }

    /// `FinalizeDeployment` for the staged deployment `checksum`: unlocks it and reboots
    /// the host. An already unlocked deployment is accepted (a finalize interrupted by a
    /// restart of its caller is finished, not failed).
    pub async fn finalize(&self, checksum: &str) -> Result<(), RpmOstreeError> {
        let mut options = Options::new();
        options.insert("checksum", Value::from(checksum));
        options.insert("allow-unlocked", Value::from(true));
        let os = self.booted_os().await?;
        let reply = self
            .call("FinalizeDeployment", os.as_str(), OS_INTERFACE, &(options,))
            .await?;
        match self.follow("FinalizeDeployment", &reply).await {
            // The host goes down as the transaction ends.
            Err(RpmOstreeError::TransactionVanished { .. }) => Ok(()),
            other => other,
        }
    }

    /// Connects to the transaction whose address `reply` carries, starts it and waits
    /// for `Finished`.
    async fn follow(&self, method: &'static str, reply: &Message) -> Result<(), RpmOstreeError> {
        let address: String = reply
            .body()
            .deserialize()
            .map_err(|e| bad("transaction address", format!("{method}: {e}")))?;
        let vanished = |detail: String| RpmOstreeError::TransactionVanished { method, detail };
        let run = async {
            let p2p = zbus::connection::Builder::address(address.as_str())
                .map_err(|e| bad("transaction address", format!("{address:?}: {e}")))?
                .p2p()
                .build()
                .await
                .map_err(|e| vanished(format!("connecting to {address}: {e}")))?;
            // Subscribed before Start, so no signal falls in between.
            let mut stream = MessageStream::from(&p2p);
            p2p.call_method(None::<&str>, "/", Some(TRANSACTION_INTERFACE), "Start", &())
                .await
                .map_err(|e| vanished(format!("Start: {e}")))?;
            let mut last_message = String::new();
            while let Some(msg) = stream.next().await {
                let Ok(msg) = msg else { continue };
                let h = msg.header();
                if h.message_type() != MessageType::Signal
                    || h.interface().map(|i| i.as_str()) != Some(TRANSACTION_INTERFACE)
                {
                    continue;
                }
                match h.member().map(|m| m.as_str()) {
                    Some("Finished") => {
                        let (ok, message) = msg
                            .body()
                            .deserialize::<(bool, String)>()
                            .map_err(|e| bad("Finished signal", e.to_string()))?;
                        return if ok {
                            Ok(())
                        } else {
                            let message = if message.is_empty() {
                                last_message
                            } else {
                                message
                            };
                            Err(RpmOstreeError::TransactionFailed { method, message })
                        };
                    }
                    Some("Message") => {
                        if let Ok(text) = msg.body().deserialize::<String>() {
                            tracing::debug!(method, %text, "rpm-ostree");
                            last_message = text;
                        }
                    }
                    _ => {}
                }
            }
            Err(vanished("the connection closed".into()))
        };
        tokio::time::timeout(TRANSACTION_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| {
                Err(vanished(format!(
                    "no Finished after {}s",
                    TRANSACTION_TIMEOUT.as_secs()
                )))
            })
    }

    /// Follows the deployments and the daemon until the receiver is dropped.
    pub async fn watch(&self) -> Result<mpsc::Receiver<Event>, RpmOstreeError> {
        let conn_err = |e: zbus::Error| RpmOstreeError::Connection(Box::new(e));
        let props_rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .interface(PROPERTIES)
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| b.path(SYSROOT_PATH))
            .and_then(|b| b.arg(0, SYSROOT_INTERFACE))
            .map_err(conn_err)?
            .build();
        let mut follower = Follower::start(&self.conn, BUS_NAME, props_rule, |h| {
            h.interface().map(|i| i.as_str()) == Some(PROPERTIES)
                && h.member().map(|m| m.as_str()) == Some("PropertiesChanged")
                && h.path().map(|p| p.as_str()) == Some(SYSROOT_PATH)
        })
        .await
        .map_err(conn_err)?;
        let (tx, rx) = mpsc::channel(64);
        let client = self.clone();
        tokio::spawn(async move {
            let first = match follower.owner() {
                Some(_) => client.resync(true).await,
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
                    // A new daemon: register with it, then read.
                    Some(Seen::Owner(Some(_))) => client.resync(true).await,
                    Some(Seen::Forged(sender)) => Event::ForgedSignal { sender },
                    // A change: read the deployments again (the signal may only
                    // invalidate them).
                    Some(Seen::Signal(_)) => client.resync(false).await,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Reads the deployments (registering first with a new daemon); a starting daemon
    /// may not answer at once.
    async fn resync(&self, register: bool) -> Event {
        let mut backoff = Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
            u64::from(std::process::id()),
        );
        loop {
            let result = async {
                if register {
                    self.register().await?;
                }
                self.deployments().await
            }
            .await;
            match result {
                Ok(d) => return Event::Deployments(d),
                Err(RpmOstreeError::Absent) => return Event::Absent,
                Err(e @ RpmOstreeError::UnexpectedReply { .. }) => return Event::Error(e),
                Err(e) if backoff.attempts() >= 5 => return Event::Error(e),
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{Array, Dict, Signature, Str};

    fn dict(entries: &[(&str, Value<'static>)]) -> Value<'static> {
        let mut d = Dict::new(&Signature::Str, &Signature::Variant);
        for (k, v) in entries {
            d.append(Value::from(Str::from(k.to_string())), Value::new(v.clone()))
                .unwrap();
        }
        Value::Dict(d)
    }

    fn array(items: Vec<Value<'static>>) -> Value<'static> {
        let sig = Signature::Dict {
            key: Signature::Str.into(),
            value: Signature::Variant.into(),
        };
        let mut a = Array::new(&sig);
        for i in items {
            a.append(i).unwrap();
        }
        Value::Array(a)
    }

    const SUM: &str = "8c1ca0c1a2e5a7e6f2d0fbd3f2b5c7e6a1b2c3d4e5f60718293a4b5c6d7e8f90";

    #[test]
    fn deployments_are_parsed_with_their_flags() {
        let v = array(vec![
            dict(&[
                ("id", Value::from("fedora-coreos-x.1")),
                ("osname", Value::from("fedora-coreos")),
                ("checksum", Value::from(SUM)),
                ("version", Value::from("41.20241122.3.0")),
                ("origin", Value::from("fedora:fedora/x86_64/coreos/testing")),
                ("timestamp", Value::from(1_732_233_600u64)),
                ("staged", Value::from(true)),
                ("finalization-locked", Value::from(true)),
                ("unknown-key", Value::from(7u32)),
            ]),
            dict(&[
                ("id", Value::from("fedora-coreos-y.0")),
                ("osname", Value::from("fedora-coreos")),
                ("checksum", Value::from(SUM)),
                ("booted", Value::from(true)),
                ("pinned", Value::from(true)),
            ]),
        ]);
        let d = parse_deployments(&v).unwrap();
        let (booted, staged) = booted_and_staged(&d);
        let staged = staged.unwrap();
        assert!(staged.finalization_locked);
        assert_eq!(staged.stream(), Some("testing"));
        assert_eq!(staged.timestamp, Some(1_732_233_600));
        let booted = booted.unwrap();
        assert!(booted.pinned);
        assert_eq!(booted.version, None);
    }

    #[test]
    fn wrong_types_and_missing_keys_name_the_deployment_and_key() {
        let v = array(vec![dict(&[
            ("id", Value::from("a")),
            ("osname", Value::from("fedora-coreos")),
            ("checksum", Value::from(SUM)),
            ("booted", Value::from("yes")),
        ])]);
        let e = parse_deployments(&v).unwrap_err();
        assert_eq!(e, "deployment 0: key \"booted\" has type 's', expected 'b'");
        let v = array(vec![dict(&[
            ("id", Value::from("a")),
            ("osname", Value::from("fedora-coreos")),
        ])]);
        assert_eq!(
            parse_deployments(&v).unwrap_err(),
            "deployment 0 has no \"checksum\""
        );
        let v = array(vec![dict(&[
            ("id", Value::from("a")),
            ("osname", Value::from("x")),
            ("checksum", Value::from("../../etc")),
        ])]);
        assert!(
            parse_deployments(&v)
                .unwrap_err()
                .contains("not 64 hex digits")
        );
        assert!(
            parse_deployments(&Value::from("nope"))
                .unwrap_err()
                .contains("expected 'aa{sv}'")
        );
    }

    #[test]
    fn error_kinds_are_fixed_labels() {
        assert_eq!(RpmOstreeError::Absent.kind(), "absent");
        let e = RpmOstreeError::TransactionFailed {
            method: "UpdateDeployment",
            message: "x".into(),
        };
        assert_eq!(e.kind(), "transaction_failed");
    }
}

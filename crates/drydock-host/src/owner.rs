//! Following one service on the bus: its signals, accepted only from the current owner of
//! its well-known name, and the owner itself (`NameOwnerChanged` from the bus daemon).
//! Shared by the update_engine and rpm-ostree watches.
//!
//! Both subscriptions feed one ordered [`MessageStream`], made before the owner is read,
//! so nothing falls between reading the owner and following its changes.

use zbus::message::{Header, Type as MessageType};
use zbus::{Connection, MatchRule, Message, MessageStream};

/// What one message means for the watch.
#[derive(Debug)]
pub(crate) enum Seen {
    /// The name has a new owner (Some) or none (None).
    Owner(Option<String>),
    /// The service's signal, from its owner.
    Signal(Message),
    /// The service's signal from another connection: to be ignored.
    Forged(String),
}

/// The subscribed stream and who owns the name now.
pub(crate) struct Follower {
    /// Every matching message, in order.
    pub(crate) stream: MessageStream,
    bus_name: &'static str,
    owner: Option<String>,
    is_signal: fn(&Header<'_>) -> bool,
}

impl Follower {
    /// Subscribes to `bus_name`'s owner changes and to `signal` (which `is_signal`
    /// recognises), then reads the current owner.
    pub(crate) async fn start(
        conn: &Connection,
        bus_name: &'static str,
        signal: MatchRule<'static>,
        is_signal: fn(&Header<'_>) -> bool,
    ) -> zbus::Result<Follower> {
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let owner_rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender("org.freedesktop.DBus")?
            .interface("org.freedesktop.DBus")?
            .member("NameOwnerChanged")?
            .arg(0, bus_name)?
            .build();
        let stream = MessageStream::from(conn);
        dbus.add_match_rule(owner_rule).await?;
        dbus.add_match_rule(signal).await?;
        let name = zbus::names::BusName::try_from(bus_name)?;
        let owner = dbus.get_name_owner(name).await.ok().map(|o| o.to_string());
        Ok(Follower {
            stream,
            bus_name,
            owner,
            is_signal,
        })
    }

    /// The current owner.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// What `msg` means (None: not for this watch), tracking the owner.
    pub(crate) fn classify(&mut self, msg: Message) -> Option<Seen> {
        let header = msg.header();
        if header.message_type() != MessageType::Signal {
            return None;
        }
        let member = header.member().map(|m| m.as_str()).unwrap_or("");
        let interface = header.interface().map(|i| i.as_str()).unwrap_or("");
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        if interface == "org.freedesktop.DBus" && member == "NameOwnerChanged" {
            if sender != "org.freedesktop.DBus" {
                return None;
            }
            let (name, _old, new) = msg.body().deserialize::<(String, String, String)>().ok()?;
            if name != self.bus_name {
                return None;
            }
            self.owner = (!new.is_empty()).then_some(new);
            return Some(Seen::Owner(self.owner.clone()));
        }
        if !(self.is_signal)(&header) {
            return None;
        }
        if self.owner.as_deref() != Some(sender.as_str()) {
            return Some(Seen::Forged(sender));
        }
        Some(Seen::Signal(msg))
    }
}

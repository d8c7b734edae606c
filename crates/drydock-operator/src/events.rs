//! Kubernetes Events (`events.k8s.io/v1`): what a person should see on `kubectl describe`.
//!
//! An Event that repeats one already sent — same object, type, reason and note — within
//! [`SERIES_WINDOW`] is counted into that Event's `series` instead of making a new one,
//! so a drain blocked by a budget for an hour shows as one `EvictionBlocked` Event with a
//! count, not hundreds. Only a fingerprint of each Event sent is kept (not the Event), so
//! at 5,000 nodes with three Events per update the memory this takes stays small; kube's
//! own `Recorder` keeps every Event whole for six minutes and, keying on the object's
//! resourceVersion and not the note, rarely merges a repeat and may merge two different
//! notes into one.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// Repeats within this long of the last one are counted into one Event (client-go's
/// window for Event series).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Notes are cut to this many characters (the API server refuses more than 1 KiB).
const NOTE_MAX_CHARS: usize = 1000;

/// Normal progress, or something a person should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Progress.
    Normal,
    /// Needs a look.
    Warning,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

/// An Event sent, as far as counting its repeats needs.
#[derive(Debug)]
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes the operator replica's Events.
pub struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
    /// Fingerprint (a keyed 64-bit hash of object UID, type, reason and note) of each
    /// Event sent within the window.
    sent: Mutex<HashMap<u64, Sent>>,
    fingerprint: RandomState,
    last_sweep: Mutex<Timestamp>,
}

impl Publisher {
    /// A publisher reporting as `controller`, replica `instance`.
    pub fn new(client: kube::Client, controller: &str, instance: &str) -> Publisher {
        Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            sent: Mutex::new(HashMap::new()),
            fingerprint: RandomState::new(),
            last_sweep: Mutex::new(Timestamp::now()),
        }
    }

    /// How many Events are remembered for counting repeats.
    pub fn remembered(&self) -> usize {
        self.sent.lock().map_or(0, |s| s.len())
    }

    /// Sends an Event about `regarding` (in its namespace; `default` for cluster-scoped
    /// objects such as Nodes), or counts it into the same one sent within the window.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        kind: Kind,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let note: String = note.chars().take(NOTE_MAX_CHARS).collect();
        let now = Timestamp::now();
        self.sweep(now);
        let key = self.fingerprint.hash_one((
            regarding.uid.as_deref(),
            regarding.kind.as_deref(),
            regarding.name.as_deref(),
            kind,
            reason,
            note.as_str(),
        ));
        let repeat = self.sent.lock().ok().and_then(|s| {
            s.get(&key)
                .filter(|e| now.duration_since(e.last) < SERIES_WINDOW)
                .map(|e| (e.namespace.clone(), e.name.clone(), e.count + 1))
        });
        if let Some((namespace, name, count)) = repeat {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let patch = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)},
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, namespace, name, count, now);
                    return Ok(());
                }
                // The Event expired or was deleted: send it afresh.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(kind.as_str().to_string()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let created = api.create(&PostParams::default(), &event).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.remember(key, namespace, name, 1, now);
        Ok(())
    }

    fn remember(&self, key: u64, namespace: String, name: String, count: i32, now: Timestamp) {
        if let Ok(mut s) = self.sent.lock() {
            s.insert(
                key,
                Sent {
                    namespace,
                    name,
                    count,
                    last: now,
                },
            );
        }
    }

    /// Forgets Events whose window has passed, at most once a minute.
    fn sweep(&self, now: Timestamp) {
        let Ok(mut last) = self.last_sweep.lock() else {
            return;
        };
        if now.duration_since(*last) < SignedDuration::from_mins(1) {
            return;
        }
        *last = now;
        if let Ok(mut s) = self.sent.lock() {
            s.retain(|_, e| now.duration_since(e.last) < SERIES_WINDOW);
        }
    }
}

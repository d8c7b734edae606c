//! API requests by component, verb and resource, read from the API server's audit log.
//!
//! `apiserver_request_total` has no client label, so the benchmark counts requests in the
//! audit log instead (level `Metadata`, one line per request stage), where each request
//! carries its `userAgent`. A request is counted once (by `auditID`), at the time the API
//! server received it; long-running watches are counted when they start.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use jiff::Timestamp;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(rename = "auditID")]
    audit_id: String,
    verb: String,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    request_received_timestamp: Timestamp,
}

#[derive(Debug, Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: Option<String>,
}

/// The component a user agent names: `drydock-operator/0.1.0` → `drydock-operator`,
/// `kube-scheduler/v1.37.2 (linux/amd64) kubernetes/…` → `kube-scheduler`.
pub fn component(user_agent: &str) -> String {
    let name = user_agent.split(['/', ' ']).next().unwrap_or("");
    if name.is_empty() {
        "(none)".into()
    } else {
        name.to_string()
    }
}

/// Whether `verb` changes something.
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// Request counts: component → "verb resource[/subresource]" → count.
pub type Counts = BTreeMap<String, BTreeMap<String, u64>>;

/// Counts the requests the API server received in `[from, to]`, and the lines it could
/// not read (each named in the error text of the first few).
pub fn count(log: &Path, from: Timestamp, to: Timestamp) -> anyhow::Result<(Counts, u64)> {
    let f = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut seen = HashSet::new();
    let mut counts = Counts::new();
    let mut unreadable = 0u64;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {} line {}", log.display(), i + 1))?;
        let Ok(l) = serde_json::from_str::<Line>(&line) else {
            unreadable += 1;
            continue;
        };
        if l.request_received_timestamp < from || l.request_received_timestamp > to {
            continue;
        }
        if !seen.insert(l.audit_id) {
            continue;
        }
        let what = match &l.object_ref {
            Some(o) => match &o.subresource {
                Some(s) => format!("{} {}/{}", l.verb, o.resource, s),
                None => format!("{} {}", l.verb, o.resource),
            },
            None => format!("{} (non-resource)", l.verb),
        };
        *counts
            .entry(component(&l.user_agent))
            .or_default()
            .entry(what)
            .or_default() += 1;
    }
    Ok((counts, unreadable))
}

/// Writes by `component`, with and without evictions.
pub fn writes(counts: &Counts, component: &str) -> (u64, u64) {
    let Some(c) = counts.get(component) else {
        return (0, 0);
    };
    let mut all = 0;
    let mut evictions = 0;
    for (what, n) in c {
        let verb = what.split(' ').next().unwrap_or("");
        if is_write(verb) {
            all += n;
            if what.ends_with("pods/eviction") {
                evictions += n;
            }
        }
    }
    (all, evictions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_come_from_the_user_agent() {
        assert_eq!(component("drydock-operator/0.1.0"), "drydock-operator");
        assert_eq!(
            component("kube-scheduler/v1.37.2 (linux/amd64) kubernetes/abc"),
            "kube-scheduler"
        );
        assert_eq!(component(""), "(none)");
    }

    #[test]
    fn requests_are_counted_once_inside_the_window_by_component_verb_and_resource() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("audit.log");
        let line = |id: &str, verb: &str, ua: &str, at: &str, sub: Option<&str>| {
            let mut o = serde_json::json!({"resource": "pods", "namespace": "shop"});
            if let Some(s) = sub {
                o["subresource"] = s.into();
            }
            serde_json::json!({"kind": "Event", "auditID": id, "stage": "ResponseComplete",
                "verb": verb, "userAgent": ua, "objectRef": o,
                "requestReceivedTimestamp": at})
            .to_string()
        };
        let text = [
            line(
                "1",
                "create",
                "drydock-operator/0.1.0",
                "2026-01-01T00:00:01.5Z",
                Some("eviction"),
            ),
            line(
                "2",
                "patch",
                "drydock-operator/0.1.0",
                "2026-01-01T00:00:02Z",
                None,
            ),
            // The same request's second stage.
            line(
                "2",
                "patch",
                "drydock-operator/0.1.0",
                "2026-01-01T00:00:02Z",
                None,
            ),
            line(
                "3",
                "list",
                "drydock-operator/0.1.0",
                "2026-01-01T00:00:03Z",
                None,
            ),
            // Outside the window.
            line(
                "4",
                "patch",
                "drydock-operator/0.1.0",
                "2026-01-01T00:01:00Z",
                None,
            ),
            line(
                "5",
                "patch",
                "kwok/v0.7",
                "2026-01-01T00:00:02Z",
                Some("status"),
            ),
            "not json".to_string(),
        ]
        .join("\n");
        std::fs::write(&log, text).expect("write");
        let (counts, bad) = count(
            &log,
            "2026-01-01T00:00:00Z".parse().expect("ts"),
            "2026-01-01T00:00:30Z".parse().expect("ts"),
        )
        .expect("count");
        assert_eq!(bad, 1);
        let op = &counts["drydock-operator"];
        assert_eq!(op["create pods/eviction"], 1);
        assert_eq!(op["patch pods"], 1);
        assert_eq!(op["list pods"], 1);
        assert_eq!(counts["kwok"]["patch pods/status"], 1);
        assert_eq!(writes(&counts, "drydock-operator"), (2, 1));
        assert_eq!(writes(&counts, "nobody"), (0, 0));
    }
}

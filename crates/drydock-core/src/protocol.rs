//! The node protocol: what the agent, the operator and people write on a Node.
//!
//! All keys live under `drydock.dev/`. The agent writes only [`AgentStatus`] keys (field
//! manager `drydock-agent`), the operator only [`OperatorState`] keys (field manager
//! `drydock-operator`), people (or `drydockctl`) only [`PersonRequests`] keys. Labels carry
//! what selectors filter on (`pool`, `phase`, `reboot-needed`); annotations the rest.
//!
//! Every value is parsed strictly. A garbled or forged value becomes a [`ProtocolError`]
//! naming the key, and the planner treats the node as needing a person — never a panic,
//! never a guess. Keys under the prefix that this version does not know are ignored, so a
//! newer agent does not break an older operator.
//!
//! Grant tokens: each reboot grant carries a number one higher than the node's previous
//! grant. The agent reboots only for a token above the one it last acknowledged, writes
//! the acknowledgement first, and so can never reboot twice for one grant.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;

use crate::strmap::Lookup;
use crate::version::{OsFamily, OsVersion};

/// Prefix of every drydock key.
pub const PREFIX: &str = "drydock.dev/";

/// Label and annotation keys.
pub mod keys {
    // Labels.
    /// Label (operator): the node's pool.
    pub const POOL: &str = "drydock.dev/pool";
    /// Label (operator): the node's [`Phase`](super::Phase).
    pub const PHASE: &str = "drydock.dev/phase";
    /// Label (agent): `"true"` while an update is staged and waits for a reboot.
    pub const REBOOT_NEEDED: &str = "drydock.dev/reboot-needed";

    // Agent status annotations.
    /// OS family (`flatcar`, `fcos`).
    pub const OS: &str = "drydock.dev/os";
    /// Version the node booted.
    pub const BOOTED_VERSION: &str = "drydock.dev/booted-version";
    /// Slot the node booted: `a`/`b` (Flatcar USR partition) or an rpm-ostree checksum.
    pub const BOOTED_SLOT: &str = "drydock.dev/booted-slot";
    /// Kernel boot id of the running boot; changes on every reboot.
    pub const BOOT_ID: &str = "drydock.dev/boot-id";
    /// Version staged for the next boot, if any.
    pub const STAGED_VERSION: &str = "drydock.dev/staged-version";
    /// Host update service state (see [`UpdateStatus`](super::UpdateStatus)).
    pub const UPDATE_STATUS: &str = "drydock.dev/update-status";
    /// Download progress, 0–100.
    pub const PROGRESS: &str = "drydock.dev/progress";
    /// When the host last checked for updates (RFC 3339).
    pub const LAST_CHECK: &str = "drydock.dev/last-check";
    /// Channel the host currently follows.
    pub const CHANNEL: &str = "drydock.dev/channel";
    /// Version of the agent.
    pub const AGENT_VERSION: &str = "drydock.dev/agent-version";
    /// Last grant token the agent acted on.
    pub const REBOOT_ACK: &str = "drydock.dev/reboot-ack";
    /// The agent's last error, for people (free text, bounded).
    pub const AGENT_MESSAGE: &str = "drydock.dev/agent-message";

    // Operator annotations.
    /// When the node entered its phase (RFC 3339).
    pub const PHASE_SINCE: &str = "drydock.dev/phase-since";
    /// Why the node is Held/Failed or waits: a stable code.
    pub const REASON_CODE: &str = "drydock.dev/reason-code";
    /// Why, in words.
    pub const REASON: &str = "drydock.dev/reason";
    /// Latest grant token.
    pub const REBOOT_TOKEN: &str = "drydock.dev/reboot-token";
    /// Version the grant expects the node to boot.
    pub const TARGET_VERSION: &str = "drydock.dev/target-version";
    /// Slot the node ran when the grant was made.
    pub const GRANT_SLOT: &str = "drydock.dev/grant-slot";
    /// Boot id the node had when the grant was made.
    pub const GRANT_BOOT_ID: &str = "drydock.dev/grant-boot-id";
    /// `"true"` when drydock cordoned the node (and so must uncordon it).
    pub const CORDONED: &str = "drydock.dev/cordoned";
    /// When the current drain started (RFC 3339).
    pub const DRAIN_STARTED: &str = "drydock.dev/drain-started";
    /// Channel the node's pool wants; the agent applies it.
    pub const DESIRED_CHANNEL: &str = "drydock.dev/desired-channel";
    /// The pool's version pin, carried to the node: a CoreOS agent stages only releases
    /// it allows. Absent when the pool has no pin.
    pub const VERSION_PIN: &str = "drydock.dev/version-pin";
    /// Annotation (the operator's Zincati endpoints): the release the pinned update graph
    /// last offered a node that Zincati updates; a FleetLock `pre-reboot` stages it.
    pub const ZINCATI_OFFER: &str = "drydock.dev/zincati-offer";

    // Person annotations.
    /// Set (to a reason) to hold the node; remove to let it go.
    pub const HOLD: &str = "drydock.dev/hold";
    /// Set to the node's `phase-since` to release it from Held or Failed.
    pub const RELEASE: &str = "drydock.dev/release";
}

/// Longest value accepted for free-text keys.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest value accepted for identifiers (slots, boot ids, channels, versions).
pub const MAX_ID_LEN: usize = 128;

/// Where a node is in its update, as the operator sees it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Phase {
    /// Nothing to do.
    Idle,
    /// An update is staged; waiting for its turn (the plan says why).
    Queued,
    /// Cordoned; pods are being evicted.
    Draining,
    /// The reboot is granted; waiting for the agent to acknowledge.
    RebootGranted,
    /// The agent acknowledged; the node is rebooting.
    Rebooting,
    /// Back on the target version; baking and waiting for after-reboot hooks.
    Verifying,
    /// Updated, verified and uncordoned.
    Done,
    /// Needs a person; the reason says why.
    Held,
    /// Boot verification failed (rollback, or the node never came back).
    Failed,
}

impl Phase {
    /// All phases, in lifecycle order.
    pub const ALL: [Phase; 9] = [
        Phase::Idle,
        Phase::Queued,
        Phase::Draining,
        Phase::RebootGranted,
        Phase::Rebooting,
        Phase::Verifying,
        Phase::Done,
        Phase::Held,
        Phase::Failed,
    ];

    /// The spelling on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Queued => "Queued",
            Phase::Draining => "Draining",
            Phase::RebootGranted => "RebootGranted",
            Phase::Rebooting => "Rebooting",
            Phase::Verifying => "Verifying",
            Phase::Done => "Done",
            Phase::Held => "Held",
            Phase::Failed => "Failed",
        }
    }

    /// Whether drydock is disrupting the node in this phase (it counts as unavailable).
    pub fn is_disrupting(self) -> bool {
        matches!(
            self,
            Phase::Draining | Phase::RebootGranted | Phase::Rebooting | Phase::Verifying
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

/// The host update service's state, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateStatus {
    /// Nothing happening.
    Idle,
    /// Checking for an update.
    Checking,
    /// Downloading (see progress).
    Downloading,
    /// Verifying or finalizing the download.
    Finalizing,
    /// An update is staged and needs a reboot.
    Staged,
    /// The last attempt failed (see the agent message).
    Error,
    /// The host update service is not reachable.
    Unavailable,
}

impl UpdateStatus {
    /// All values.
    pub const ALL: [UpdateStatus; 7] = [
        UpdateStatus::Idle,
        UpdateStatus::Checking,
        UpdateStatus::Downloading,
        UpdateStatus::Finalizing,
        UpdateStatus::Staged,
        UpdateStatus::Error,
        UpdateStatus::Unavailable,
    ];

    /// The spelling on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::Idle => "idle",
            UpdateStatus::Checking => "checking",
            UpdateStatus::Downloading => "downloading",
            UpdateStatus::Finalizing => "finalizing",
            UpdateStatus::Staged => "staged",
            UpdateStatus::Error => "error",
            UpdateStatus::Unavailable => "unavailable",
        }
    }
}

/// A value under a drydock key that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ProtocolError {
    /// The key.
    pub key: String,
    /// What is wrong with its value (the value is quoted, truncated if long).
    pub problem: String,
}

/// What the agent reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// OS family.
    pub os: Option<OsFamily>,
    /// Booted version.
    pub booted_version: Option<OsVersion>,
    /// Booted slot.
    pub booted_slot: Option<String>,
    /// Current boot id.
    pub boot_id: Option<String>,
    /// Staged version.
    pub staged_version: Option<OsVersion>,
    /// Update service state.
    pub update_status: Option<UpdateStatus>,
    /// Download progress.
    pub progress: Option<u8>,
    /// Last check.
    pub last_check: Option<Timestamp>,
    /// Channel followed.
    pub channel: Option<String>,
    /// Agent version.
    pub agent_version: Option<String>,
    /// Last acknowledged grant token.
    pub reboot_ack: Option<u64>,
    /// Agent's last error message.
    pub message: Option<String>,
    /// The `reboot-needed` label.
    pub reboot_needed: bool,
}

impl AgentStatus {
    /// Whether an update is staged that the node is not running yet.
    pub fn has_staged_update(&self) -> bool {
        match (&self.staged_version, &self.booted_version) {
            (Some(s), Some(b)) => s != b,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// The annotations and labels that represent this status, for the agent's apply.
    pub fn to_metadata(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.insert(k.to_string(), v);
            }
        };
        put(keys::OS, self.os.map(|o| o.as_str().to_string()));
        put(
            keys::BOOTED_VERSION,
            self.booted_version.as_ref().map(ToString::to_string),
        );
        put(keys::BOOTED_SLOT, self.booted_slot.clone());
        put(keys::BOOT_ID, self.boot_id.clone());
        put(
            keys::STAGED_VERSION,
            self.staged_version.as_ref().map(ToString::to_string),
        );
        put(
            keys::UPDATE_STATUS,
            self.update_status.map(|s| s.as_str().to_string()),
        );
        put(keys::PROGRESS, self.progress.map(|p| p.to_string()));
        put(keys::LAST_CHECK, self.last_check.map(|t| t.to_string()));
        put(keys::CHANNEL, self.channel.clone());
        put(keys::AGENT_VERSION, self.agent_version.clone());
        put(keys::REBOOT_ACK, self.reboot_ack.map(|t| t.to_string()));
        put(keys::AGENT_MESSAGE, self.message.clone());
        let mut l = BTreeMap::new();
        l.insert(
            keys::REBOOT_NEEDED.to_string(),
            self.has_staged_update().to_string(),
        );
        (a, l)
    }
}

/// What the operator has recorded about its work on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorState {
    /// Phase (Idle when absent).
    pub phase: Option<Phase>,
    /// When the phase was entered.
    pub since: Option<Timestamp>,
    /// Stable reason code.
    pub reason_code: Option<String>,
    /// Reason in words.
    pub reason: Option<String>,
    /// Latest grant token.
    pub token: Option<u64>,
    /// Version the grant expects.
    pub target_version: Option<OsVersion>,
    /// Slot at grant time.
    pub grant_slot: Option<String>,
    /// Boot id at grant time.
    pub grant_boot_id: Option<String>,
    /// Whether drydock cordoned the node.
    pub cordoned: bool,
    /// When the drain started.
    pub drain_started: Option<Timestamp>,
    /// Channel the pool wants.
    pub desired_channel: Option<String>,
    /// The pool's version pin, as text (a CoreOS agent parses it).
    pub version_pin: Option<String>,
    /// The pool label.
    pub pool: Option<String>,
}

impl OperatorState {
    /// The phase, Idle when none is recorded.
    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or(Phase::Idle)
    }

    /// The annotations and labels that represent this state, for the operator's apply.
    pub fn to_metadata(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.insert(k.to_string(), v);
            }
        };
        put(keys::PHASE_SINCE, self.since.map(|t| t.to_string()));
        put(keys::REASON_CODE, self.reason_code.clone());
        put(keys::REASON, self.reason.clone());
        put(keys::REBOOT_TOKEN, self.token.map(|t| t.to_string()));
        put(
            keys::TARGET_VERSION,
            self.target_version.as_ref().map(ToString::to_string),
        );
        put(keys::GRANT_SLOT, self.grant_slot.clone());
        put(keys::GRANT_BOOT_ID, self.grant_boot_id.clone());
        put(keys::CORDONED, self.cordoned.then(|| "true".to_string()));
        put(
            keys::DRAIN_STARTED,
            self.drain_started.map(|t| t.to_string()),
        );
        put(keys::DESIRED_CHANNEL, self.desired_channel.clone());
        put(keys::VERSION_PIN, self.version_pin.clone());
        let mut l = BTreeMap::new();
        l.insert(keys::PHASE.to_string(), self.phase().as_str().to_string());
        if let Some(p) = &self.pool {
            l.insert(keys::POOL.to_string(), p.clone());
        }
        (a, l)
    }
}

/// What people asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonRequests {
    /// Hold the node, with this reason.
    pub hold: Option<String>,
    /// Release the Held/Failed state that began at this instant.
    pub release: Option<Timestamp>,
}

/// Everything drydock reads from one Node's labels and annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The agent's part.
    pub agent: AgentStatus,
    /// The operator's part.
    pub operator: OperatorState,
    /// People's part.
    pub person: PersonRequests,
}

fn quoted(v: &str) -> String {
    if v.chars().count() > 40 {
        let short: String = v.chars().take(40).collect();
        format!("{short:?}…")
    } else {
        format!("{v:?}")
    }
}

struct Reader<'a> {
    annotations: &'a dyn Lookup,
    labels: &'a dyn Lookup,
    errors: Vec<ProtocolError>,
}

impl Reader<'_> {
    fn fail(&mut self, key: &str, value: &str, what: &str) {
        self.errors.push(ProtocolError {
            key: key.to_string(),
            problem: format!("{} {what}", quoted(value)),
        });
    }

    fn raw(&self, key: &str, label: bool) -> Option<&str> {
        let map = if label { self.labels } else { self.annotations };
        map.lookup(key)
    }

    /// The value under `key` if `valid` accepts it; otherwise an error saying it `is_not`.
    fn checked(&mut self, key: &str, valid: impl Fn(&str) -> bool, is_not: &str) -> Option<String> {
        let v = self.raw(key, false)?.to_string();
        if valid(&v) {
            Some(v)
        } else {
            self.fail(key, &v, is_not);
            None
        }
    }

    fn id(&mut self, key: &str) -> Option<String> {
        self.checked(
            key,
            |v| {
                !v.is_empty()
                    && v.len() <= MAX_ID_LEN
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:+".contains(&b))
            },
            &format!("is not an identifier (1-{MAX_ID_LEN} characters of [A-Za-z0-9-_.:+])"),
        )
    }

    fn text(&mut self, key: &str) -> Option<String> {
        self.checked(
            key,
            |v| v.len() <= MAX_TEXT_LEN && !v.chars().any(|c| c.is_control() && c != '\n'),
            &format!("is not text of at most {MAX_TEXT_LEN} bytes without control characters"),
        )
    }

    fn token(&mut self, key: &str) -> Option<u64> {
        let v = self.raw(key, false)?;
        let canonical = !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && (v == "0" || !v.starts_with('0'));
        match v.parse::<u64>() {
            Ok(n) if canonical => Some(n),
            _ => {
                let v = v.to_string();
                self.fail(
                    key,
                    &v,
                    "is not a token (a decimal number without sign or leading zeros)",
                );
                None
            }
        }
    }

    fn time(&mut self, key: &str) -> Option<Timestamp> {
        let v = self.raw(key, false)?;
        match v.parse::<Timestamp>() {
            Ok(t) => Some(t),
            Err(_) => {
                let v = v.to_string();
                self.fail(key, &v, "is not an RFC 3339 timestamp");
                None
            }
        }
    }

    fn version(&mut self, key: &str, os: Option<OsFamily>) -> Option<OsVersion> {
        let v = self.raw(key, false)?.to_string();
        let parsed = match os {
            Some(f) => OsVersion::parse(f, &v),
            None => OsVersion::parse_any(&v),
        };
        match parsed {
            Ok(p) => Some(p),
            Err(e) => {
                self.errors.push(ProtocolError {
                    key: key.to_string(),
                    problem: e.to_string(),
                });
                None
            }
        }
    }

    fn flag(&mut self, key: &str, label: bool) -> bool {
        match self.raw(key, label) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                let other = other.to_string();
                self.fail(key, &other, "is not \"true\" or \"false\"");
                false
            }
        }
    }
}

/// Reads a node's drydock state. Every field that parses is filled in; every key whose
/// value does not is reported (and its field left empty), together with contradictions
/// between keys that only a forged or corrupted node would show.
pub fn parse_node_state(
    labels: &dyn Lookup,
    annotations: &dyn Lookup,
) -> (NodeState, Vec<ProtocolError>) {
    let mut r = Reader {
        annotations,
        labels,
        errors: Vec::new(),
    };
    let os = match r.raw(keys::OS, false) {
        None => None,
        Some(v) => match v.parse::<OsFamily>() {
            Ok(f) => Some(f),
            Err(_) => {
                let v = v.to_string();
                r.fail(keys::OS, &v, "is not an OS family (flatcar or fcos)");
                None
            }
        },
    };
    let update_status = match r.raw(keys::UPDATE_STATUS, false) {
        None => None,
        Some(v) => match UpdateStatus::ALL.into_iter().find(|s| s.as_str() == v) {
            Some(s) => Some(s),
            None => {
                let v = v.to_string();
                r.fail(keys::UPDATE_STATUS, &v, "is not a known update status");
                None
            }
        },
    };
    let progress = match r.raw(keys::PROGRESS, false) {
        None => None,
        Some(v) => match v.parse::<u8>() {
            Ok(p) if p <= 100 => Some(p),
            _ => {
                let v = v.to_string();
                r.fail(keys::PROGRESS, &v, "is not a percentage 0-100");
                None
            }
        },
    };
    let agent = AgentStatus {
        os,
        booted_version: r.version(keys::BOOTED_VERSION, os),
        booted_slot: r.id(keys::BOOTED_SLOT),
        boot_id: r.id(keys::BOOT_ID),
        staged_version: r.version(keys::STAGED_VERSION, os),
        update_status,
        progress,
        last_check: r.time(keys::LAST_CHECK),
        channel: r.id(keys::CHANNEL),
        agent_version: r.id(keys::AGENT_VERSION),
        reboot_ack: r.token(keys::REBOOT_ACK),
        message: r.text(keys::AGENT_MESSAGE),
        reboot_needed: r.flag(keys::REBOOT_NEEDED, true),
    };
    let phase = match r.raw(keys::PHASE, true) {
        None => None,
        Some(v) => match v.parse::<Phase>() {
            Ok(p) => Some(p),
            Err(()) => {
                let v = v.to_string();
                r.fail(keys::PHASE, &v, "is not a phase");
                None
            }
        },
    };
    let pool = r.raw(keys::POOL, true).map(str::to_string);
    let operator = OperatorState {
        phase,
        since: r.time(keys::PHASE_SINCE),
        reason_code: r.id(keys::REASON_CODE),
        reason: r.text(keys::REASON),
        token: r.token(keys::REBOOT_TOKEN),
        target_version: r.version(keys::TARGET_VERSION, os),
        grant_slot: r.id(keys::GRANT_SLOT),
        grant_boot_id: r.id(keys::GRANT_BOOT_ID),
        cordoned: r.flag(keys::CORDONED, false),
        drain_started: r.time(keys::DRAIN_STARTED),
        desired_channel: r.id(keys::DESIRED_CHANNEL),
        version_pin: r.text(keys::VERSION_PIN),
        pool,
    };
    let person = PersonRequests {
        hold: r.text(keys::HOLD).map(|s| {
            if s.trim().is_empty() {
                "held by a person".into()
            } else {
                s
            }
        }),
        release: r.time(keys::RELEASE),
    };

    // Contradictions between keys.
    let since_unreadable = r.errors.iter().any(|e| e.key == keys::PHASE_SINCE);
    let mut contradiction = |key: &str, problem: String| {
        r.errors.push(ProtocolError {
            key: key.to_string(),
            problem,
        })
    };
    if let (Some(ack), tok) = (agent.reboot_ack, operator.token)
        && tok.is_none_or(|t| ack > t)
    {
        contradiction(
            keys::REBOOT_ACK,
            format!(
                "acknowledges token {ack} but the highest token granted is {}",
                tok.map_or("none".to_string(), |t| t.to_string())
            ),
        );
    }
    if let Some(p) = operator.phase {
        if matches!(p, Phase::RebootGranted | Phase::Rebooting)
            && (operator.token.is_none()
                || operator.target_version.is_none()
                || operator.grant_boot_id.is_none())
        {
            contradiction(
                keys::PHASE,
                format!(
                    "is {p} but {}, {} or {} is missing",
                    keys::REBOOT_TOKEN,
                    keys::TARGET_VERSION,
                    keys::GRANT_BOOT_ID
                ),
            );
        }
        if p != Phase::Idle && operator.since.is_none() && !since_unreadable {
            contradiction(keys::PHASE_SINCE, format!("is missing for phase {p}"));
        }
    }
    let errors = r.errors;
    (
        NodeState {
            agent,
            operator,
            person,
        },
        errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_well_formed_node_parses_completely() {
        let labels = map(&[
            (keys::PHASE, "RebootGranted"),
            (keys::REBOOT_NEEDED, "true"),
            (keys::POOL, "workers"),
        ]);
        let ann = map(&[
            (keys::OS, "flatcar"),
            (keys::BOOTED_VERSION, "4081.2.0"),
            (keys::BOOTED_SLOT, "a"),
            (keys::BOOT_ID, "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"),
            (keys::STAGED_VERSION, "4230.0.0"),
            (keys::UPDATE_STATUS, "staged"),
            (keys::PROGRESS, "100"),
            (keys::REBOOT_ACK, "6"),
            (keys::PHASE_SINCE, "2026-11-22T10:00:00Z"),
            (keys::REBOOT_TOKEN, "7"),
            (keys::TARGET_VERSION, "4230.0.0"),
            (keys::GRANT_SLOT, "a"),
            (keys::GRANT_BOOT_ID, "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"),
            (keys::CORDONED, "true"),
            ("drydock.dev/some-future-key", "whatever"),
        ]);
        let (s, errs) = parse_node_state(&labels, &ann);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(s.operator.phase(), Phase::RebootGranted);
        assert_eq!(s.operator.token, Some(7));
        assert_eq!(s.agent.reboot_ack, Some(6));
        assert!(s.operator.cordoned);
        assert!(s.agent.has_staged_update());
        assert_eq!(s.operator.pool.as_deref(), Some("workers"));
    }

    #[test]
    fn garbage_values_become_errors_naming_the_key() {
        let labels = map(&[(keys::PHASE, "Exploded"), (keys::REBOOT_NEEDED, "yes")]);
        let ann = map(&[
            (keys::OS, "windows"),
            (keys::BOOTED_VERSION, "banana"),
            (keys::REBOOT_TOKEN, "007"),
            (keys::PROGRESS, "250"),
            (keys::BOOT_ID, "x y"),
            (keys::PHASE_SINCE, "yesterday"),
            (keys::CORDONED, "TRUE"),
        ]);
        let (s, errs) = parse_node_state(&labels, &ann);
        let keys_with_errors: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys_with_errors,
            vec![
                keys::OS,
                keys::PROGRESS,
                keys::BOOTED_VERSION,
                keys::BOOT_ID,
                keys::REBOOT_NEEDED,
                keys::PHASE,
                keys::PHASE_SINCE,
                keys::REBOOT_TOKEN,
                keys::CORDONED
            ],
            "{errs:#?}"
        );
        assert_eq!(
            errs[7].to_string(),
            "drydock.dev/reboot-token: \"007\" is not a token (a decimal number without sign or leading zeros)"
        );
        assert_eq!(s.operator.phase, None);
        assert_eq!(s.operator.token, None);
    }

    #[test]
    fn forged_acknowledgements_and_half_grants_are_contradictions() {
        let labels = map(&[(keys::PHASE, "RebootGranted")]);
        let ann = map(&[
            (keys::REBOOT_ACK, "9"),
            (keys::REBOOT_TOKEN, "3"),
            (keys::PHASE_SINCE, "2026-11-22T10:00:00Z"),
        ]);
        let (_, errs) = parse_node_state(&labels, &ann);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "drydock.dev/reboot-ack: acknowledges token 9 but the highest token granted is 3",
                "drydock.dev/phase: is RebootGranted but drydock.dev/reboot-token, drydock.dev/target-version or drydock.dev/grant-boot-id is missing",
            ]
        );
    }

    #[test]
    fn long_values_are_quoted_truncated() {
        let long = "x".repeat(5000);
        let ann = map(&[(keys::AGENT_MESSAGE, long.as_str())]);
        let (_, errs) = parse_node_state(&BTreeMap::new(), &ann);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].problem.len() < 200, "{}", errs[0].problem);
    }

    #[test]
    fn metadata_round_trips() {
        let state = OperatorState {
            phase: Some(Phase::Draining),
            since: Some("2026-11-22T10:00:00Z".parse().unwrap()),
            cordoned: true,
            drain_started: Some("2026-11-22T10:00:00Z".parse().unwrap()),
            token: Some(4),
            pool: Some("workers".into()),
            ..Default::default()
        };
        let (a, l) = state.to_metadata();
        let (parsed, errs) = parse_node_state(&l, &a);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(parsed.operator, state);
        let agent = AgentStatus {
            os: Some(OsFamily::Fcos),
            booted_version: Some(OsVersion::parse(OsFamily::Fcos, "41.20241109.3.0").unwrap()),
            staged_version: Some(OsVersion::parse(OsFamily::Fcos, "41.20241122.3.0").unwrap()),
            booted_slot: Some("abc123".into()),
            boot_id: Some("b1".into()),
            reboot_needed: true,
            ..Default::default()
        };
        let (a, l) = agent.to_metadata();
        let (parsed, errs) = parse_node_state(&l, &a);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(parsed.agent, agent);
    }

    #[test]
    fn unknown_phase_strings_never_panic() {
        for s in ["", "idle", "DONE", "Held\n", "Verifying "] {
            assert!(s.parse::<Phase>().is_err());
        }
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
    }
}

//! The rollout policy: the `config.yaml` key of the `drydock-config` ConfigMap.
//!
//! Parsing is strict: unknown keys are errors (with a suggestion when one is close), and
//! every error found is returned with its path (`pools[1].maxUnavailable: 150% is over
//! 100%`), not just the first. See `docs/policy.md` for the full reference.
//!
//! Defaults (documented in `docs/policy.md` and tested below):
//!
//! | key | default |
//! |---|---|
//! | `paused` | `false` |
//! | `channel` | unset: nodes keep the channel they were provisioned with |
//! | `version` | unset: any version the channel offers |
//! | `maxUnavailable` | `1` (a control-plane pool without its own value: `1` as well) |
//! | `canary` | `0` |
//! | `windows` | unset: any time |
//! | `drain` | `{timeout: 15m, gracePeriod: pod, onTimeout: hold, deleteEmptyDirData: false, deleteUnmanagedPods: false}` |
//! | `health` | `{readyTimeout: 10m, bake: 2m, haltAfterFailures: 1}` |
//! | `hooks` | none |
//! | `allowDowngrade` | `false` |

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::duration::parse_duration;
use crate::pin::VersionPin;
use crate::selector::{LabelSelector, Labels, validate_label_key};
use crate::strmap::Lookup;
use crate::window::{Schedule, Window, parse_start, parse_weekday};

/// Name of the implicit pool that holds every node no configured pool selects.
pub const DEFAULT_POOL: &str = "default";
/// Label that marks control-plane nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// The older spelling of [`CONTROL_PLANE_LABEL`].
pub const LEGACY_MASTER_LABEL: &str = "node-role.kubernetes.io/master";
/// The ConfigMap key that holds the policy.
pub const CONFIG_KEY: &str = "config.yaml";

/// One problem in the policy, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path to the value (`pools[1].maxUnavailable`), or `(document)`.
    pub path: String,
    /// What is wrong, in words a person acts on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// How many of a pool's nodes may be unavailable at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// A fixed count (at least 1).
    Count(u32),
    /// A percentage of the pool's nodes (1–100), rounded down but never below 1.
    Percent(u32),
}

impl MaxUnavailable {
    /// The limit for a pool of `pool_size` nodes. Always at least 1, so every pool can
    /// make progress; a pool that must not move is `paused`.
    pub fn resolve(self, pool_size: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n as usize,
            MaxUnavailable::Percent(p) => (pool_size * p as usize / 100).max(1),
        }
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The grace period evicted pods get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GracePeriod {
    /// The pod's own `terminationGracePeriodSeconds`.
    Pod,
    /// This many seconds for every pod.
    Seconds(u64),
}

/// What a drain that did not finish within `drain.timeout` leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Stop: uncordon the node, mark it Held with the reason, record a Warning Event.
    Hold,
    /// Delete the remaining pods (ignoring their budgets), then reboot.
    Force,
    /// Reboot with the remaining pods still there.
    Reboot,
}

impl OnTimeout {
    /// The policy spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Hold => "hold",
            OnTimeout::Force => "force",
            OnTimeout::Reboot => "reboot",
        }
    }
}

/// How nodes are drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPolicy {
    /// How long a drain (and the before-reboot hooks) may take.
    pub timeout: Duration,
    /// Grace period for evicted pods.
    pub grace_period: GracePeriod,
    /// What a timeout leads to.
    pub on_timeout: OnTimeout,
    /// Whether pods with `emptyDir` volumes may be evicted (their data is lost).
    pub delete_empty_dir_data: bool,
    /// Whether pods without a controller may be evicted (nothing recreates them).
    pub delete_unmanaged_pods: bool,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        DrainPolicy {
            timeout: Duration::from_secs(15 * 60),
            grace_period: GracePeriod::Pod,
            on_timeout: OnTimeout::Hold,
            delete_empty_dir_data: false,
            delete_unmanaged_pods: false,
        }
    }
}

/// How a rebooted node is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// How long after the grant the node has to come back Ready on the new version (and,
    /// after that, how long the after-reboot hooks may take).
    pub ready_timeout: Duration,
    /// How long a verified node stays cordoned-free but watched before it counts as Done.
    pub bake: Duration,
    /// Failed nodes (not yet acknowledged) that halt their pool.
    pub halt_after_failures: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            ready_timeout: Duration::from_secs(10 * 60),
            bake: Duration::from_secs(2 * 60),
            halt_after_failures: 1,
        }
    }
}

/// Annotation keys that must read `"true"` on a node before its reboot is granted, and
/// before it is uncordoned after the reboot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Checked after the drain, before the grant.
    pub before_reboot: Vec<String>,
    /// Checked after the boot is verified and baked, before uncordon.
    pub after_reboot: Vec<String>,
}

/// The settings of one pool, with everything it did not say inherited from the top level.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    /// Pool name (`default` for the implicit pool).
    pub name: String,
    /// Which nodes belong (None for the implicit pool: every node no other pool takes).
    pub selector: Option<LabelSelector>,
    /// No new disruptions in this pool.
    pub paused: bool,
    /// Channel (Flatcar group or CoreOS stream) its nodes should follow.
    pub channel: Option<String>,
    /// Versions its nodes may run.
    pub version: Option<VersionPin>,
    /// Unavailability limit.
    pub max_unavailable: MaxUnavailable,
    /// Nodes updated (and baked) first, before the rest start.
    pub canary: u32,
    /// When new disruptions may start.
    pub schedule: Schedule,
    /// Drain settings.
    pub drain: DrainPolicy,
    /// Health settings.
    pub health: HealthPolicy,
    /// Hook annotations.
    pub hooks: Hooks,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Global pause: no new disruptions anywhere.
    pub paused: bool,
    /// Whether moving a pool to an older channel or version is allowed.
    pub allow_downgrade: bool,
    /// Configured pools, in order (first match wins).
    pub pools: Vec<PoolPolicy>,
    /// The implicit pool for every other node.
    pub default_pool: PoolPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            paused: false,
            allow_downgrade: false,
            pools: Vec::new(),
            default_pool: PoolPolicy {
                name: DEFAULT_POOL.into(),
                selector: None,
                paused: false,
                channel: None,
                version: None,
                max_unavailable: MaxUnavailable::Count(1),
                canary: 0,
                schedule: Schedule::Always,
                drain: DrainPolicy::default(),
                health: HealthPolicy::default(),
                hooks: Hooks::default(),
            },
        }
    }
}

impl Policy {
    /// Parses and validates a policy document (the content of `config.yaml`).
    pub fn from_yaml(text: &str) -> Result<Policy, ConfigErrors> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| yaml_error(&e))?;
        let mut cx = Cx::default();
        let policy = if value.is_null() {
            Some(Policy::default())
        } else {
            parse_policy(&mut cx, &value)
        };
        match policy {
            Some(p) if cx.errors.is_empty() => Ok(p),
            _ => Err(ConfigErrors(cx.errors)),
        }
    }

    /// Parses either a bare `config.yaml` or a whole `ConfigMap` manifest holding it under
    /// `data."config.yaml"`; error paths of the latter are prefixed with `data.config.yaml`.
    pub fn from_document(text: &str) -> Result<Policy, ConfigErrors> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| yaml_error(&e))?;
        let is_configmap = value.get("kind").and_then(Value::as_str) == Some("ConfigMap")
            && value.get("apiVersion").is_some();
        if !is_configmap {
            return Policy::from_yaml(text);
        }
        let inner = value
            .get("data")
            .and_then(|d| d.get(CONFIG_KEY))
            .ok_or_else(|| {
                one_error(
                    "data",
                    format!("the ConfigMap has no {CONFIG_KEY:?} key under data"),
                )
            })?;
        let inner = inner.as_str().ok_or_else(|| {
            one_error(
                "data.config.yaml",
                "must be a string holding the policy YAML",
            )
        })?;
        Policy::from_yaml(inner).map_err(|ConfigErrors(es)| {
            ConfigErrors(
                es.into_iter()
                    .map(|e| ConfigError {
                        path: format!("data.config.yaml: {}", e.path),
                        message: e.message,
                    })
                    .collect(),
            )
        })
    }

    /// The pool a node with these labels belongs to: the first configured pool whose
    /// selector matches, otherwise the implicit `default` pool.
    pub fn pool_for(&self, labels: &dyn Lookup) -> &PoolPolicy {
        self.pools
            .iter()
            .find(|p| p.selector.as_ref().is_some_and(|s| s.matches(labels)))
            .unwrap_or(&self.default_pool)
    }

    /// All pools, configured ones first, then `default`.
    pub fn all_pools(&self) -> impl Iterator<Item = &PoolPolicy> {
        self.pools.iter().chain(std::iter::once(&self.default_pool))
    }

    /// Looks a pool up by name.
    pub fn pool(&self, name: &str) -> Option<&PoolPolicy> {
        self.all_pools().find(|p| p.name == name)
    }
}

fn one_error(path: &str, message: impl Into<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        path: path.into(),
        message: message.into(),
    }])
}

fn yaml_error(e: &serde_yaml::Error) -> ConfigErrors {
    let message = match e.location() {
        Some(l) => format!(
            "not valid YAML at line {}, column {}: {e}",
            l.line(),
            l.column()
        ),
        None => format!("not valid YAML: {e}"),
    };
    one_error("(document)", message)
}

const TOP_KEYS: &[&str] = &[
    "paused",
    "allowDowngrade",
    "channel",
    "version",
    "maxUnavailable",
    "canary",
    "windows",
    "drain",
    "health",
    "hooks",
    "pools",
];
const POOL_KEYS: &[&str] = &[
    "name",
    "nodeSelector",
    "paused",
    "channel",
    "version",
    "maxUnavailable",
    "canary",
    "windows",
    "drain",
    "health",
    "hooks",
];
const DRAIN_KEYS: &[&str] = &[
    "timeout",
    "gracePeriod",
    "onTimeout",
    "deleteEmptyDirData",
    "deleteUnmanagedPods",
];
const HEALTH_KEYS: &[&str] = &["readyTimeout", "bake", "haltAfterFailures"];
const HOOK_KEYS: &[&str] = &["beforeReboot", "afterReboot"];
const WINDOW_KEYS: &[&str] = &["days", "start", "length", "timeZone"];

/// Collects errors while walking the document.
#[derive(Default)]
struct Cx {
    errors: Vec<ConfigError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(!ca.eq_ignore_ascii_case(cb));
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Cx {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// The value as a map whose keys are all in `allowed`; unknown keys are reported.
    fn map<'a>(&mut self, path: &str, v: &'a Value, allowed: &[&str]) -> Option<&'a Mapping> {
        let Some(m) = v.as_mapping() else {
            let shown = if path.is_empty() { "the policy" } else { path };
            self.err(
                if path.is_empty() { "(document)" } else { path },
                format!("{shown} must be a map, not {}", kind(v)),
            );
            return None;
        };
        for k in m.keys() {
            match k.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => {
                    let hint = allowed
                        .iter()
                        .map(|a| (edit_distance(k, a), a))
                        .filter(|(d, _)| *d <= 2)
                        .min()
                        .map(|(_, a)| format!(" (did you mean {a}?)"))
                        .unwrap_or_default();
                    self.err(
                        join(path, k),
                        format!("unknown key{hint}; known keys here: {}", allowed.join(", ")),
                    );
                }
                None => self.err(path, format!("keys must be strings, found {}", kind(k))),
            }
        }
        Some(m)
    }

    fn bool(&mut self, path: &str, v: &Value) -> Option<bool> {
        v.as_bool().or_else(|| {
            self.err(path, format!("must be true or false, not {}", kind(v)));
            None
        })
    }

    fn string(&mut self, path: &str, v: &Value) -> Option<String> {
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(path, format!("must be a string, not {}", kind(v)));
                None
            }
        }
    }

    fn count(&mut self, path: &str, v: &Value, min: u64) -> Option<u32> {
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if u64::from(n) >= min => Some(n),
            Some(n) => {
                self.err(path, format!("{n} is below the minimum of {min}"));
                None
            }
            None => {
                self.err(path, format!("must be a whole number, not {}", describe(v)));
                None
            }
        }
    }

    fn duration(&mut self, path: &str, v: &Value) -> Option<Duration> {
        let s = self.string(path, v)?;
        parse_duration(&s)
            .map_err(|e| self.err(path, e.to_string()))
            .ok()
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

/// Settings a pool may override; None = inherit.
#[derive(Default, Clone)]
struct Overrides {
    paused: Option<bool>,
    channel: Option<String>,
    version: Option<VersionPin>,
    max_unavailable: Option<MaxUnavailable>,
    canary: Option<u32>,
    schedule: Option<Schedule>,
    drain_timeout: Option<Duration>,
    grace_period: Option<GracePeriod>,
    on_timeout: Option<OnTimeout>,
    delete_empty_dir_data: Option<bool>,
    delete_unmanaged_pods: Option<bool>,
    ready_timeout: Option<Duration>,
    bake: Option<Duration>,
    halt_after_failures: Option<u32>,
    before_reboot: Option<Vec<String>>,
    after_reboot: Option<Vec<String>>,
}

fn parse_overrides(cx: &mut Cx, path: &str, m: &Mapping) -> Overrides {
    let mut o = Overrides::default();
    let get = |k: &str| m.get(k);
    if let Some(v) = get("paused") {
        o.paused = cx.bool(&join(path, "paused"), v);
    }
    if let Some(v) = get("channel") {
        let p = join(path, "channel");
        if let Some(s) = cx.string(&p, v) {
            let ok = !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if ok {
                o.channel = Some(s);
            } else {
                cx.err(p, format!("{s:?} is not a channel name (1-63 characters of [A-Za-z0-9-_.], like stable or a Nebraska group id)"));
            }
        }
    }
    if let Some(v) = get("version") {
        let p = join(path, "version");
        let text = match v {
            Value::Number(n) => Some(n.to_string()),
            other => cx.string(&p, other),
        };
        if let Some(t) = text {
            match VersionPin::parse(&t) {
                Ok(pin) => o.version = Some(pin),
                Err(e) => cx.err(p, e.to_string()),
            }
        }
    }
    if let Some(v) = get("maxUnavailable") {
        o.max_unavailable = parse_max_unavailable(cx, &join(path, "maxUnavailable"), v);
    }
    if let Some(v) = get("canary") {
        o.canary = cx.count(&join(path, "canary"), v, 0);
    }
    if let Some(v) = get("windows") {
        o.schedule = parse_windows(cx, &join(path, "windows"), v);
    }
    if let Some(v) = get("drain") {
        let p = join(path, "drain");
        if let Some(d) = cx.map(&p, v, DRAIN_KEYS) {
            if let Some(v) = d.get("timeout") {
                o.drain_timeout = cx.duration(&join(&p, "timeout"), v);
            }
            if let Some(v) = d.get("gracePeriod") {
                let gp = join(&p, "gracePeriod");
                if let Some(s) = cx.string(&gp, v) {
                    if s == "pod" {
                        o.grace_period = Some(GracePeriod::Pod);
                    } else {
                        match parse_duration(&s) {
                            Ok(d) => o.grace_period = Some(GracePeriod::Seconds(d.as_secs())),
                            Err(e) => {
                                cx.err(gp, format!("must be \"pod\" or a duration like 30s: {e}"))
                            }
                        }
                    }
                }
            }
            if let Some(v) = d.get("onTimeout") {
                let ot = join(&p, "onTimeout");
                if let Some(s) = cx.string(&ot, v) {
                    o.on_timeout = match s.as_str() {
                        "hold" => Some(OnTimeout::Hold),
                        "force" => Some(OnTimeout::Force),
                        "reboot" => Some(OnTimeout::Reboot),
                        _ => {
                            cx.err(ot, format!("{s:?} is not one of hold, force, reboot"));
                            None
                        }
                    };
                }
            }
            if let Some(v) = d.get("deleteEmptyDirData") {
                o.delete_empty_dir_data = cx.bool(&join(&p, "deleteEmptyDirData"), v);
            }
            if let Some(v) = d.get("deleteUnmanagedPods") {
                o.delete_unmanaged_pods = cx.bool(&join(&p, "deleteUnmanagedPods"), v);
            }
        }
    }
    if let Some(v) = get("health") {
        let p = join(path, "health");
        if let Some(h) = cx.map(&p, v, HEALTH_KEYS) {
            if let Some(v) = h.get("readyTimeout") {
                let rp = join(&p, "readyTimeout");
                o.ready_timeout = cx.duration(&rp, v);
                if o.ready_timeout.is_some_and(|d| d.is_zero()) {
                    cx.err(rp, "must be more than 0s: a node needs time to reboot");
                }
            }
            if let Some(v) = h.get("bake") {
                o.bake = cx.duration(&join(&p, "bake"), v);
            }
            if let Some(v) = h.get("haltAfterFailures") {
                o.halt_after_failures = cx.count(&join(&p, "haltAfterFailures"), v, 1);
            }
        }
    }
    if let Some(v) = get("hooks") {
        let p = join(path, "hooks");
        if let Some(h) = cx.map(&p, v, HOOK_KEYS) {
            if let Some(v) = h.get("beforeReboot") {
                o.before_reboot = parse_hook_list(cx, &join(&p, "beforeReboot"), v);
            }
            if let Some(v) = h.get("afterReboot") {
                o.after_reboot = parse_hook_list(cx, &join(&p, "afterReboot"), v);
            }
        }
    }
    o
}

fn parse_max_unavailable(cx: &mut Cx, path: &str, v: &Value) -> Option<MaxUnavailable> {
    if let Some(n) = v.as_u64() {
        return match u32::try_from(n) {
            Ok(0) => {
                cx.err(
                    path,
                    "0 would never let a node update; use paused: true to stop a pool",
                );
                None
            }
            Ok(n) => Some(MaxUnavailable::Count(n)),
            Err(_) => {
                cx.err(path, format!("{n} is too large"));
                None
            }
        };
    }
    if let Some(s) = v.as_str()
        && let Some(num) = s.trim().strip_suffix('%')
    {
        return match num.trim().parse::<u32>() {
            Ok(0) => {
                cx.err(
                    path,
                    "0% would never let a node update; use paused: true to stop a pool",
                );
                None
            }
            Ok(p) if p > 100 => {
                cx.err(path, format!("{s} is over 100%"));
                None
            }
            Ok(p) => Some(MaxUnavailable::Percent(p)),
            Err(_) => {
                cx.err(
                    path,
                    format!("{s:?} is not a whole-number percentage like 20%"),
                );
                None
            }
        };
    }
    cx.err(
        path,
        format!(
            "must be a count like 2 or a percentage like 20%, not {}",
            describe(v)
        ),
    );
    None
}

fn parse_hook_list(cx: &mut Cx, path: &str, v: &Value) -> Option<Vec<String>> {
    let Some(seq) = v.as_sequence() else {
        cx.err(
            path,
            format!("must be a list of annotation keys, not {}", kind(v)),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, item) in seq.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(key) = cx.string(&p, item) else {
            continue;
        };
        if let Err(e) = validate_label_key(&key) {
            cx.err(&p, format!("{key:?} is not an annotation key: {e}"));
        } else if key.starts_with("drydock.dev/") {
            cx.err(
                &p,
                format!("{key:?} is a drydock key; hooks are annotations your own tooling sets"),
            );
        } else if !seen.insert(key.clone()) {
            cx.err(&p, format!("{key:?} is listed twice"));
        } else {
            out.push(key);
        }
    }
    Some(out)
}

fn parse_windows(cx: &mut Cx, path: &str, v: &Value) -> Option<Schedule> {
    let Some(seq) = v.as_sequence() else {
        cx.err(path, format!("must be a list of windows, not {}", kind(v)));
        return None;
    };
    if seq.is_empty() {
        cx.err(
            path,
            "an empty list would never open; leave windows out to allow any time",
        );
        return None;
    }
    let mut windows = Vec::new();
    let mut ok = true;
    for (i, item) in seq.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(m) = cx.map(&p, item, WINDOW_KEYS) else {
            ok = false;
            continue;
        };
        let before = cx.errors.len();
        let days = match m.get("days") {
            None => {
                cx.err(
                    join(&p, "days"),
                    "missing (list the weekdays the window opens on, like [Sat, Sun])",
                );
                None
            }
            Some(Value::Sequence(ds)) if ds.is_empty() => {
                cx.err(join(&p, "days"), "a window needs at least one day");
                None
            }
            Some(Value::Sequence(ds)) => {
                let mut out = Vec::new();
                for (j, d) in ds.iter().enumerate() {
                    let dp = format!("{p}.days[{j}]");
                    if let Some(s) = cx.string(&dp, d) {
                        match parse_weekday(&s) {
                            Ok(w) if out.contains(&w) => cx.err(dp, format!("{s} is listed twice")),
                            Ok(w) => out.push(w),
                            Err(e) => cx.err(dp, e.to_string()),
                        }
                    }
                }
                Some(out)
            }
            Some(other) => {
                cx.err(
                    join(&p, "days"),
                    format!("must be a list like [Sat, Sun], not {}", kind(other)),
                );
                None
            }
        };
        let start = match m.get("start") {
            None => {
                cx.err(
                    join(&p, "start"),
                    "missing (the local time the window opens, like \"01:00\")",
                );
                None
            }
            Some(v) => {
                let sp = join(&p, "start");
                cx.string(&sp, v)
                    .and_then(|s| parse_start(&s).map_err(|e| cx.err(sp, e.to_string())).ok())
            }
        };
        let length = match m.get("length") {
            None => {
                cx.err(
                    join(&p, "length"),
                    "missing (how long the window stays open, like 4h)",
                );
                None
            }
            Some(v) => cx.duration(&join(&p, "length"), v),
        };
        let tz = match m.get("timeZone") {
            None => Some("UTC".to_string()),
            Some(v) => cx.string(&join(&p, "timeZone"), v),
        };
        if cx.errors.len() != before {
            ok = false;
            continue;
        }
        if let (Some(days), Some(start), Some(length), Some(tz)) = (days, start, length, tz) {
            match Window::new(days, start, length, &tz) {
                Ok(w) => windows.push(w),
                Err(e) => {
                    let field = match e {
                        crate::window::WindowError::BadTimeZone(_) => "timeZone",
                        crate::window::WindowError::BadLength(_) => "length",
                        _ => "days",
                    };
                    cx.err(join(&p, field), e.to_string());
                    ok = false;
                }
            }
        }
    }
    ok.then_some(Schedule::Windows(windows))
}

fn parse_selector(cx: &mut Cx, path: &str, v: &Value) -> Option<LabelSelector> {
    let Some(m) = v.as_mapping() else {
        cx.err(
            path,
            format!(
                "must be a map of labels or a label selector, not {}",
                kind(v)
            ),
        );
        return None;
    };
    let full_form = !m.is_empty()
        && m.keys()
            .all(|k| matches!(k.as_str(), Some("matchLabels" | "matchExpressions")));
    let selector = if full_form {
        match serde_yaml::from_value::<LabelSelector>(v.clone()) {
            Ok(s) => s,
            Err(e) => {
                cx.err(path, format!("not a label selector: {e}"));
                return None;
            }
        }
    } else {
        let mut labels = Labels::new();
        for (k, val) in m {
            let Some(k) = k.as_str() else {
                cx.err(path, "label keys must be strings");
                continue;
            };
            let val = match val {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => {
                    cx.err(
                        join(path, k),
                        format!("a label value must be a string, not {}", kind(other)),
                    );
                    continue;
                }
            };
            labels.insert(k.to_string(), val);
        }
        LabelSelector {
            match_labels: labels,
            match_expressions: Vec::new(),
        }
    };
    let errs = selector.validate(path);
    let ok = errs.is_empty();
    for (p, m) in errs {
        cx.err(p, m);
    }
    ok.then_some(selector)
}

fn resolve(
    name: &str,
    selector: Option<LabelSelector>,
    top: &Overrides,
    own: &Overrides,
) -> PoolPolicy {
    let d = DrainPolicy::default();
    let h = HealthPolicy::default();
    let control_plane = selector.as_ref().is_some_and(|s| {
        s.requires_key(CONTROL_PLANE_LABEL) || s.requires_key(LEGACY_MASTER_LABEL)
    });
    let inherited_max = if control_plane {
        MaxUnavailable::Count(1)
    } else {
        top.max_unavailable.unwrap_or(MaxUnavailable::Count(1))
    };
    macro_rules! pick {
        ($f:ident, $default:expr) => {
            own.$f
                .clone()
                .or_else(|| top.$f.clone())
                .unwrap_or($default)
        };
    }
    PoolPolicy {
        name: name.to_string(),
        selector,
        paused: own.paused.unwrap_or(false),
        channel: own.channel.clone().or_else(|| top.channel.clone()),
        version: own.version.clone().or_else(|| top.version.clone()),
        max_unavailable: own.max_unavailable.unwrap_or(inherited_max),
        canary: pick!(canary, 0),
        schedule: pick!(schedule, Schedule::Always),
        drain: DrainPolicy {
            timeout: pick!(drain_timeout, d.timeout),
            grace_period: pick!(grace_period, d.grace_period),
            on_timeout: pick!(on_timeout, d.on_timeout),
            delete_empty_dir_data: pick!(delete_empty_dir_data, d.delete_empty_dir_data),
            delete_unmanaged_pods: pick!(delete_unmanaged_pods, d.delete_unmanaged_pods),
        },
        health: HealthPolicy {
            ready_timeout: pick!(ready_timeout, h.ready_timeout),
            bake: pick!(bake, h.bake),
            halt_after_failures: pick!(halt_after_failures, h.halt_after_failures),
        },
        hooks: Hooks {
            before_reboot: pick!(before_reboot, Vec::new()),
            after_reboot: pick!(after_reboot, Vec::new()),
        },
    }
}

fn parse_policy(cx: &mut Cx, v: &Value) -> Option<Policy> {
    let m = cx.map("", v, TOP_KEYS)?;
    let allow_downgrade = m
        .get("allowDowngrade")
        .and_then(|v| cx.bool("allowDowngrade", v))
        .unwrap_or(false);
    let top = parse_overrides(cx, "", m);
    let paused = top.paused.unwrap_or(false);
    let mut pools = Vec::new();
    if let Some(pv) = m.get("pools") {
        match pv.as_sequence() {
            None => cx.err(
                "pools",
                format!("must be a list of pools, not {}", kind(pv)),
            ),
            Some(seq) => {
                let mut names = BTreeSet::new();
                for (i, item) in seq.iter().enumerate() {
                    let p = format!("pools[{i}]");
                    let Some(pm) = cx.map(&p, item, POOL_KEYS) else {
                        continue;
                    };
                    let name = match pm.get("name") {
                        None => {
                            cx.err(join(&p, "name"), "missing (every pool needs a name)");
                            None
                        }
                        Some(v) => cx.string(&join(&p, "name"), v),
                    };
                    if let Some(n) = &name {
                        let valid = !n.is_empty()
                            && n.len() <= 63
                            && n.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                            && !n.starts_with('-')
                            && !n.ends_with('-');
                        if !valid {
                            cx.err(join(&p, "name"), format!("{n:?} is not a valid pool name (lowercase letters, digits and '-', at most 63)"));
                        } else if n == DEFAULT_POOL {
                            cx.err(join(&p, "name"), "\"default\" is the implicit pool of unmatched nodes; set its options at the top level instead");
                        } else if !names.insert(n.clone()) {
                            cx.err(join(&p, "name"), format!("pool {n:?} is defined twice"));
                        }
                    }
                    let selector = match pm.get("nodeSelector") {
                        None => {
                            cx.err(
                                join(&p, "nodeSelector"),
                                "missing (which nodes belong to this pool)",
                            );
                            None
                        }
                        Some(v) => parse_selector(cx, &join(&p, "nodeSelector"), v),
                    };
                    let own = parse_overrides(cx, &p, pm);
                    if let (Some(name), Some(selector)) = (name, selector) {
                        pools.push(resolve(&name, Some(selector), &top, &own));
                    }
                }
            }
        }
    }
    let default_pool = resolve(DEFAULT_POOL, None, &top, &Overrides::default());
    Some(Policy {
        paused,
        allow_downgrade,
        pools,
        default_pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
paused: false
channel: stable
version: "<=4230"
maxUnavailable: 1
windows:
  - days: [Sat, Sun]
    start: "01:00"
    length: 4h
    timeZone: Europe/Berlin
drain: {timeout: 15m, gracePeriod: pod, onTimeout: hold, deleteEmptyDirData: true}
health: {readyTimeout: 10m, bake: 2m, haltAfterFailures: 1}
hooks: {beforeReboot: [example.com/backup-done], afterReboot: [example.com/smoke-ok]}
pools:
  - name: control-plane
    nodeSelector: {node-role.kubernetes.io/control-plane: ""}
    maxUnavailable: 1
  - name: workers
    maxUnavailable: 20%
    canary: 1
    nodeSelector:
      matchExpressions:
        - {key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}
"#;

    fn errors(text: &str) -> Vec<String> {
        Policy::from_yaml(text)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn the_design_example_parses_and_pools_inherit() {
        let p = Policy::from_yaml(EXAMPLE).unwrap();
        assert_eq!(p.pools.len(), 2);
        let w = &p.pools[1];
        assert_eq!(w.name, "workers");
        assert_eq!(w.max_unavailable, MaxUnavailable::Percent(20));
        assert_eq!(w.canary, 1);
        assert_eq!(w.channel.as_deref(), Some("stable"));
        assert_eq!(
            w.version.as_ref().map(|v| v.to_string()),
            Some("<=4230".into())
        );
        assert!(w.drain.delete_empty_dir_data);
        assert_eq!(
            w.hooks.before_reboot,
            vec!["example.com/backup-done".to_string()]
        );
        assert!(matches!(w.schedule, Schedule::Windows(ref ws) if ws.len() == 1));
        assert_eq!(p.default_pool.name, "default");
    }

    #[test]
    fn an_empty_document_is_the_default_policy() {
        let p = Policy::from_yaml("").unwrap();
        assert_eq!(p, Policy::default());
        let d = &p.default_pool;
        assert_eq!(d.max_unavailable, MaxUnavailable::Count(1));
        assert_eq!(d.drain.timeout, Duration::from_secs(900));
        assert_eq!(d.drain.on_timeout, OnTimeout::Hold);
        assert_eq!(d.health.ready_timeout, Duration::from_secs(600));
        assert_eq!(d.health.bake, Duration::from_secs(120));
        assert_eq!(d.health.halt_after_failures, 1);
        assert_eq!(d.schedule, Schedule::Always);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let errs = errors(
            r#"
maxUnavaliable: 2
pools:
  - name: a
    nodeSelector: {x: y}
  - name: b
    nodeSelector: {x: z}
    maxUnavailable: 150%
    windows:
      - days: [Sat, Caturday]
        start: "25:00"
        length: 4x
        timeZone: Mars/Base
"#,
        );
        assert_eq!(
            errs,
            vec![
                "maxUnavaliable: unknown key (did you mean maxUnavailable?); known keys here: paused, allowDowngrade, channel, version, maxUnavailable, canary, windows, drain, health, hooks, pools",
                "pools[1].maxUnavailable: 150% is over 100%",
                "pools[1].windows[0].days[1]: day \"Caturday\" is not one of Mon, Tue, Wed, Thu, Fri, Sat, Sun",
                "pools[1].windows[0].start: start \"25:00\" is not a time of day as HH:MM (00:00 to 23:59)",
                "pools[1].windows[0].length: unknown or missing unit at position 2 of \"4x\" (use h, m or s)",
            ]
        );
    }

    #[test]
    fn a_bad_time_zone_is_named() {
        let errs =
            errors("windows: [{days: [Mon], start: '01:00', length: 1h, timeZone: Mars/Base}]");
        assert_eq!(
            errs,
            vec![
                "windows[0].timeZone: time zone \"Mars/Base\" is not an IANA time zone name (like Europe/Berlin or UTC)"
            ]
        );
    }

    #[test]
    fn type_errors_and_bad_values() {
        let errs = errors(
            r#"
paused: "yes"
maxUnavailable: 0
canary: -1
version: "<=42x"
drain: {timeout: soon, onTimeout: panic, gracePeriod: forever}
health: {haltAfterFailures: 0}
hooks: {beforeReboot: [drydock.dev/x, "not a key", ok.io/a, ok.io/a]}
windows: []
"#,
        );
        assert_eq!(errs.len(), 12, "{errs:#?}");
        assert!(
            errs.contains(
                &"drain.timeout: expected a number at position 1 of \"soon\"".to_string()
            )
        );
        assert!(errs.contains(&"paused: must be true or false, not a string".to_string()));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("maxUnavailable: 0 would never"))
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("canary: must be a whole number, not -1"))
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("version: version pin \"<=42x\", column 5"))
        );
        assert!(errs.iter().any(|e| {
            e.starts_with("drain.onTimeout: \"panic\" is not one of hold, force, reboot")
        }));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("drain.gracePeriod: must be \"pod\""))
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("health.haltAfterFailures: 0 is below the minimum of 1"))
        );
        assert!(errs.iter().any(|e| e.starts_with("hooks.beforeReboot[0]: \"drydock.dev/x\" is a drydock key")));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("hooks.beforeReboot[3]: \"ok.io/a\" is listed twice"))
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("windows: an empty list would never open"))
        );
    }

    #[test]
    fn pool_names_must_be_unique_and_not_default() {
        let errs = errors(
            "pools: [{name: a, nodeSelector: {x: y}}, {name: a, nodeSelector: {x: y}}, {name: default, nodeSelector: {}}, {nodeSelector: {x: y}}]",
        );
        assert_eq!(
            errs,
            vec![
                "pools[1].name: pool \"a\" is defined twice",
                "pools[2].name: \"default\" is the implicit pool of unmatched nodes; set its options at the top level instead",
                "pools[3].name: missing (every pool needs a name)",
            ]
        );
    }

    #[test]
    fn invalid_yaml_names_the_line() {
        let errs = errors("pools: [\n  {name: a\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("(document): not valid YAML at line"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_node_belongs_to_the_first_matching_pool_else_default() {
        let p = Policy::from_yaml(
            "pools: [{name: gpu, nodeSelector: {gpu: 'true'}}, {name: zone-a, nodeSelector: {zone: a}}]",
        )
        .unwrap();
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            p.pool_for(&l(&[("gpu", "true"), ("zone", "a")])).name,
            "gpu"
        );
        assert_eq!(p.pool_for(&l(&[("zone", "a")])).name, "zone-a");
        assert_eq!(p.pool_for(&l(&[("zone", "b")])).name, "default");
    }

    #[test]
    fn a_control_plane_pool_defaults_to_one_at_a_time() {
        let p = Policy::from_yaml(
            "maxUnavailable: 30%\npools: [{name: cp, nodeSelector: {node-role.kubernetes.io/control-plane: ''}}, {name: w, nodeSelector: {role: w}}]",
        )
        .unwrap();
        assert_eq!(p.pools[0].max_unavailable, MaxUnavailable::Count(1));
        assert_eq!(p.pools[1].max_unavailable, MaxUnavailable::Percent(30));
        let p = Policy::from_yaml(
            "pools: [{name: cp, maxUnavailable: 2, nodeSelector: {node-role.kubernetes.io/control-plane: ''}}]",
        )
        .unwrap();
        assert_eq!(p.pools[0].max_unavailable, MaxUnavailable::Count(2));
    }

    #[test]
    fn percent_rounds_down_but_never_below_one() {
        assert_eq!(MaxUnavailable::Percent(20).resolve(12), 2);
        assert_eq!(MaxUnavailable::Percent(20).resolve(3), 1);
        assert_eq!(MaxUnavailable::Percent(100).resolve(7), 7);
        assert_eq!(MaxUnavailable::Count(3).resolve(1), 3);
    }

    #[test]
    fn a_configmap_manifest_is_accepted_and_paths_say_so() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: drydock-config}\ndata:\n  config.yaml: |\n    maxUnavailable: 101%\n";
        let errs: Vec<String> = Policy::from_document(cm)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errs,
            vec!["data.config.yaml: maxUnavailable: 101% is over 100%"]
        );
        let cm = "apiVersion: v1\nkind: ConfigMap\ndata: {other: x}\n";
        let errs: Vec<String> = Policy::from_document(cm)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errs,
            vec!["data: the ConfigMap has no \"config.yaml\" key under data"]
        );
        assert!(
            Policy::from_document(&format!(
                "apiVersion: v1\nkind: ConfigMap\ndata:\n  config.yaml: |\n{}",
                EXAMPLE
                    .lines()
                    .map(|l| format!("    {l}\n"))
                    .collect::<String>()
            ))
            .is_ok()
        );
    }

    #[test]
    fn selectors_in_full_form_are_validated() {
        let errs = errors(
            "pools: [{name: a, nodeSelector: {matchExpressions: [{key: zone, operator: In}]}}]",
        );
        assert_eq!(
            errs,
            vec![
                "pools[0].nodeSelector.matchExpressions[0].values: operator In needs at least one value"
            ]
        );
        let errs = errors(
            "pools: [{name: a, nodeSelector: {matchExpressions: [{key: zone, operator: Maybe}]}}]",
        );
        assert!(
            errs[0].starts_with("pools[0].nodeSelector: not a label selector"),
            "{errs:?}"
        );
    }
}

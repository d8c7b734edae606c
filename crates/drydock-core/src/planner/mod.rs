//! The rollout planner: `(snapshot, policy, now) -> Plan`.
//!
//! A pure function, run on every relevant change by the operator and offline by
//! `drydockctl plan`. For every node it either decides one action or says, with a stable
//! code and a sentence, why the node waits. The rules, in the order they are applied:
//!
//! 1. **Work in flight first.** Nodes drydock is already disrupting (Draining,
//!    RebootGranted, Rebooting, Verifying) are carried forward — drains continue, timeouts
//!    apply, reboots are verified — whatever the window, pause or pool limit says now:
//!    a disruption, once started, is never abandoned half way. A node still draining when
//!    its window closes finishes its drain (or hits `drain.timeout`), is rebooted and
//!    verified; only *new* disruptions wait for the next window.
//! 2. **Limits.** A node counts as unavailable while drydock disrupts it, and whenever it
//!    is NotReady or cordoned for any other reason. A new disruption starts only while its
//!    pool is below `maxUnavailable`, so the limit is never exceeded by drydock.
//! 3. **Budgets.** A node is drained only if, for every PodDisruptionBudget covering its
//!    pods, the evictions it needs fit in `disruptionsAllowed`, minus the evictions still
//!    pending on nodes already draining, minus what this plan already spends. A node that
//!    needs more evictions of one budget than the budget ever allows at once may start
//!    when nothing else uses that budget; its evictions then pace with the replacements.
//!    When a node is refused because others hold the budget, the budget is reserved for it
//!    so later nodes cannot starve it.
//! 4. **Order.** Candidates are taken in a deterministic order — a hash of node UID and
//!    target version — so a restarted operator picks the same next nodes, canaries are
//!    stable, and no node is always last. Within the limits as many nodes start in
//!    parallel as budgets allow.
//! 5. **Gates.** Pause (global and per pool), a pool halted by failed nodes, version pins,
//!    downgrades, windows, canaries and hooks each hold nodes back with their own reason.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::policy::{OnTimeout, Policy, PoolPolicy};
use crate::protocol::{NodeState, Phase, ProtocolError};
use crate::snapshot::{NodeSnapshot, PdbSnapshot, PodOwner, ReadNode, Snapshot};
use crate::version::OsVersion;
use crate::window::WindowState;

#[cfg(test)]
mod tests;

/// A stable code for why a node waits or why an action was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum ReasonCode {
    // Waiting.
    UpToDate,
    Done,
    AgentMissing,
    GloballyPaused,
    PoolPaused,
    PoolHalted,
    VersionPinned,
    VersionIncomparable,
    Downgrade,
    NodeNotReady,
    CordonedByOther,
    OutsideWindow,
    CanaryFirst,
    PoolAtCapacity,
    PdbBlocked,
    MultiplePdbs,
    UnmanagedPod,
    EmptyDirData,
    DrainInProgress,
    BeforeRebootHook,
    AwaitingAck,
    Rebooting,
    Baking,
    AfterRebootHook,
    Held,
    Failed,
    // Actions.
    Scheduled,
    DrainTimeout,
    DrainComplete,
    BootVerified,
    Baked,
    HeldByPerson,
    ProtocolError,
    Rollback,
    NeverReturned,
    AgentNoAck,
    NotReadyAfterReboot,
    AfterRebootHookTimeout,
    Released,
    UpdateWithdrawn,
    StaleCordon,
}

impl ReasonCode {
    /// The code as written in plans, annotations and metrics.
    pub fn as_str(self) -> &'static str {
        use ReasonCode::*;
        match self {
            UpToDate => "UpToDate",
            Done => "Done",
            AgentMissing => "AgentMissing",
            GloballyPaused => "GloballyPaused",
            PoolPaused => "PoolPaused",
            PoolHalted => "PoolHalted",
            VersionPinned => "VersionPinned",
            VersionIncomparable => "VersionIncomparable",
            Downgrade => "Downgrade",
            NodeNotReady => "NodeNotReady",
            CordonedByOther => "CordonedByOther",
            OutsideWindow => "OutsideWindow",
            CanaryFirst => "CanaryFirst",
            PoolAtCapacity => "PoolAtCapacity",
            PdbBlocked => "PdbBlocked",
            MultiplePdbs => "MultiplePdbs",
            UnmanagedPod => "UnmanagedPod",
            EmptyDirData => "EmptyDirData",
            DrainInProgress => "DrainInProgress",
            BeforeRebootHook => "BeforeRebootHook",
            AwaitingAck => "AwaitingAck",
            Rebooting => "Rebooting",
            Baking => "Baking",
            AfterRebootHook => "AfterRebootHook",
            Held => "Held",
            Failed => "Failed",
            Scheduled => "Scheduled",
            DrainTimeout => "DrainTimeout",
            DrainComplete => "DrainComplete",
            BootVerified => "BootVerified",
            Baked => "Baked",
            HeldByPerson => "HeldByPerson",
            ProtocolError => "ProtocolError",
            Rollback => "Rollback",
            NeverReturned => "NeverReturned",
            AgentNoAck => "AgentNoAck",
            NotReadyAfterReboot => "NotReadyAfterReboot",
            AfterRebootHookTimeout => "AfterRebootHookTimeout",
            Released => "Released",
            UpdateWithdrawn => "UpdateWithdrawn",
            StaleCordon => "StaleCordon",
        }
    }

    /// Whether a person has to do something before the node can move on.
    pub fn needs_attention(self) -> bool {
        use ReasonCode::*;
        matches!(
            self,
            PoolHalted
                | VersionIncomparable
                | Downgrade
                | MultiplePdbs
                | UnmanagedPod
                | EmptyDirData
                | Held
                | Failed
                | ProtocolError
                | AgentMissing
                | CordonedByOther
        )
    }
}

impl ReasonCode {
    /// The codes whose cause moves with the fleet from moment to moment rather than with
    /// a person or the policy: the pool's limit, a budget's spare disruptions, the pods
    /// still terminating on a draining node.
    pub const FOLLOWS_THE_FLEET: [ReasonCode; 3] = [
        ReasonCode::PoolAtCapacity,
        ReasonCode::PdbBlocked,
        ReasonCode::DrainInProgress,
    ];

    /// The codes an action writes as it moves a node into a phase (a drain's
    /// `Scheduled`, a verified boot's `BootVerified`, ...), as against the codes of a node
    /// that waits in its phase.
    pub const ACTIONS: [ReasonCode; 15] = [
        ReasonCode::Scheduled,
        ReasonCode::DrainTimeout,
        ReasonCode::DrainComplete,
        ReasonCode::BootVerified,
        ReasonCode::Baked,
        ReasonCode::HeldByPerson,
        ReasonCode::ProtocolError,
        ReasonCode::Rollback,
        ReasonCode::NeverReturned,
        ReasonCode::AgentNoAck,
        ReasonCode::NotReadyAfterReboot,
        ReasonCode::AfterRebootHookTimeout,
        ReasonCode::Released,
        ReasonCode::UpdateWithdrawn,
        ReasonCode::StaleCordon,
    ];

    /// Whether a change from the reason written as `old` to this one in the same phase
    /// is only the fleet moving on, so that showing it may wait until it holds: this
    /// code follows the fleet ([`Self::FOLLOWS_THE_FLEET`]) and so did the old one, or
    /// the old one is the action that began the phase (a drain's `Scheduled`, then
    /// `DrainInProgress` while its pods terminate). A change to or from anything else —
    /// a halt, a pause, a failure, a window — is news a person should see at once.
    pub fn is_fleet_flicker(self, old: &str) -> bool {
        let fleet = |c: &str| Self::FOLLOWS_THE_FLEET.iter().any(|f| f.as_str() == c);
        let action = |c: &str| Self::ACTIONS.iter().any(|a| a.as_str() == c);
        fleet(self.as_str()) && (fleet(old) || action(old))
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Stable code.
    pub code: ReasonCode,
    /// What a person reads.
    pub message: String,
}

impl Reason {
    fn new(code: ReasonCode, message: impl Into<String>) -> Reason {
        Reason {
            code,
            message: message.into(),
        }
    }
}

/// A pod a drain acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (an eviction is done when the pod with this UID is gone).
    pub uid: String,
    /// The budget covering it, `namespace/name`.
    pub pdb: Option<String>,
}

/// What the operator should do to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Cordon (when `start`) and evict these pods through the Eviction API.
    Drain {
        /// First step of a new disruption: cordon and record it.
        start: bool,
        /// Pods to evict.
        evict: Vec<PodRef>,
    },
    /// The drain timed out with `onTimeout: force`: delete these pods.
    ForceDrain {
        /// Pods to delete.
        delete: Vec<PodRef>,
    },
    /// Grant the reboot.
    GrantReboot {
        /// The new token.
        token: u64,
        /// The version the node must boot.
        target: String,
    },
    /// The agent acknowledged: record Rebooting.
    MarkRebooting,
    /// The node booted the target: record Verifying and start the bake.
    Verify,
    /// Baked and hooks passed: uncordon (if drydock cordoned) and record Done.
    Complete {
        /// Uncordon.
        uncordon: bool,
    },
    /// Stop and wait for a person: record Held.
    Hold {
        /// Uncordon.
        uncordon: bool,
    },
    /// Boot verification failed: record Failed.
    Fail {
        /// Uncordon.
        uncordon: bool,
    },
    /// Back to Idle (released by a person, update withdrawn, or a stale cordon cleared).
    Release {
        /// Uncordon.
        uncordon: bool,
    },
}

impl Action {
    /// Short name (`drain`, `grant-reboot`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Drain { .. } => "drain",
            Action::ForceDrain { .. } => "force-drain",
            Action::GrantReboot { .. } => "grant-reboot",
            Action::MarkRebooting => "mark-rebooting",
            Action::Verify => "verify",
            Action::Complete { .. } => "complete",
            Action::Hold { .. } => "hold",
            Action::Fail { .. } => "fail",
            Action::Release { .. } => "release",
        }
    }

    /// The phase the node is in once the action is applied.
    pub fn next_phase(&self) -> Phase {
        match self {
            Action::Drain { .. } | Action::ForceDrain { .. } => Phase::Draining,
            Action::GrantReboot { .. } => Phase::RebootGranted,
            Action::MarkRebooting => Phase::Rebooting,
            Action::Verify => Phase::Verifying,
            Action::Complete { .. } => Phase::Done,
            Action::Hold { .. } => Phase::Held,
            Action::Fail { .. } => Phase::Failed,
            Action::Release { .. } => Phase::Idle,
        }
    }
}

/// One decided action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    /// Node.
    pub node: String,
    /// Its pool.
    pub pool: String,
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: Reason,
}

/// A node that waits, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Node.
    pub node: String,
    /// Its pool.
    pub pool: String,
    /// The phase it is (or should be shown) in.
    pub phase: Phase,
    /// Why it waits.
    pub reason: Reason,
}

/// A pool at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Name.
    pub name: String,
    /// Nodes in the pool.
    pub nodes: usize,
    /// Unavailable now (before this plan's actions).
    pub unavailable: usize,
    /// The resolved limit.
    pub max_unavailable: usize,
    /// Nodes with a staged update not yet rebooted into.
    pub pending: usize,
    /// Nodes being disrupted by drydock now.
    pub in_flight: usize,
    /// Nodes in Failed.
    pub failed: usize,
    /// New disruptions started by this plan.
    pub starting: usize,
    /// Paused (here or globally).
    pub paused: bool,
    /// Halted by failures.
    pub halted: bool,
    /// Window state in words (`open`, `opens Sat 01:00 Europe/Berlin`).
    pub window: String,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The `now` it was made for.
    pub now: Timestamp,
    /// Actions, by node name.
    pub actions: Vec<PlannedAction>,
    /// Every other node, by name, except those in `list_pods`.
    pub waiting: Vec<Waiting>,
    /// Pools, configured ones first then `default`; only pools with nodes.
    pub pools: Vec<PoolStatus>,
    /// When the plan should be made again even if nothing changes (a timeout, a bake end,
    /// a window opening).
    pub next_wakeup: Option<Timestamp>,
    /// Nodes the plan could start draining but whose pods the snapshot lacks
    /// ([`Snapshot::with_pods_unlisted`]), by name: list them and plan again. They are in
    /// neither `actions` nor `waiting` (the plan cannot say yet), and each holds a slot of
    /// its pool meanwhile, so there are never more of them than free slots.
    pub list_pods: Vec<String>,
    /// Nodes next in line for a full pool's slots whose pods the snapshot lacks, by name:
    /// of the first [`LIST_AHEAD_MAX`] in line, as many as the pool has nodes past their
    /// drain (they free a slot within a reboot). Listed ahead, their pods are at hand
    /// when a slot frees, and the pass that frees it starts the next drain without a list
    /// and another plan in between.
    pub list_ahead: Vec<String>,
}

impl Plan {
    /// The action for a node, if any.
    pub fn action_for(&self, node: &str) -> Option<&PlannedAction> {
        self.actions.iter().find(|a| a.node == node)
    }

    /// Why a node waits, if it does.
    pub fn waiting_for(&self, node: &str) -> Option<&Waiting> {
        self.waiting.iter().find(|w| w.node == node)
    }
}

/// How far down a full pool's queue its pods are listed ahead ([`Plan::list_ahead`]):
/// a few batches of freed slots' worth. Further down, a list would age out of the pod
/// cache before its node's turn on a large pool, and the reads would crowd a busy API
/// server for nothing (at 5,000 nodes with 1,000 slots, listing as far as the nodes past
/// their drain made 1.4 lists ahead per update, and candidates were listed again).
pub const LIST_AHEAD_MAX: usize = 64;

/// FNV-1a, 64 bit: a stable hash (std's hashers are randomised or may change).
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn hhmm(t: Timestamp) -> String {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    format!("{:02}:{:02} UTC", z.hour(), z.minute())
}

struct NodeView<'a> {
    idx: usize,
    node: &'a NodeSnapshot,
    pool: usize,
    state: &'a NodeState,
    errors: &'a [ProtocolError],
}

impl NodeView<'_> {
    fn phase(&self) -> Phase {
        self.state.operator.phase()
    }
    fn unavailable(&self) -> bool {
        self.phase().is_disrupting() || !self.node.ready || self.node.unschedulable
    }
    /// Cordoned by drydock and still cordoned.
    fn ours_cordoned(&self) -> bool {
        self.state.operator.cordoned && self.node.unschedulable
    }
}

enum Answer {
    Act(PlannedAction),
    Wait(Waiting),
}

struct Pass<'a> {
    snapshot: &'a Snapshot,
    pools: Vec<&'a PoolPolicy>,
    now: Timestamp,
    /// One answer per node, by node index; emitted in name order at the end.
    answers: Vec<Option<Answer>>,
    wakeups: Vec<Timestamp>,
    /// Candidates to drain whose pods the snapshot does not have.
    list_pods: Vec<String>,
    /// Queued behind a full pool, next in line, pods unlisted (see [`Plan::list_ahead`]).
    list_ahead: Vec<String>,
}

impl<'a> Pass<'a> {
    fn act(&mut self, v: &NodeView<'_>, action: Action, reason: Reason) {
        self.answers[v.idx] = Some(Answer::Act(PlannedAction {
            node: v.node.name.clone(),
            pool: self.pools[v.pool].name.clone(),
            action,
            reason,
        }));
    }

    fn wait(&mut self, v: &NodeView<'_>, phase: Phase, reason: Reason) {
        self.answers[v.idx] = Some(Answer::Wait(Waiting {
            node: v.node.name.clone(),
            pool: self.pools[v.pool].name.clone(),
            phase,
            reason,
        }));
    }

    fn hooks_pending(&self, v: &NodeView<'_>, keys: &[String]) -> Vec<String> {
        keys.iter()
            .filter(|k| v.node.annotations.get(k) != Some("true"))
            .cloned()
            .collect()
    }

    fn pod_refs(&self, v: &NodeView<'_>, evict_only: bool) -> Vec<PodRef> {
        self.snapshot
            .pods_on(v.idx)
            .filter(|(_, p)| {
                if evict_only {
                    p.needs_eviction()
                } else {
                    p.blocks_drain()
                }
            })
            .map(|(i, p)| PodRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: p.uid.clone(),
                pdb: self
                    .snapshot
                    .pdbs_of(i)
                    .first()
                    .map(|&b| self.snapshot.pdbs()[b as usize].key()),
            })
            .collect()
    }

    /// Carries a node drydock is disrupting one step forward.
    fn in_flight(&mut self, v: &NodeView<'_>) {
        let pool = self.pools[v.pool];
        let op = &v.state.operator;
        let agent = &v.state.agent;
        let since = op.since.unwrap_or(self.now);
        match v.phase() {
            Phase::Draining => {
                let uncordon = op.cordoned;
                if let Some(h) = &v.state.person.hold {
                    return self.act(
                        v,
                        Action::Hold { uncordon },
                        Reason::new(
                            ReasonCode::HeldByPerson,
                            format!("held by a person during the drain: {h}"),
                        ),
                    );
                }
                if !agent.has_staged_update() {
                    return self.act(
                        v,
                        Action::Release { uncordon },
                        Reason::new(
                            ReasonCode::UpdateWithdrawn,
                            "the node no longer has a staged update; stopping the drain",
                        ),
                    );
                }
                let blocking = self.pod_refs(v, false);
                let evict = self.pod_refs(v, true);
                let hooks = self.hooks_pending(v, &pool.hooks.before_reboot);
                let started = op.drain_started.unwrap_or(since);
                let deadline = plus(started, pool.drain.timeout);
                let unfinished = !blocking.is_empty() || !hooks.is_empty();
                if unfinished && self.now >= deadline {
                    let what = if !blocking.is_empty() {
                        format!("{} pod(s) remain ({})", blocking.len(), names(&blocking))
                    } else {
                        format!("before-reboot hook(s) not true: {}", hooks.join(", "))
                    };
                    let timeout = crate::duration::format_duration(pool.drain.timeout);
                    match pool.drain.on_timeout {
                        OnTimeout::Hold => {
                            return self.act(
                                v,
                                Action::Hold { uncordon },
                                Reason::new(
                                    ReasonCode::DrainTimeout,
                                    format!("drain did not finish within {timeout}: {what}"),
                                ),
                            );
                        }
                        OnTimeout::Force if !blocking.is_empty() => {
                            return self.act(v, Action::ForceDrain { delete: blocking }, Reason::new(ReasonCode::DrainTimeout, format!("drain did not finish within {timeout}; deleting what remains (onTimeout: force): {what}")));
                        }
                        OnTimeout::Force | OnTimeout::Reboot => {
                            let Some(target) = &agent.staged_version else {
                                return;
                            };
                            return self.grant(v, target, ReasonCode::DrainTimeout, format!("drain did not finish within {timeout}; rebooting anyway (onTimeout: {}): {what}", pool.drain.on_timeout.as_str()));
                        }
                    }
                }
                if unfinished {
                    self.wakeups.push(deadline);
                }
                let multi: Vec<String> = self
                    .snapshot
                    .pods_on(v.idx)
                    .filter(|(i, p)| p.needs_eviction() && self.snapshot.pdbs_of(*i).len() > 1)
                    .map(|(i, p)| format!("{} (covered by {})", p.key(), self.pdb_names(i)))
                    .collect();
                if !multi.is_empty() {
                    return self.act(v, Action::Hold { uncordon }, Reason::new(ReasonCode::MultiplePdbs, format!("the Eviction API refuses pods covered by several PodDisruptionBudgets: {}", multi.join(", "))));
                }
                if !evict.is_empty() {
                    let msg = format!("{} pod(s) left to evict: {}", evict.len(), names(&evict));
                    return self.act(
                        v,
                        Action::Drain {
                            start: false,
                            evict,
                        },
                        Reason::new(ReasonCode::DrainInProgress, msg),
                    );
                }
                if !blocking.is_empty() {
                    return self.wait(
                        v,
                        Phase::Draining,
                        Reason::new(
                            ReasonCode::DrainInProgress,
                            format!(
                                "waiting for {} pod(s) to terminate: {}",
                                blocking.len(),
                                names(&blocking)
                            ),
                        ),
                    );
                }
                if !hooks.is_empty() {
                    return self.wait(
                        v,
                        Phase::Draining,
                        Reason::new(
                            ReasonCode::BeforeRebootHook,
                            format!(
                                "drained; waiting for annotation(s) {} to read \"true\"",
                                hooks.join(", ")
                            ),
                        ),
                    );
                }
                if let Some(target) = &agent.staged_version {
                    self.grant(
                        v,
                        target,
                        ReasonCode::DrainComplete,
                        "drained; reboot granted, waiting for the agent to acknowledge it".into(),
                    );
                }
            }
            Phase::RebootGranted | Phase::Rebooting => {
                let deadline = plus(since, pool.health.ready_timeout);
                let timeout = crate::duration::format_duration(pool.health.ready_timeout);
                let uncordon = op.cordoned;
                let rebooted = agent.boot_id.is_some() && agent.boot_id != op.grant_boot_id;
                let target = op.target_version.as_ref();
                if rebooted {
                    let on_target = agent.booted_version.as_ref() == target;
                    let slot_changed =
                        agent.booted_slot.is_some() && agent.booted_slot != op.grant_slot;
                    if !v.node.ready {
                        if self.now >= deadline {
                            return self.act(
                                v,
                                Action::Fail { uncordon },
                                Reason::new(
                                    ReasonCode::NeverReturned,
                                    format!("rebooted but not Ready within {timeout}"),
                                ),
                            );
                        }
                        self.wakeups.push(deadline);
                        return self.wait(
                            v,
                            v.phase(),
                            Reason::new(
                                ReasonCode::Rebooting,
                                "rebooted; waiting for the node to be Ready",
                            ),
                        );
                    }
                    if agent.booted_slot.as_deref() == Some("unknown") {
                        // The agent could not read its update service yet in this boot.
                        if self.now >= deadline {
                            return self.act(
                                v,
                                Action::Fail { uncordon },
                                Reason::new(
                                    ReasonCode::NeverReturned,
                                    format!("rebooted but its booted slot is still unknown after {timeout}"),
                                ),
                            );
                        }
                        self.wakeups.push(deadline);
                        return self.wait(
                            v,
                            v.phase(),
                            Reason::new(
                                ReasonCode::Rebooting,
                                "rebooted; waiting for the agent to read the booted slot",
                            ),
                        );
                    }
                    if on_target && slot_changed {
                        // Nothing to wait for after the boot (no bake, no after-reboot
                        // hooks): complete now rather than record a Verifying that ends
                        // at once — one write and one pass less per node.
                        if pool.health.bake.is_zero() && pool.hooks.after_reboot.is_empty() {
                            return self.act(
                                v,
                                Action::Complete { uncordon },
                                Reason::new(
                                    ReasonCode::BootVerified,
                                    format!(
                                        "booted {} from slot {} (no bake, no after-reboot hooks)",
                                        fmt_opt(target),
                                        fmt_opt(agent.booted_slot.as_ref())
                                    ),
                                ),
                            );
                        }
                        return self.act(
                            v,
                            Action::Verify,
                            Reason::new(
                                ReasonCode::BootVerified,
                                format!(
                                    "booted {} from slot {}",
                                    fmt_opt(target),
                                    fmt_opt(agent.booted_slot.as_ref())
                                ),
                            ),
                        );
                    }
                    return self.act(v, Action::Fail { uncordon }, Reason::new(ReasonCode::Rollback, format!(
                        "came back on {} (slot {}), expected {} from the other slot than {}",
                        fmt_opt(agent.booted_version.as_ref()),
                        fmt_opt(agent.booted_slot.as_ref()),
                        fmt_opt(target),
                        fmt_opt(op.grant_slot.as_ref()),
                    )));
                }
                if agent.reboot_ack == op.token && op.token.is_some() {
                    if self.now >= deadline {
                        return self.act(
                            v,
                            Action::Fail { uncordon },
                            Reason::new(
                                ReasonCode::NeverReturned,
                                format!(
                                    "acknowledged the reboot but did not come back within {timeout}"
                                ),
                            ),
                        );
                    }
                    self.wakeups.push(deadline);
                    // The acknowledgement is recorded with the reason the node then waits
                    // under, so that waiting adds no write of its own.
                    let rebooting = Reason::new(
                        ReasonCode::Rebooting,
                        format!(
                            "agent acknowledged token {}; rebooting into {}",
                            fmt_opt(op.token.as_ref()),
                            fmt_opt(target)
                        ),
                    );
                    if v.phase() == Phase::RebootGranted {
                        return self.act(v, Action::MarkRebooting, rebooting);
                    }
                    return self.wait(v, Phase::Rebooting, rebooting);
                }
                if self.now >= deadline {
                    return self.act(v, Action::Hold { uncordon }, Reason::new(ReasonCode::AgentNoAck, format!("the agent did not acknowledge reboot token {} within {timeout}; is drydock-agent running on the node?", fmt_opt(op.token.as_ref()))));
                }
                self.wakeups.push(deadline);
                // A grant's own reason (which says the agent is to acknowledge) stands
                // until the agent does: rewording it would cost a write per node.
                let granted_as = (v.phase() == Phase::RebootGranted)
                    .then(|| standing(v, &[ReasonCode::DrainComplete, ReasonCode::DrainTimeout]))
                    .flatten();
                let reason = granted_as.unwrap_or_else(|| {
                    Reason::new(
                        ReasonCode::AwaitingAck,
                        format!(
                            "waiting for the agent to acknowledge token {}",
                            fmt_opt(op.token.as_ref())
                        ),
                    )
                });
                self.wait(v, v.phase(), reason);
            }
            Phase::Verifying => {
                let uncordon = op.cordoned;
                let bake_end = plus(since, pool.health.bake);
                let deadline = plus(bake_end, pool.health.ready_timeout);
                let timeout = crate::duration::format_duration(pool.health.ready_timeout);
                if !v.node.ready {
                    if self.now >= deadline {
                        return self.act(
                            v,
                            Action::Fail { uncordon },
                            Reason::new(
                                ReasonCode::NotReadyAfterReboot,
                                format!("NotReady for {timeout} after the reboot was verified"),
                            ),
                        );
                    }
                    self.wakeups.push(deadline);
                    return self.wait(
                        v,
                        Phase::Verifying,
                        Reason::new(ReasonCode::Baking, "NotReady while baking"),
                    );
                }
                if self.now < bake_end {
                    self.wakeups.push(bake_end);
                    return self.wait(
                        v,
                        Phase::Verifying,
                        Reason::new(
                            ReasonCode::Baking,
                            format!("baking until {}", hhmm(bake_end)),
                        ),
                    );
                }
                let hooks = self.hooks_pending(v, &pool.hooks.after_reboot);
                if !hooks.is_empty() {
                    if self.now >= deadline {
                        return self.act(
                            v,
                            Action::Hold { uncordon },
                            Reason::new(
                                ReasonCode::AfterRebootHookTimeout,
                                format!(
                                    "after-reboot hook(s) not true within {timeout}: {}",
                                    hooks.join(", ")
                                ),
                            ),
                        );
                    }
                    self.wakeups.push(deadline);
                    return self.wait(
                        v,
                        Phase::Verifying,
                        Reason::new(
                            ReasonCode::AfterRebootHook,
                            format!(
                                "waiting for annotation(s) {} to read \"true\"",
                                hooks.join(", ")
                            ),
                        ),
                    );
                }
                self.act(
                    v,
                    Action::Complete { uncordon },
                    Reason::new(
                        ReasonCode::Baked,
                        format!(
                            "verified on {} and baked",
                            fmt_opt(agent.booted_version.as_ref())
                        ),
                    ),
                );
            }
            _ => {}
        }
    }

    fn grant(&mut self, v: &NodeView<'_>, target: &OsVersion, code: ReasonCode, message: String) {
        let op = &v.state.operator;
        let agent = &v.state.agent;
        if agent.boot_id.is_none() || agent.booted_slot.is_none() {
            return self.wait(v, Phase::Draining, Reason::new(ReasonCode::AgentMissing, "drained, but the agent has not reported its boot id and slot; a reboot could not be verified"));
        }
        let token = op.token.max(agent.reboot_ack).unwrap_or(0) + 1;
        self.act(
            v,
            Action::GrantReboot {
                token,
                target: target.to_string(),
            },
            Reason::new(code, message),
        );
    }

    /// The evictions a node's drain needs of each budget, or what in its pods keeps it
    /// from being drained under this pool's policy.
    fn needs(&self, v: &NodeView<'_>, pool: &PoolPolicy) -> Result<BTreeMap<u32, u32>, Reason> {
        let mut need: BTreeMap<u32, u32> = BTreeMap::new();
        for (i, p) in self.snapshot.pods_on(v.idx) {
            if !p.needs_eviction() {
                continue;
            }
            let covers = self.snapshot.pdbs_of(i);
            if covers.len() > 1 {
                return Err(Reason::new(
                    ReasonCode::MultiplePdbs,
                    format!(
                        "pod {} is covered by {}; the Eviction API refuses such pods",
                        p.key(),
                        self.pdb_names(i)
                    ),
                ));
            }
            if p.owner == PodOwner::Unmanaged && !pool.drain.delete_unmanaged_pods {
                return Err(Reason::new(
                    ReasonCode::UnmanagedPod,
                    format!(
                        "pod {} has no controller and would be lost; set drain.deleteUnmanagedPods: true to allow",
                        p.key()
                    ),
                ));
            }
            if p.has_empty_dir && !pool.drain.delete_empty_dir_data {
                return Err(Reason::new(
                    ReasonCode::EmptyDirData,
                    format!(
                        "pod {} has emptyDir data that eviction would delete; set drain.deleteEmptyDirData: true to allow",
                        p.key()
                    ),
                ));
            }
            if let Some(&b) = covers.first() {
                *need.entry(b).or_default() += 1;
            }
        }
        Ok(need)
    }

    fn pdb_names(&self, pod: usize) -> String {
        self.snapshot
            .pdbs_of(pod)
            .iter()
            .map(|&b| self.snapshot.pdbs()[b as usize].key())
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// The node's recorded reason, when its code is one of `codes`: a reason an action wrote
/// that still holds while the node waits.
fn standing(v: &NodeView<'_>, codes: &[ReasonCode]) -> Option<Reason> {
    let op = &v.state.operator;
    let code = codes
        .iter()
        .copied()
        .find(|c| op.reason_code.as_deref() == Some(c.as_str()))?;
    Some(Reason::new(code, op.reason.clone()?))
}

/// The message of the node's recorded `PdbBlocked` reason, if that is what it shows.
fn standing_pdb<'v>(v: &'v NodeView<'_>) -> Option<&'v str> {
    let op = &v.state.operator;
    (op.reason_code.as_deref() == Some(ReasonCode::PdbBlocked.as_str()))
        .then_some(op.reason.as_deref())
        .flatten()
}

/// Why a node waits for `pdb`, of which it needs `n` evictions. One wording whatever the
/// budget's counts of the moment (it allows none, or others' drains hold what it allows),
/// so a node that waits on one budget is written once, not each time those counts move;
/// `kubectl get pdb` shows them.
fn pdb_blocked_message(pdb: &PdbSnapshot, n: u32) -> String {
    let stale = if pdb.status_current {
        ""
    } else {
        "; its status is not current yet"
    };
    format!(
        "PDB {} has no disruption to spare (this node needs {n}{stale})",
        pdb.key()
    )
}

/// The budget a `PdbBlocked` message names, `namespace/name`.
fn pdb_named(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("PDB ")?;
    let key = rest.split([' ', ':']).next()?;
    (!key.is_empty()).then_some(key)
}

/// The PodDisruptionBudgets' disruptions as one pass hands them out.
struct Budgets {
    /// Left per budget: allowed, minus evictions pending on draining nodes, minus what
    /// this pass spent or reserved.
    left: Vec<u32>,
    /// Left per budget before this pass handed any out.
    untouched: Vec<u32>,
    /// Budget index by `namespace/name`.
    by_key: HashMap<String, u32>,
}

impl Budgets {
    fn new(snapshot: &Snapshot, views: &[NodeView<'_>]) -> Budgets {
        let mut left: Vec<u32> = snapshot.pdbs().iter().map(PdbSnapshot::allowed).collect();
        for v in views.iter().filter(|v| v.phase() == Phase::Draining) {
            for (i, p) in snapshot.pods_on(v.idx) {
                if p.needs_eviction() {
                    for &b in snapshot.pdbs_of(i) {
                        left[b as usize] = left[b as usize].saturating_sub(1);
                    }
                }
            }
        }
        let by_key = snapshot
            .pdbs()
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((b.key(), u32::try_from(i).ok()?)))
            .collect();
        Budgets {
            untouched: left.clone(),
            left,
            by_key,
        }
    }

    /// Whether a node that needs `n` evictions of budget `b` must wait for it. A node
    /// that needs more than the budget ever allows at once may start when nothing else
    /// uses it (its evictions then pace with the replacements).
    fn blocks(&self, snapshot: &Snapshot, b: u32, n: u32) -> bool {
        let allowed = snapshot.pdbs()[b as usize].allowed();
        let left = self.left[b as usize];
        let alone = left == self.untouched[b as usize] && left == allowed;
        allowed == 0 || (n > left && !alone)
    }

    /// Why the budgets hold a node with these needs back, if they do: the budget its
    /// recorded reason (`standing`) names when that one still holds it back, else the
    /// first that does.
    fn blocking(
        &self,
        snapshot: &Snapshot,
        need: &BTreeMap<u32, u32>,
        standing: Option<&str>,
    ) -> Option<Reason> {
        let mut first = None;
        for (&b, &n) in need {
            if !self.blocks(snapshot, b, n) {
                continue;
            }
            let message = pdb_blocked_message(&snapshot.pdbs()[b as usize], n);
            if standing == Some(message.as_str()) {
                return Some(Reason::new(ReasonCode::PdbBlocked, message));
            }
            first.get_or_insert(message);
        }
        first.map(|m| Reason::new(ReasonCode::PdbBlocked, m))
    }

    /// The `PdbBlocked` reason a node that the pool's limit holds back already shows, if
    /// a budget still holds it back too: read from its pods when they are listed, else
    /// from the budget its reason names having nothing left at all.
    fn still_blocks(&self, pass: &Pass<'_>, v: &NodeView<'_>, pool: &PoolPolicy) -> Option<Reason> {
        let standing = standing_pdb(v)?;
        if pass.snapshot.pods_listed(v.idx) {
            let need = pass.needs(v, pool).ok()?;
            return self.blocking(pass.snapshot, &need, Some(standing));
        }
        let b = *self.by_key.get(pdb_named(standing)?)?;
        self.blocks(pass.snapshot, b, 1)
            .then(|| Reason::new(ReasonCode::PdbBlocked, standing))
    }

    /// Holds back what a waiting node needs of budgets that cannot give it now, so the
    /// nodes after it in the order cannot starve it.
    fn reserve(&mut self, need: &BTreeMap<u32, u32>) {
        for (&b, &n) in need {
            if self.left[b as usize] < n {
                self.left[b as usize] = 0;
            }
        }
    }

    /// Takes what a node that starts its drain needs.
    fn spend(&mut self, need: &BTreeMap<u32, u32>) {
        for (&b, &n) in need {
            self.left[b as usize] -= n.min(self.left[b as usize]);
        }
    }
}

fn names(pods: &[PodRef]) -> String {
    let mut s: Vec<String> = pods
        .iter()
        .take(3)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    if pods.len() > 3 {
        s.push(format!("and {} more", pods.len() - 3));
    }
    s.join(", ")
}

fn fmt_opt<T: fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(|| "unknown".to_string(), ToString::to_string)
}

#[derive(Default, Clone)]
struct PoolTally {
    nodes: usize,
    unavailable: usize,
    in_flight: usize,
    failed: Vec<String>,
    pending: usize,
    starting: usize,
    /// Candidates whose slot is held while their pods are listed.
    listing: usize,
    /// Disrupted nodes past their drain: the slots that free next.
    past_drain: usize,
    /// Candidates seen so far that wait only for a slot.
    in_line: usize,
    target: Option<OsVersion>,
    at_target: usize,
}

/// Whether a node in `phase` is past its drain and not done: its reboot granted, under
/// way or being verified. What such a node does next depends on that node alone (its
/// agent's reports, its readiness, its pool's health rules), never on other nodes or pods.
pub fn is_past_drain(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::RebootGranted | Phase::Rebooting | Phase::Verifying
    )
}

/// The action [`plan`] would give `node` if it is past its drain ([`is_past_drain`]),
/// decided on that node alone; None when it waits or is in any other phase (what those
/// do depends on the rest of the fleet). It lets the operator follow a node's own reboot
/// as its agent reports it, without waiting for a plan of the whole fleet.
pub fn step(
    node: &std::sync::Arc<ReadNode>,
    policy: &Policy,
    now: Timestamp,
) -> Option<PlannedAction> {
    if !node.errors().is_empty() || !is_past_drain(node.state().operator.phase()) {
        return None;
    }
    let one = Snapshot::from_read(vec![std::sync::Arc::clone(node)], Vec::new(), Vec::new());
    plan(&one, policy, now).actions.into_iter().next()
}

/// Plans the next step for every node. See the module documentation for the rules.
pub fn plan(snapshot: &Snapshot, policy: &Policy, now: Timestamp) -> Plan {
    let pools: Vec<&PoolPolicy> = policy.all_pools().collect();

    let views: Vec<NodeView<'_>> = snapshot
        .nodes()
        .iter()
        .enumerate()
        .map(|(idx, read)| {
            let node = read.node();
            let chosen = policy.pool_for(&node.labels);
            let pool = pools
                .iter()
                .position(|p| std::ptr::eq(*p, chosen))
                .unwrap_or(pools.len() - 1);
            NodeView {
                idx,
                node,
                pool,
                state: read.state(),
                errors: read.errors(),
            }
        })
        .collect();

    // Pool tallies.
    let mut tally = vec![PoolTally::default(); pools.len()];
    for v in &views {
        let t = &mut tally[v.pool];
        t.nodes += 1;
        t.unavailable += usize::from(v.unavailable());
        t.in_flight += usize::from(v.phase().is_disrupting());
        t.past_drain += usize::from(v.phase().is_disrupting() && v.phase() != Phase::Draining);
        if v.phase() == Phase::Failed {
            t.failed.push(v.node.name.clone());
        }
        if v.state.agent.has_staged_update() && !v.phase().is_disrupting() {
            t.pending += 1;
        }
        if let Some(s) = &v.state.agent.staged_version
            && v.state.agent.has_staged_update()
        {
            let newer = match &t.target {
                None => true,
                Some(cur) => s.compare(cur) == Ok(Ordering::Greater),
            };
            if newer {
                t.target = Some(s.clone());
            }
        }
    }
    for v in &views {
        let t = &mut tally[v.pool];
        if t.target.is_some()
            && v.state.agent.booted_version == t.target
            && matches!(v.phase(), Phase::Done | Phase::Idle)
        {
            t.at_target += 1;
        }
    }

    // PDB budgets: allowed minus evictions still pending on nodes already draining.
    let mut budgets = Budgets::new(snapshot, &views);

    let mut pass = Pass {
        snapshot,
        pools: pools.clone(),
        now,
        answers: (0..snapshot.nodes().len()).map(|_| None).collect(),
        wakeups: Vec::new(),
        list_pods: Vec::new(),
        list_ahead: Vec::new(),
    };

    let window_states: Vec<WindowState> = pools.iter().map(|p| p.schedule.state(now)).collect();
    let limits: Vec<usize> = pools
        .iter()
        .zip(&tally)
        .map(|(p, t)| p.max_unavailable.resolve(t.nodes))
        .collect();

    let mut candidates: Vec<(u64, &NodeView<'_>)> = Vec::new();
    for v in &views {
        let op = &v.state.operator;
        if !v.errors.is_empty() {
            let msg = v
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if v.phase() == Phase::Held
                && op.reason_code.as_deref() == Some(ReasonCode::ProtocolError.as_str())
            {
                pass.wait(v, Phase::Held, Reason::new(ReasonCode::ProtocolError, msg));
            } else {
                pass.act(
                    v,
                    Action::Hold {
                        uncordon: v.ours_cordoned(),
                    },
                    Reason::new(
                        ReasonCode::ProtocolError,
                        format!("unreadable drydock state, needs a person: {msg}"),
                    ),
                );
            }
            continue;
        }
        match v.phase() {
            p if p.is_disrupting() => pass.in_flight(v),
            Phase::Held | Phase::Failed => {
                let released = op.since.is_some() && v.state.person.release == op.since;
                let person_hold_lifted = v.phase() == Phase::Held
                    && op.reason_code.as_deref() == Some(ReasonCode::HeldByPerson.as_str())
                    && v.state.person.hold.is_none();
                if released || person_hold_lifted {
                    pass.act(
                        v,
                        Action::Release {
                            uncordon: v.ours_cordoned(),
                        },
                        Reason::new(
                            ReasonCode::Released,
                            format!("released from {} by a person", v.phase()),
                        ),
                    );
                } else {
                    let code = if v.phase() == Phase::Held {
                        ReasonCode::Held
                    } else {
                        ReasonCode::Failed
                    };
                    let why = op
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason recorded".into());
                    pass.wait(v, v.phase(), Reason::new(code, why));
                }
            }
            _ => {
                if v.ours_cordoned() {
                    pass.act(v, Action::Release { uncordon: true }, Reason::new(ReasonCode::StaleCordon, format!("drydock cordoned this node but is not working on it ({}); uncordoning", v.phase())));
                } else if let Some(h) = &v.state.person.hold {
                    pass.act(
                        v,
                        Action::Hold { uncordon: false },
                        Reason::new(ReasonCode::HeldByPerson, format!("held by a person: {h}")),
                    );
                } else if !v.state.agent.has_staged_update() {
                    if v.state.agent.booted_version.is_none() {
                        pass.wait(
                            v,
                            Phase::Idle,
                            Reason::new(
                                ReasonCode::AgentMissing,
                                "no drydock agent status on this node",
                            ),
                        );
                    } else if v.phase() == Phase::Done {
                        // The completion's own reason stands: rewording it would cost a
                        // write per node.
                        let reason = standing(v, &[ReasonCode::BootVerified, ReasonCode::Baked])
                            .unwrap_or_else(|| {
                                Reason::new(
                                    ReasonCode::Done,
                                    format!(
                                        "updated to {}",
                                        fmt_opt(v.state.agent.booted_version.as_ref())
                                    ),
                                )
                            });
                        pass.wait(v, Phase::Done, reason);
                    } else {
                        pass.wait(
                            v,
                            Phase::Idle,
                            Reason::new(
                                ReasonCode::UpToDate,
                                format!(
                                    "running {}, no update staged",
                                    fmt_opt(v.state.agent.booted_version.as_ref())
                                ),
                            ),
                        );
                    }
                } else {
                    let target = v
                        .state
                        .agent
                        .staged_version
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    candidates.push((fnv1a(&[&v.node.uid, &target]), v));
                }
            }
        }
    }

    candidates.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.node.name.cmp(&b.1.node.name))
    });
    for (_, v) in candidates {
        let pi = v.pool;
        let pool = pools[pi];
        let agent = &v.state.agent;
        let Some(staged) = agent.staged_version.as_ref() else {
            continue;
        };
        let queued = |code, msg: String| Reason::new(code, msg);
        // Gates, first failing one wins.
        let gate: Option<Reason> = (|| {
            if agent.booted_version.is_none()
                || agent.boot_id.is_none()
                || agent.booted_slot.is_none()
            {
                return Some(queued(
                    ReasonCode::AgentMissing,
                    "the agent has not reported the booted version, slot and boot id".into(),
                ));
            }
            if policy.paused {
                return Some(queued(
                    ReasonCode::GloballyPaused,
                    "drydock is paused (paused: true)".into(),
                ));
            }
            if pool.paused {
                return Some(queued(
                    ReasonCode::PoolPaused,
                    format!("pool {} is paused", pool.name),
                ));
            }
            let failed = &tally[pi].failed;
            if !failed.is_empty() && failed.len() >= pool.health.halt_after_failures as usize {
                return Some(queued(
                    ReasonCode::PoolHalted,
                    format!(
                        "pool {} halted after {} failed node(s): {}; release them to resume",
                        pool.name,
                        failed.len(),
                        failed.join(", ")
                    ),
                ));
            }
            if let Some(pin) = &pool.version {
                match pin.allows(staged) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Some(queued(
                            ReasonCode::VersionPinned,
                            format!("staged {staged} is outside pool {}'s pin {pin}", pool.name),
                        ));
                    }
                    Err(e) => {
                        return Some(queued(
                            ReasonCode::VersionIncomparable,
                            format!("staged {staged} cannot be checked against pin {pin}: {e}"),
                        ));
                    }
                }
            }
            if let Some(booted) = &agent.booted_version {
                match staged.compare(booted) {
                    Ok(Ordering::Less) if !policy.allow_downgrade => {
                        return Some(queued(
                            ReasonCode::Downgrade,
                            format!(
                                "staged {staged} is older than the running {booted}; set allowDowngrade: true to allow it"
                            ),
                        ));
                    }
                    Err(e) => return Some(queued(ReasonCode::VersionIncomparable, e.to_string())),
                    _ => {}
                }
            }
            if !v.node.ready {
                return Some(queued(ReasonCode::NodeNotReady, "node is NotReady".into()));
            }
            if v.node.unschedulable {
                return Some(queued(
                    ReasonCode::CordonedByOther,
                    "cordoned by someone else; drydock leaves it alone until it is uncordoned"
                        .into(),
                ));
            }
            if let WindowState::Closed { opens, description } = &window_states[pi] {
                if let Some(t) = opens {
                    pass.wakeups.push(*t);
                }
                return Some(queued(
                    ReasonCode::OutsideWindow,
                    format!("window opens {description}"),
                ));
            }
            let t = &tally[pi];
            if pool.canary > 0
                && t.at_target < pool.canary as usize
                && t.target.as_ref() == Some(staged)
            {
                let busy = t.in_flight + t.starting + t.listing;
                if t.at_target + busy >= pool.canary as usize {
                    return Some(queued(
                        ReasonCode::CanaryFirst,
                        format!(
                            "pool {}: waiting for {} canary node(s) to update and bake first ({} done)",
                            pool.name, pool.canary, t.at_target
                        ),
                    ));
                }
            }
            if t.unavailable + t.starting + t.listing >= limits[pi] {
                // Worded without the count of the moment, so a queue of thousands
                // is not rewritten each time a slot frees and fills again.
                return Some(queued(
                    ReasonCode::PoolAtCapacity,
                    format!(
                        "pool {}: at its limit of {} unavailable node(s)",
                        pool.name, limits[pi]
                    ),
                ));
            }
            None
        })();
        if let Some(reason) = gate {
            if reason.code == ReasonCode::PoolAtCapacity {
                let t = &mut tally[pi];
                t.in_line += 1;
                if t.in_line <= t.past_drain.min(LIST_AHEAD_MAX) && !snapshot.pods_listed(v.idx) {
                    pass.list_ahead.push(v.node.name.clone());
                }
            }
            // A node the budgets held back keeps saying so while they still do, when the
            // pool fills up meanwhile: both are true, the budget is the more telling, and
            // a queue that swapped reasons each time a slot freed and filled would cost a
            // write per node each time.
            let reason = match reason.code {
                ReasonCode::PoolAtCapacity => {
                    budgets.still_blocks(&pass, v, pool).unwrap_or(reason)
                }
                _ => reason,
            };
            pass.wait(v, Phase::Queued, reason);
            continue;
        }

        // Pods: what the drain needs, and whether policy allows it. Unlisted, they are
        // asked for, and the slot is held for the node meanwhile, so the plan asks for
        // no more lists than it has slots to fill.
        if !snapshot.pods_listed(v.idx) {
            tally[pi].listing += 1;
            pass.list_pods.push(v.node.name.clone());
            continue;
        }
        let need = match pass.needs(v, pool) {
            Ok(need) => need,
            Err(reason) => {
                pass.wait(v, Phase::Queued, reason);
                continue;
            }
        };
        let blocked = budgets.blocking(snapshot, &need, standing_pdb(v));
        if let Some(reason) = blocked {
            // Reserve what this node waits for, so later nodes do not starve it.
            budgets.reserve(&need);
            pass.wait(v, Phase::Queued, reason);
            continue;
        }
        budgets.spend(&need);
        tally[pi].starting += 1;
        let msg = format!(
            "pool {}: {} of {} unavailable; updating to {staged}",
            pool.name,
            tally[pi].unavailable + tally[pi].starting,
            limits[pi]
        );
        let evict = pass.pod_refs(v, true);
        pass.act(
            v,
            Action::Drain { start: true, evict },
            Reason::new(ReasonCode::Scheduled, msg),
        );
    }

    let mut actions = Vec::new();
    let mut waiting = Vec::new();
    for i in snapshot.nodes_by_name() {
        match pass.answers[i].take() {
            Some(Answer::Act(a)) => actions.push(a),
            Some(Answer::Wait(w)) => waiting.push(w),
            None => {}
        }
    }
    let next_wakeup = pass.wakeups.into_iter().filter(|t| *t > now).min();
    let pools_out = pools
        .iter()
        .enumerate()
        .filter(|(i, _)| tally[*i].nodes > 0)
        .map(|(i, p)| {
            let t = &tally[i];
            PoolStatus {
                name: p.name.clone(),
                nodes: t.nodes,
                unavailable: t.unavailable,
                max_unavailable: limits[i],
                pending: t.pending,
                in_flight: t.in_flight,
                failed: t.failed.len(),
                starting: t.starting,
                paused: p.paused || policy.paused,
                halted: !t.failed.is_empty()
                    && t.failed.len() >= p.health.halt_after_failures as usize,
                window: match &window_states[i] {
                    WindowState::Open { closes: None } => "always open".into(),
                    WindowState::Open { closes: Some(c) } => format!("open until {}", hhmm(*c)),
                    WindowState::Closed { description, .. } => format!("opens {description}"),
                },
            }
        })
        .collect();
    let mut list_pods = pass.list_pods;
    list_pods.sort();
    Plan {
        now,
        actions,
        waiting,
        pools: pools_out,
        next_wakeup,
        list_pods,
        list_ahead: pass.list_ahead,
    }
}

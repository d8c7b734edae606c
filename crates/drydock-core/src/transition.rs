//! What the operator records for the planner's answer: a node's next operator state (its
//! `drydock.dev/` command keys), and the Events a person should see for it.
//!
//! Pure functions, so the operator's writes are a function of (state, plan, now): a
//! restarted or new leader that sees the same state writes the same thing, and a write
//! that already happened is a no-op.

use jiff::Timestamp;

use crate::planner::{Action, PlannedAction, Waiting};
use crate::protocol::{NodeState, OperatorState, Phase};

/// The node's operator state once `action` is applied at `now`.
pub fn after_action(current: &NodeState, action: &PlannedAction, now: Timestamp) -> OperatorState {
    let op = &current.operator;
    let phase = action.action.next_phase();
    let mut next = OperatorState {
        phase: Some(phase),
        since: if op.phase() == phase && op.since.is_some() {
            op.since
        } else {
            Some(now)
        },
        reason_code: Some(action.reason.code.as_str().to_string()),
        reason: Some(action.reason.message.clone()),
        pool: Some(action.pool.clone()),
        ..op.clone()
    };
    match &action.action {
        Action::Drain { start, .. } => {
            if *start {
                next.cordoned = true;
                next.drain_started = Some(now);
                next.since = Some(now);
            }
        }
        Action::ForceDrain { .. } | Action::MarkRebooting | Action::Verify => {}
        Action::GrantReboot { token, target } => {
            next.token = Some(*token);
            next.target_version = crate::version::OsVersion::parse_any(target)
                .ok()
                .or(next.target_version);
            next.grant_slot = current.agent.booted_slot.clone();
            next.grant_boot_id = current.agent.boot_id.clone();
        }
        Action::Complete { uncordon }
        | Action::Hold { uncordon }
        | Action::Fail { uncordon }
        | Action::Release { uncordon } => {
            if *uncordon {
                next.cordoned = false;
            }
            next.drain_started = None;
            if matches!(
                action.action,
                Action::Complete { .. } | Action::Release { .. }
            ) {
                next.grant_slot = None;
                next.grant_boot_id = None;
            }
        }
    }
    next
}

/// The node's operator state while it waits, if that differs from what is recorded (the
/// phase a person sees — Queued rather than Idle — and why).
pub fn while_waiting(
    current: &NodeState,
    waiting: &Waiting,
    now: Timestamp,
) -> Option<OperatorState> {
    let op = &current.operator;
    let code = waiting.reason.code.as_str();
    let same = op.phase() == waiting.phase
        && op.reason_code.as_deref() == Some(code)
        && op.reason.as_deref() == Some(waiting.reason.message.as_str())
        && op.pool.as_deref() == Some(waiting.pool.as_str());
    if same {
        return None;
    }
    // Held and Failed keep the reason their action recorded (the planner reads it back,
    // e.g. to see whether a person's hold was lifted).
    if matches!(waiting.phase, Phase::Held | Phase::Failed) && op.phase() == waiting.phase {
        return None;
    }
    // Idle nodes that are up to date carry no reason: nothing to see, nothing to write.
    if waiting.phase == Phase::Idle
        && op.phase() == Phase::Idle
        && op.reason_code.is_none()
        && op.pool.as_deref() == Some(waiting.pool.as_str())
    {
        return None;
    }
    Some(OperatorState {
        phase: Some(waiting.phase),
        since: if op.phase() == waiting.phase && op.since.is_some() {
            op.since
        } else {
            Some(now)
        },
        reason_code: Some(code.to_string()),
        reason: Some(waiting.reason.message.clone()),
        pool: Some(waiting.pool.clone()),
        ..op.clone()
    })
}

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Progress.
    Normal,
    /// Needs a look.
    Warning,
}

/// An Event for a person reading `kubectl describe node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Normal or Warning.
    pub severity: Severity,
    /// `DrainStarted`, `RebootGranted`, `Rebooted`, `Verified`, …
    pub reason: &'static str,
    /// The sentence.
    pub note: String,
}

/// The Events that applying `action` (from `current`) produces: one per step a person
/// follows on `kubectl describe node` — the cordon goes with the drain that starts, and
/// an uncordon with the step that ends the update (each Event is a write to the API
/// server, so a rollout of thousands of nodes must not make more than it needs).
pub fn events_for(current: &NodeState, action: &PlannedAction) -> Vec<NodeEvent> {
    let ev = |severity, reason, note: String| NodeEvent {
        severity,
        reason,
        note,
    };
    let msg = action.reason.message.clone();
    let uncordoned = |note: String, uncordon: bool| {
        if uncordon && current.operator.cordoned {
            format!("{note}; uncordoned the node drydock had cordoned")
        } else {
            note
        }
    };
    let mut out = Vec::new();
    match &action.action {
        Action::Drain { start: true, evict } => out.push(ev(
            Severity::Normal,
            "DrainStarted",
            format!(
                "cordoned and draining for the update ({msg}): {} pod(s) to evict",
                evict.len()
            ),
        )),
        Action::Drain { .. } | Action::MarkRebooting => {}
        Action::ForceDrain { delete } => out.push(ev(
            Severity::Warning,
            "DrainForced",
            format!("{msg}; deleting {} pod(s)", delete.len()),
        )),
        Action::GrantReboot { token, target } => out.push(ev(
            Severity::Normal,
            "RebootGranted",
            format!("reboot into {target} granted (token {token})"),
        )),
        Action::Verify => out.push(ev(Severity::Normal, "Rebooted", msg)),
        Action::Complete { uncordon } => {
            out.push(ev(Severity::Normal, "Verified", uncordoned(msg, *uncordon)))
        }
        Action::Hold { uncordon } => {
            out.push(ev(Severity::Warning, "Held", uncordoned(msg, *uncordon)))
        }
        Action::Fail { uncordon } => {
            out.push(ev(Severity::Warning, "Failed", uncordoned(msg, *uncordon)))
        }
        Action::Release { uncordon } => {
            out.push(ev(Severity::Normal, "Released", uncordoned(msg, *uncordon)))
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{Reason, ReasonCode};
    use crate::protocol::AgentStatus;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn planned(action: Action, code: ReasonCode) -> PlannedAction {
        PlannedAction {
            node: "n".into(),
            pool: "workers".into(),
            action,
            reason: Reason {
                code,
                message: "because".into(),
            },
        }
    }

    #[test]
    fn a_drain_start_cordons_and_records_when() {
        let now = t("2026-11-22T10:00:00Z");
        let s = NodeState::default();
        let a = planned(
            Action::Drain {
                start: true,
                evict: vec![],
            },
            ReasonCode::Scheduled,
        );
        let next = after_action(&s, &a, now);
        assert_eq!(next.phase, Some(Phase::Draining));
        assert!(next.cordoned);
        assert_eq!(next.drain_started, Some(now));
        assert_eq!(next.pool.as_deref(), Some("workers"));
        let names: Vec<_> = events_for(&s, &a).iter().map(|e| e.reason).collect();
        assert_eq!(
            names,
            vec!["DrainStarted"],
            "one Event for the cordon and the drain"
        );
        // Continuing the drain keeps the phase's start.
        let cur = NodeState {
            operator: next.clone(),
            ..NodeState::default()
        };
        let later = after_action(
            &cur,
            &planned(
                Action::Drain {
                    start: false,
                    evict: vec![],
                },
                ReasonCode::DrainInProgress,
            ),
            t("2026-11-22T10:05:00Z"),
        );
        assert_eq!(later.since, Some(now));
        assert_eq!(later.drain_started, Some(now));
    }

    #[test]
    fn a_grant_binds_token_target_slot_and_boot() {
        let s = NodeState {
            agent: AgentStatus {
                booted_slot: Some("a".into()),
                boot_id: Some("boot-1".into()),
                ..AgentStatus::default()
            },
            ..NodeState::default()
        };
        let next = after_action(
            &s,
            &planned(
                Action::GrantReboot {
                    token: 4,
                    target: "4230.0.0".into(),
                },
                ReasonCode::DrainComplete,
            ),
            t("2026-11-22T10:00:00Z"),
        );
        assert_eq!(next.token, Some(4));
        assert_eq!(
            next.target_version.map(|v| v.to_string()).as_deref(),
            Some("4230.0.0")
        );
        assert_eq!(next.grant_slot.as_deref(), Some("a"));
        assert_eq!(next.grant_boot_id.as_deref(), Some("boot-1"));
        assert_eq!(next.phase, Some(Phase::RebootGranted));
    }

    #[test]
    fn completing_uncordons_only_what_drydock_cordoned_and_keeps_the_token() {
        let mut s = NodeState::default();
        s.operator.cordoned = true;
        s.operator.token = Some(4);
        s.operator.phase = Some(Phase::Verifying);
        let a = planned(Action::Complete { uncordon: true }, ReasonCode::Baked);
        let next = after_action(&s, &a, t("2026-11-22T10:00:00Z"));
        assert!(!next.cordoned);
        assert_eq!(next.token, Some(4), "tokens only grow");
        assert_eq!(next.phase, Some(Phase::Done));
        let names: Vec<_> = events_for(&s, &a).iter().map(|e| e.reason).collect();
        let evs = events_for(&s, &a);
        assert_eq!(
            names,
            vec!["Verified"],
            "one Event for the end and the uncordon"
        );
        assert!(
            evs[0]
                .note
                .ends_with("uncordoned the node drydock had cordoned"),
            "{evs:?}"
        );
        s.operator.cordoned = false;
        let evs = events_for(&s, &a);
        assert!(!evs[0].note.contains("uncordoned"), "{evs:?}");
        s.operator.cordoned = true;
        let held = events_for(
            &s,
            &planned(Action::Hold { uncordon: true }, ReasonCode::DrainTimeout),
        );
        assert_eq!(held[0].severity, Severity::Warning);
    }

    #[test]
    fn waiting_writes_only_changes() {
        let now = t("2026-11-22T10:00:00Z");
        let w = Waiting {
            node: "n".into(),
            pool: "workers".into(),
            phase: Phase::Queued,
            reason: Reason {
                code: ReasonCode::PdbBlocked,
                message: "budget shop/web allows 0".into(),
            },
        };
        let s = NodeState::default();
        let next = while_waiting(&s, &w, now).expect("a change");
        assert_eq!(next.phase, Some(Phase::Queued));
        assert_eq!(next.reason_code.as_deref(), Some("PdbBlocked"));
        let s = NodeState {
            operator: next,
            ..NodeState::default()
        };
        assert_eq!(while_waiting(&s, &w, t("2026-11-22T10:01:00Z")), None);
        // A Held node keeps the reason its Hold recorded.
        let mut held = NodeState::default();
        held.operator.phase = Some(Phase::Held);
        held.operator.reason_code = Some("HeldByPerson".into());
        let w = Waiting {
            phase: Phase::Held,
            reason: Reason {
                code: ReasonCode::Held,
                message: "held by a person: disk check".into(),
            },
            ..w
        };
        assert_eq!(while_waiting(&held, &w, now), None);
    }
}

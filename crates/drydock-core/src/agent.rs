//! The agent's decisions, without I/O: what to publish on the Node, when a progress
//! change is worth a write, whether a grant allows a reboot now, and whether the channel
//! must change. The `drydock-agent` binary feeds these with what it reads from the host
//! and the API server, and does what they say.
//!
//! Reboot safety lives in [`reboot_decision`]: the agent reboots only for a grant that
//! names the version the host has staged and was made during the *current* boot. A reboot
//! changes the boot id, so a grant can never cause a second reboot — whether the
//! acknowledgement was written, lost, or written just before the agent was killed.

use std::time::Duration;

use jiff::Timestamp;

use crate::protocol::{AgentStatus, NodeState, Phase, UpdateStatus};
use crate::version::{OsFamily, OsVersion};

/// What the agent knows about its host right now.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// OS family.
    pub os: OsFamily,
    /// Booted version.
    pub booted_version: OsVersion,
    /// Booted slot (`a`/`b` or a deployment checksum).
    pub booted_slot: String,
    /// Kernel boot id.
    pub boot_id: String,
    /// Version staged for the next boot.
    pub staged_version: Option<OsVersion>,
    /// The update service's state.
    pub update_status: UpdateStatus,
    /// Download progress 0–100.
    pub progress: u8,
    /// Last update check.
    pub last_check: Option<Timestamp>,
    /// Channel the host follows.
    pub channel: Option<String>,
    /// A message for people (the last error), if any.
    pub message: Option<String>,
}

/// The status to publish for `host`, carrying over the last acknowledged token.
pub fn status_for(host: &HostView, reboot_ack: Option<u64>, agent_version: &str) -> AgentStatus {
    AgentStatus {
        os: Some(host.os),
        booted_version: Some(host.booted_version.clone()),
        booted_slot: Some(host.booted_slot.clone()),
        boot_id: Some(host.boot_id.clone()),
        staged_version: host
            .staged_version
            .clone()
            .filter(|s| *s != host.booted_version),
        update_status: Some(host.update_status),
        progress: matches!(host.update_status, UpdateStatus::Downloading).then_some(host.progress),
        last_check: host.last_check,
        channel: host.channel.clone(),
        agent_version: Some(agent_version.to_string()),
        reboot_ack,
        message: host.message.clone(),
        reboot_needed: host
            .staged_version
            .as_ref()
            .is_some_and(|s| *s != host.booted_version),
    }
}

/// Progress writes are limited to one per this many percentage points...
pub const PROGRESS_STEP_PERCENT: u8 = 10;
/// ...or one per this long, whichever comes first.
pub const PROGRESS_INTERVAL_SECS: u64 = 30;

/// Whether `next` must be written, given what was last written (`published`) and when.
/// Any change but progress is written at once; progress alone only every
/// [`PROGRESS_STEP_PERCENT`] points or [`PROGRESS_INTERVAL_SECS`], so a download is a
/// handful of writes, not hundreds.
pub fn should_publish(
    published: Option<&AgentStatus>,
    published_at: Option<Timestamp>,
    next: &AgentStatus,
    now: Timestamp,
) -> bool {
    let Some(old) = published else { return true };
    if old == next {
        return false;
    }
    let mut without_progress = next.clone();
    without_progress.progress = old.progress;
    if &without_progress != old {
        return true;
    }
    let (a, b) = (old.progress.unwrap_or(0), next.progress.unwrap_or(0));
    if a.abs_diff(b) >= PROGRESS_STEP_PERCENT || b == 100 {
        return true;
    }
    let interval = Duration::from_secs(PROGRESS_INTERVAL_SECS);
    published_at.is_none_or(|t| now.duration_since(t).unsigned_abs() >= interval)
}

/// What a freshly read Node lets the agent do about rebooting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootDecision {
    /// Acknowledge `token` on the Node, then ask logind to reboot.
    Reboot {
        /// The grant's token.
        token: u64,
    },
    /// Nothing to do (no grant, or it is already acknowledged).
    Nothing,
    /// There is a grant, but it must not be acted on; the reason is for logs and status.
    Refuse(String),
}

/// Decides on the grant in `node` (read fresh from the API) for the host as it is now.
///
/// A grant is bound to the boot it was made in (`grant-boot-id`). In that boot the agent
/// reboots for it — also when it already acknowledged it, because an agent killed between
/// the acknowledgement and the reboot must finish the job; a reboot changes the boot id,
/// so this can never reboot twice. In any later boot the grant is spent.
pub fn reboot_decision(node: &NodeState, host: &HostView) -> RebootDecision {
    let op = &node.operator;
    let Some(token) = op.token else {
        return RebootDecision::Nothing;
    };
    if !matches!(op.phase(), Phase::RebootGranted | Phase::Rebooting) {
        return RebootDecision::Nothing;
    }
    let acknowledged = node.agent.reboot_ack.is_some_and(|ack| ack >= token);
    if op.grant_boot_id.as_deref() != Some(host.boot_id.as_str()) {
        if acknowledged {
            return RebootDecision::Nothing;
        }
        return RebootDecision::Refuse(format!(
            "grant {token} was made during boot {} but this is boot {}; the node already rebooted since",
            op.grant_boot_id.as_deref().unwrap_or("unknown"),
            host.boot_id
        ));
    }
    match (&op.target_version, &host.staged_version) {
        (Some(target), Some(staged)) if target == staged => RebootDecision::Reboot { token },
        (Some(target), Some(staged)) => RebootDecision::Refuse(format!(
            "grant {token} is for {target} but {staged} is staged"
        )),
        (Some(target), None) => RebootDecision::Refuse(format!(
            "grant {token} is for {target} but nothing is staged"
        )),
        (None, _) => RebootDecision::Refuse(format!("grant {token} names no target version")),
    }
}

/// The channel to switch the host to, if the operator wants another one.
pub fn channel_change<'a>(desired: Option<&'a str>, current: Option<&str>) -> Option<&'a str> {
    match desired {
        Some(d) if Some(d) != current => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::OperatorState;

    fn v(s: &str) -> OsVersion {
        OsVersion::parse(OsFamily::Flatcar, s).unwrap()
    }

    fn host() -> HostView {
        HostView {
            os: OsFamily::Flatcar,
            booted_version: v("4081.2.0"),
            booted_slot: "a".into(),
            boot_id: "boot-1".into(),
            staged_version: Some(v("4230.0.0")),
            update_status: UpdateStatus::Staged,
            progress: 100,
            last_check: None,
            channel: Some("stable".into()),
            message: None,
        }
    }

    fn granted(token: u64, ack: Option<u64>, boot: &str, target: &str) -> NodeState {
        let mut n = NodeState {
            operator: OperatorState {
                phase: Some(Phase::RebootGranted),
                token: Some(token),
                target_version: Some(v(target)),
                grant_boot_id: Some(boot.into()),
                grant_slot: Some("a".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        n.agent.reboot_ack = ack;
        n
    }

    #[test]
    fn a_fresh_grant_for_the_staged_version_in_this_boot_reboots() {
        assert_eq!(
            reboot_decision(&granted(3, Some(2), "boot-1", "4230.0.0"), &host()),
            RebootDecision::Reboot { token: 3 }
        );
        assert_eq!(
            reboot_decision(&granted(1, None, "boot-1", "4230.0.0"), &host()),
            RebootDecision::Reboot { token: 1 }
        );
    }

    #[test]
    fn an_acknowledged_grant_never_reboots_again_after_the_reboot() {
        let mut h = host();
        h.boot_id = "boot-2".into();
        assert_eq!(
            reboot_decision(&granted(3, Some(3), "boot-1", "4230.0.0"), &h),
            RebootDecision::Nothing
        );
    }

    #[test]
    fn an_acknowledged_grant_in_the_same_boot_resumes_an_interrupted_reboot() {
        // The agent wrote the ack, then died before logind rebooted: the boot id is
        // unchanged, so rebooting now is the first (and only) reboot for this grant.
        assert_eq!(
            reboot_decision(&granted(3, Some(3), "boot-1", "4230.0.0"), &host()),
            RebootDecision::Reboot { token: 3 }
        );
    }

    #[test]
    fn a_grant_from_an_earlier_boot_is_refused_even_if_the_ack_was_lost() {
        let mut h = host();
        h.boot_id = "boot-2".into();
        match reboot_decision(&granted(3, Some(2), "boot-1", "4230.0.0"), &h) {
            RebootDecision::Refuse(why) => assert!(why.contains("already rebooted"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_grant_for_another_version_or_nothing_staged_is_refused() {
        assert!(matches!(
            reboot_decision(&granted(3, None, "boot-1", "4231.0.0"), &host()),
            RebootDecision::Refuse(_)
        ));
        let mut h = host();
        h.staged_version = None;
        assert!(matches!(
            reboot_decision(&granted(3, None, "boot-1", "4230.0.0"), &h),
            RebootDecision::Refuse(_)
        ));
    }

    #[test]
    fn no_grant_or_another_phase_does_nothing() {
        assert_eq!(
            reboot_decision(&NodeState::default(), &host()),
            RebootDecision::Nothing
        );
        let mut n = granted(3, None, "boot-1", "4230.0.0");
        n.operator.phase = Some(Phase::Held);
        assert_eq!(reboot_decision(&n, &host()), RebootDecision::Nothing);
    }

    #[test]
    fn published_status_reflects_the_host() {
        let s = status_for(&host(), Some(2), "0.1.0");
        assert!(s.reboot_needed && s.has_staged_update());
        assert_eq!(s.progress, None, "progress only while downloading");
        let mut h = host();
        h.staged_version = Some(v("4081.2.0"));
        let s = status_for(&h, None, "0.1.0");
        assert_eq!(
            s.staged_version, None,
            "staging the booted version is not an update"
        );
        assert!(!s.reboot_needed);
    }

    #[test]
    fn progress_writes_are_throttled_and_everything_else_is_not() {
        let t0: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut h = host();
        h.update_status = UpdateStatus::Downloading;
        h.progress = 10;
        let first = status_for(&h, None, "0.1.0");
        assert!(should_publish(None, None, &first, t0));
        assert!(!should_publish(Some(&first), Some(t0), &first, t0));
        h.progress = 15;
        let small = status_for(&h, None, "0.1.0");
        assert!(!should_publish(
            Some(&first),
            Some(t0),
            &small,
            t0 + Duration::from_secs(5)
        ));
        assert!(should_publish(
            Some(&first),
            Some(t0),
            &small,
            t0 + Duration::from_secs(31)
        ));
        h.progress = 20;
        assert!(should_publish(
            Some(&first),
            Some(t0),
            &status_for(&h, None, "0.1.0"),
            t0 + Duration::from_secs(1)
        ));
        h.progress = 12;
        h.update_status = UpdateStatus::Error;
        assert!(should_publish(
            Some(&first),
            Some(t0),
            &status_for(&h, None, "0.1.0"),
            t0
        ));
        // A whole download from 0 to 100 in 1% steps within a minute: at most 11 writes.
        let mut published = None;
        let mut at = None;
        let mut writes = 0;
        for p in 0..=100u8 {
            h.update_status = UpdateStatus::Downloading;
            h.progress = p;
            let s = status_for(&h, None, "0.1.0");
            let now = t0 + Duration::from_millis(u64::from(p) * 500);
            if should_publish(published.as_ref(), at, &s, now) {
                writes += 1;
                published = Some(s);
                at = Some(now);
            }
        }
        assert!(writes <= 12, "{writes} writes for one download");
    }

    #[test]
    fn channel_changes_only_when_the_operator_wants_another() {
        assert_eq!(channel_change(Some("beta"), Some("stable")), Some("beta"));
        assert_eq!(channel_change(Some("stable"), Some("stable")), None);
        assert_eq!(channel_change(None, Some("stable")), None);
        assert_eq!(channel_change(Some("lts"), None), Some("lts"));
    }
}

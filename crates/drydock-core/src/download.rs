//! Which node may download an offered version now. The operator's Omaha proxy asks this
//! for every update check: a node gets the offer only if its pool's pin allows the
//! version and the rollout has reached it. Downloads then follow the rollout order, with
//! canaries first and at most a pool's `maxUnavailable` of nodes ahead, instead of the
//! whole fleet pulling the payload the moment it is published.
//!
//! The order is the planner's: nodes sorted by a hash of their UID and the target
//! version. A node that has already staged the version may always fetch it again.

use std::cmp::Ordering;

use crate::planner::fnv1a;
use crate::policy::Policy;
use crate::protocol::Phase;
use crate::snapshot::{NodeSnapshot, Snapshot};
use crate::version::OsVersion;

/// Why a node may not download an offer now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// A short label for metrics: `pinned`, `downgrade`, `paused`, `halted`, `not-yet`,
    /// `held`, `incomparable`.
    pub code: &'static str,
    /// For people (logs).
    pub message: String,
}

impl Withheld {
    fn new(code: &'static str, message: String) -> Withheld {
        Withheld { code, message }
    }
}

/// Whether `node` (by name) may download `offered` now, as far as `policy` and the
/// fleet in `snapshot` say.
pub fn may_download(
    snapshot: &Snapshot,
    policy: &Policy,
    node: &str,
    offered: &OsVersion,
) -> Result<(), Withheld> {
    let Some(idx) = snapshot.node_index(node) else {
        return Err(Withheld::new(
            "unknown",
            format!("no node {node} in the cluster"),
        ));
    };
    let me = &snapshot.nodes()[idx];
    let pool = policy.pool_for(&me.labels);
    let state = me.state();
    let agent = &state.agent;

    if let Some(pin) = &pool.version {
        match pin.allows(offered) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Withheld::new(
                    "pinned",
                    format!("{offered} is outside pool {}'s pin {pin}", pool.name),
                ));
            }
            Err(e) => {
                return Err(Withheld::new(
                    "incomparable",
                    format!("{offered} cannot be checked against pin {pin}: {e}"),
                ));
            }
        }
    }
    if let Some(booted) = &agent.booted_version {
        match offered.compare(booted) {
            Ok(Ordering::Less) if !policy.allow_downgrade => {
                return Err(Withheld::new(
                    "downgrade",
                    format!("{offered} is older than the running {booted}"),
                ));
            }
            Ok(Ordering::Equal) => return Ok(()),
            Err(e) => return Err(Withheld::new("incomparable", e.to_string())),
            _ => {}
        }
    }
    // Already fetched: let it fetch again (a restarted update_engine re-checks).
    if agent.staged_version.as_ref() == Some(offered) {
        return Ok(());
    }
    if policy.paused || pool.paused {
        return Err(Withheld::new(
            "paused",
            format!("pool {} is paused", pool.name),
        ));
    }
    if matches!(
        state.operator.phase,
        Some(Phase::Held) | Some(Phase::Failed)
    ) || state.person.hold.is_some()
    {
        return Err(Withheld::new("held", format!("{node} is held or failed")));
    }

    // The pool's nodes, in the planner's order; those already on the version are done.
    let members: Vec<(&NodeSnapshot, Option<Phase>, bool)> = snapshot
        .nodes()
        .iter()
        .filter(|n| std::ptr::eq(policy.pool_for(&n.labels), pool))
        .map(|n| {
            let s = n.state();
            let done = s.agent.booted_version.as_ref() == Some(offered);
            (n.node(), s.operator.phase, done)
        })
        .collect();
    let failed = members
        .iter()
        .filter(|(_, p, _)| *p == Some(Phase::Failed))
        .count();
    if failed > 0 && failed >= pool.health.halt_after_failures as usize {
        return Err(Withheld::new(
            "halted",
            format!("pool {} is halted after {failed} failed node(s)", pool.name),
        ));
    }
    let done = members.iter().filter(|(_, _, d)| *d).count();
    let target = offered.to_string();
    let mut queue: Vec<(u64, &str)> = members
        .iter()
        .filter(|(n, phase, d)| {
            // Nodes that cannot move now do not take a place ahead of the rest.
            !d && n.ready
                && !matches!(phase, Some(Phase::Held) | Some(Phase::Failed))
                && (!n.unschedulable || phase.is_some_and(Phase::is_disrupting))
        })
        .map(|(n, _, _)| (fnv1a(&[&n.uid, &target]), n.name.as_str()))
        .collect();
    queue.sort();
    let limit = pool.max_unavailable.resolve(members.len());
    let places = if (done as u32) < pool.canary {
        pool.canary as usize - done
    } else {
        limit
    };
    match queue.iter().position(|(_, n)| *n == node) {
        Some(p) if p < places => Ok(()),
        Some(p) => Err(Withheld::new(
            "not-yet",
            format!(
                "{node} is number {} in pool {}'s rollout of {offered}; {places} may download now{}",
                p + 1,
                pool.name,
                if (done as u32) < pool.canary {
                    " (canaries first)"
                } else {
                    ""
                }
            ),
        )),
        None => Err(Withheld::new(
            "not-yet",
            format!(
                "{node} cannot take part in the rollout now (NotReady or cordoned by someone else)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys;
    use std::collections::BTreeMap;

    fn node(name: &str, booted: &str, extra: &[(&str, &str)]) -> NodeSnapshot {
        let mut annotations: BTreeMap<String, String> = BTreeMap::from([
            (keys::OS.into(), "flatcar".into()),
            (keys::BOOTED_VERSION.into(), booted.into()),
        ]);
        for (k, v) in extra {
            annotations.insert((*k).into(), (*v).into());
        }
        NodeSnapshot {
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: [("pool", "w")].into(),
            annotations: annotations.into(),
            ready: true,
            unschedulable: false,
        }
    }

    fn policy(extra: &str) -> Policy {
        Policy::from_yaml(&format!(
            "pools:\n  - name: workers\n    nodeSelector: {{pool: w}}\n    maxUnavailable: 2\n{extra}"
        ))
        .expect("policy")
    }

    fn v(s: &str) -> OsVersion {
        OsVersion::parse_any(s).expect("version")
    }

    fn fleet(n: usize) -> Vec<NodeSnapshot> {
        (0..n)
            .map(|i| node(&format!("n{i}"), "4081.2.0", &[]))
            .collect()
    }

    fn allowed(s: &Snapshot, p: &Policy, offered: &str) -> Vec<String> {
        s.nodes()
            .iter()
            .filter(|n| may_download(s, p, &n.name, &v(offered)).is_ok())
            .map(|n| n.name.clone())
            .collect()
    }

    #[test]
    fn at_most_max_unavailable_nodes_download_ahead_and_the_next_follow() {
        let mut nodes = fleet(6);
        let p = policy("");
        let s = Snapshot::new(nodes.clone(), vec![], vec![]);
        let first = allowed(&s, &p, "4230.0.0");
        assert_eq!(first.len(), 2, "{first:?}");
        // Those two update; the next two may download.
        for n in &mut nodes {
            if first.contains(&n.name) {
                n.annotations
                    .insert(keys::BOOTED_VERSION.into(), "4230.0.0".into());
            }
        }
        let s = Snapshot::new(nodes.clone(), vec![], vec![]);
        let second = allowed(&s, &p, "4230.0.0");
        assert_eq!(second.len(), 4, "two done, two more ahead: {second:?}");
        assert!(first.iter().all(|n| second.contains(n)));
    }

    #[test]
    fn canaries_download_first() {
        let p = policy("    canary: 1\n");
        let s = Snapshot::new(fleet(6), vec![], vec![]);
        assert_eq!(allowed(&s, &p, "4230.0.0").len(), 1);
    }

    #[test]
    fn a_pin_withholds_the_offer_from_every_node() {
        let p = policy("    version: \"<4230\"\n");
        let s = Snapshot::new(fleet(3), vec![], vec![]);
        let e = may_download(&s, &p, "n0", &v("4230.0.0")).expect_err("pinned");
        assert_eq!(e.code, "pinned");
        assert!(e.message.contains("<4230"), "{}", e.message);
        assert_eq!(allowed(&s, &p, "4230.0.0"), Vec::<String>::new());
        assert_eq!(allowed(&s, &p, "4152.2.0").len(), 2, "within the pin");
    }

    #[test]
    fn downgrades_paused_pools_held_nodes_and_strangers_get_nothing() {
        let s = Snapshot::new(fleet(3), vec![], vec![]);
        let e = may_download(&s, &policy(""), "n0", &v("3975.2.0")).expect_err("older");
        assert_eq!(e.code, "downgrade");
        let e = may_download(&s, &policy("    paused: true\n"), "n0", &v("4230.0.0"))
            .expect_err("paused");
        assert_eq!(e.code, "paused");
        let e = may_download(&s, &policy(""), "ghost", &v("4230.0.0")).expect_err("unknown");
        assert_eq!(e.code, "unknown");
        let mut nodes = fleet(3);
        nodes[0]
            .annotations
            .insert(keys::HOLD.into(), "disk".into());
        let s = Snapshot::new(nodes, vec![], vec![]);
        let e = may_download(&s, &policy(""), "n0", &v("4230.0.0")).expect_err("held");
        assert_eq!(e.code, "held");
    }

    #[test]
    fn a_node_that_staged_the_version_may_fetch_it_again() {
        let mut nodes = fleet(6);
        let p = policy("    canary: 1\n");
        let s = Snapshot::new(nodes.clone(), vec![], vec![]);
        let later = s
            .nodes()
            .iter()
            .find(|n| may_download(&s, &p, &n.name, &v("4230.0.0")).is_err())
            .map(|n| n.name.clone())
            .expect("one waits");
        for n in &mut nodes {
            if n.name == later {
                n.annotations
                    .insert(keys::STAGED_VERSION.into(), "4230.0.0".into());
            }
        }
        let s = Snapshot::new(nodes, vec![], vec![]);
        assert!(may_download(&s, &p, &later, &v("4230.0.0")).is_ok());
    }

    #[test]
    fn not_ready_nodes_do_not_block_the_queue() {
        let mut nodes = fleet(3);
        let p = policy("");
        for n in &mut nodes {
            n.ready = false;
        }
        nodes[2].ready = true;
        let s = Snapshot::new(nodes, vec![], vec![]);
        assert_eq!(allowed(&s, &p, "4230.0.0"), ["n2"]);
    }
}

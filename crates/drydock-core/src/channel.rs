//! Which channel and version pin each node should carry. A pool's `channel` is carried to its nodes as
//! the operator's `desired-channel` annotation; the agent then rewrites `GROUP` in
//! update.conf (Flatcar) or rebases onto the stream's ref (CoreOS), and the Omaha proxy
//! asks upstream with it as `track`. A move to an older channel (beta → stable, next →
//! testing) would pull an older OS and is refused unless the policy allows downgrades.

use crate::policy::Policy;
use crate::snapshot::ReadNode;

/// What to do about a node's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelDecision {
    /// Nothing to change.
    Keep,
    /// Set the desired channel to this.
    Set(String),
    /// The pool asks for an older channel and downgrades are not allowed.
    Refused {
        /// The channel the pool asks for.
        to: String,
        /// The channel the node follows.
        from: String,
        /// For people (an Event on the node).
        message: String,
    },
}

/// How new a channel's releases are, for the channels Flatcar and Fedora CoreOS publish;
/// None for any other name (a Nebraska group), which has no order.
pub fn rank(channel: &str) -> Option<u8> {
    match channel {
        "lts" => Some(0),
        "stable" => Some(1),
        "beta" | "testing" => Some(2),
        "alpha" | "next" => Some(3),
        _ => None,
    }
}

/// The decision for `node` under `policy`.
pub fn decide(policy: &Policy, node: &ReadNode) -> ChannelDecision {
    let pool = policy.pool_for(&node.labels);
    let Some(want) = pool.channel.as_deref() else {
        return ChannelDecision::Keep;
    };
    let state = node.state();
    let desired = state.operator.desired_channel.as_deref();
    if desired == Some(want) {
        return ChannelDecision::Keep;
    }
    let from = desired.or(state.agent.channel.as_deref());
    let Some(from) = from else {
        // The agent has not said which channel the node follows yet.
        return ChannelDecision::Keep;
    };
    if from == want {
        return ChannelDecision::Keep;
    }
    if let (Some(a), Some(b)) = (rank(want), rank(from))
        && a < b
        && !policy.allow_downgrade
    {
        return ChannelDecision::Refused {
            to: want.to_string(),
            from: from.to_string(),
            message: format!(
                "pool {} asks for channel {want}, older than {from} which {} follows; set allowDowngrade: true to move it",
                pool.name, node.name
            ),
        };
    }
    ChannelDecision::Set(want.to_string())
}

/// The pool's version pin for `node`, when the node does not carry it yet: `Some(None)`
/// removes a pin the pool no longer has. The operator writes it as `version-pin`, so a
/// CoreOS agent choosing from the Cincinnati graph stages only what the pool allows.
pub fn pin_change(policy: &Policy, node: &ReadNode) -> Option<Option<String>> {
    let want = policy
        .pool_for(&node.labels)
        .version
        .as_ref()
        .map(ToString::to_string);
    let state = node.state();
    (state.operator.version_pin != want).then_some(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys;
    use crate::snapshot::NodeSnapshot;
    use std::collections::BTreeMap;

    fn node(reported: Option<&str>, desired: Option<&str>) -> ReadNode {
        ReadNode::new(raw_node(reported, desired))
    }

    fn raw_node(reported: Option<&str>, desired: Option<&str>) -> NodeSnapshot {
        let mut annotations = BTreeMap::new();
        if let Some(c) = reported {
            annotations.insert(keys::CHANNEL.to_string(), c.to_string());
        }
        if let Some(c) = desired {
            annotations.insert(keys::DESIRED_CHANNEL.to_string(), c.to_string());
        }
        NodeSnapshot {
            name: "n0".into(),
            uid: "u".into(),
            labels: crate::strmap::StrMap::new(),
            annotations: annotations.into(),
            ready: true,
            unschedulable: false,
        }
    }

    fn policy(text: &str) -> Policy {
        Policy::from_yaml(text).expect("policy")
    }

    #[test]
    fn a_newer_channel_is_set_and_then_kept() {
        let p = policy("channel: beta\n");
        assert_eq!(
            decide(&p, &node(Some("stable"), None)),
            ChannelDecision::Set("beta".into())
        );
        assert_eq!(
            decide(&p, &node(Some("stable"), Some("beta"))),
            ChannelDecision::Keep
        );
        assert_eq!(decide(&p, &node(Some("beta"), None)), ChannelDecision::Keep);
    }

    #[test]
    fn an_older_channel_is_refused_unless_downgrades_are_allowed() {
        let p = policy("channel: stable\n");
        match decide(&p, &node(Some("beta"), Some("beta"))) {
            ChannelDecision::Refused { to, from, message } => {
                assert_eq!((to.as_str(), from.as_str()), ("stable", "beta"));
                assert!(message.contains("allowDowngrade"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let p = policy("channel: stable\nallowDowngrade: true\n");
        assert_eq!(
            decide(&p, &node(Some("beta"), None)),
            ChannelDecision::Set("stable".into())
        );
    }

    #[test]
    fn unranked_groups_move_freely_and_no_channel_means_no_change() {
        let p = policy("channel: my-nebraska-group\n");
        assert_eq!(
            decide(&p, &node(Some("alpha"), None)),
            ChannelDecision::Set("my-nebraska-group".into())
        );
        assert_eq!(
            decide(&policy("{}\n"), &node(Some("beta"), None)),
            ChannelDecision::Keep
        );
        assert_eq!(
            decide(&policy("channel: beta\n"), &node(None, None)),
            ChannelDecision::Keep,
            "wait for the agent to report the channel"
        );
    }

    #[test]
    fn the_pools_pin_is_carried_and_removed_with_it() {
        let p = policy("version: \"<=41.20251112\"\n");
        assert_eq!(
            pin_change(&p, &node(Some("stable"), None)),
            Some(Some("<=41.20251112".into()))
        );
        let mut raw = raw_node(Some("stable"), None);
        raw.annotations
            .insert(keys::VERSION_PIN.into(), "<=41.20251112".into());
        let n = ReadNode::new(raw);
        assert_eq!(pin_change(&p, &n), None);
        assert_eq!(pin_change(&policy("{}\n"), &n), Some(None));
        assert_eq!(pin_change(&policy("{}\n"), &node(None, None)), None);
    }
}

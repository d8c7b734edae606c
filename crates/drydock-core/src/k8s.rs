//! Conversion of Kubernetes API objects (k8s-openapi types) into snapshot entries.
//!
//! Used by the operator (objects from its watches) and by `drydockctl plan` (objects from
//! a `kubectl get -o json` dump), so both see the cluster the same way.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::selector::{LabelSelector, SelectorOp, SelectorRequirement};
use crate::snapshot::{NodeSnapshot, PdbSnapshot, PodOwner, PodPhase, PodSnapshot};
use crate::strmap::StrMap;

/// Annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Why an object could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The object has no name.
    #[error("a {0} has no metadata.name")]
    MissingName(&'static str),
    /// A selector uses an operator Kubernetes does not define.
    #[error("{kind} {name}: selector operator {op:?} is not In, NotIn, Exists or DoesNotExist")]
    BadSelector {
        /// Object kind.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
        /// The operator.
        op: String,
    },
}

/// A Node as the planner sees it.
pub fn node(n: &Node) -> Result<NodeSnapshot, ConvertError> {
    let empty = BTreeMap::new();
    node_with(
        n,
        n.metadata.labels.as_ref().unwrap_or(&empty).into(),
        n.metadata.annotations.as_ref().unwrap_or(&empty).into(),
    )
}

/// A Node as the planner sees it, its labels and annotations moved rather than copied.
pub fn into_node(mut n: Node) -> Result<NodeSnapshot, ConvertError> {
    let labels = n.metadata.labels.take().unwrap_or_default();
    let annotations = n.metadata.annotations.take().unwrap_or_default();
    node_with(&n, labels.into(), annotations.into())
}

/// A Node as the planner sees it, given its labels and annotations already read (the
/// operator's node cache decodes them from the API server's JSON straight into
/// [`StrMap`]s, never building the maps `n` would hold). Of `n` the rest is read as for
/// any Node: its name (required), UID (the name when absent), Ready condition (`True`)
/// and cordon; its own labels and annotations are not read.
pub fn node_with(
    n: &Node,
    labels: StrMap,
    annotations: StrMap,
) -> Result<NodeSnapshot, ConvertError> {
    let name = n
        .metadata
        .name
        .clone()
        .ok_or(ConvertError::MissingName("Node"))?;
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Ok(NodeSnapshot {
        uid: n.metadata.uid.clone().unwrap_or_else(|| name.clone()),
        name,
        labels,
        annotations,
        ready,
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
    })
}

/// A Pod as the planner sees it.
pub fn pod(p: &Pod) -> Result<PodSnapshot, ConvertError> {
    pod_with(p, p.metadata.labels.clone().unwrap_or_default())
}

/// A Pod as the planner sees it, its labels moved rather than copied (the operator
/// decodes each listed Pod into this and keeps only the result).
pub fn into_pod(mut p: Pod) -> Result<PodSnapshot, ConvertError> {
    let labels = p.metadata.labels.take().unwrap_or_default();
    pod_with(&p, labels)
}

/// The rest of the reading of `p`: name (required), namespace ("default" when absent),
/// UID (the name when absent), owner, phase, Ready, terminating and `emptyDir`.
fn pod_with(p: &Pod, labels: crate::selector::Labels) -> Result<PodSnapshot, ConvertError> {
    let name = p
        .metadata
        .name
        .clone()
        .ok_or(ConvertError::MissingName("Pod"))?;
    let mirror = p
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
    let controller = p
        .metadata
        .owner_references
        .as_ref()
        .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)));
    let owner = match (mirror, controller) {
        (true, _) => PodOwner::Mirror,
        (false, Some(r)) if r.kind == "DaemonSet" => PodOwner::DaemonSet,
        (false, Some(r)) => PodOwner::Controller {
            kind: r.kind.clone(),
            name: r.name.clone(),
        },
        (false, None) => PodOwner::Unmanaged,
    };
    let status = p.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Unknown,
    };
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let spec = p.spec.as_ref();
    Ok(PodSnapshot {
        namespace: p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        uid: p.metadata.uid.clone().unwrap_or_else(|| name.clone()),
        name,
        node: spec.and_then(|s| s.node_name.clone()),
        labels,
        owner,
        phase,
        ready,
        deleted_by: p.metadata.deletion_timestamp.as_ref().map(|t| t.0),
        has_empty_dir: spec
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some())),
    })
}

/// A Kubernetes label selector in drydock's type.
pub fn selector(
    s: &meta::LabelSelector,
    kind: &'static str,
    name: &str,
) -> Result<LabelSelector, ConvertError> {
    let mut match_expressions = Vec::new();
    for r in s.match_expressions.iter().flatten() {
        let operator = match r.operator.as_str() {
            "In" => SelectorOp::In,
            "NotIn" => SelectorOp::NotIn,
            "Exists" => SelectorOp::Exists,
            "DoesNotExist" => SelectorOp::DoesNotExist,
            other => {
                return Err(ConvertError::BadSelector {
                    kind,
                    name: name.to_string(),
                    op: other.to_string(),
                });
            }
        };
        match_expressions.push(SelectorRequirement {
            key: r.key.clone(),
            operator,
            values: r.values.clone().unwrap_or_default(),
        });
    }
    Ok(LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

/// A PodDisruptionBudget as the planner sees it.
pub fn pdb(b: &PodDisruptionBudget) -> Result<PdbSnapshot, ConvertError> {
    let name = b
        .metadata
        .name
        .clone()
        .ok_or(ConvertError::MissingName("PodDisruptionBudget"))?;
    let namespace = b
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let key = format!("{namespace}/{name}");
    let sel = match b.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(s) => Some(selector(s, "PodDisruptionBudget", &key)?),
        None => None,
    };
    let status = b.status.as_ref();
    let status_current = match (
        status.and_then(|s| s.observed_generation),
        b.metadata.generation,
    ) {
        (Some(observed), Some(generation)) => observed >= generation,
        (Some(_), None) => true,
        (None, _) => false,
    };
    Ok(PdbSnapshot {
        namespace,
        name,
        selector: sel,
        disruptions_allowed: status
            .and_then(|s| s.disruptions_allowed)
            .map_or(0, |n| u32::try_from(n).unwrap_or(0)),
        status_current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_are_classified_by_owner_and_state() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "deletionTimestamp": "2026-11-22T10:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d", "uid": "r", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [], "volumes": [{"name": "tmp", "emptyDir": {}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let s = pod(&p).unwrap();
        assert_eq!(
            s.owner,
            PodOwner::Controller {
                kind: "ReplicaSet".into(),
                name: "web-5d".into()
            }
        );
        assert!(s.terminating() && s.has_empty_dir && s.ready);
        assert_eq!(
            s.deleted_by.map(|t| t.to_string()).as_deref(),
            Some("2026-11-22T10:00:00Z")
        );
        assert_eq!(s.node.as_deref(), Some("n1"));

        let ds: Pod = serde_json::from_value(json!({"metadata": {"name": "x", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "r", "controller": true}]}})).unwrap();
        assert_eq!(pod(&ds).unwrap().owner, PodOwner::DaemonSet);
        let mirror: Pod = serde_json::from_value(json!({"metadata": {"name": "etcd-n1", "annotations": {"kubernetes.io/config.mirror": "abc"}}})).unwrap();
        assert_eq!(pod(&mirror).unwrap().owner, PodOwner::Mirror);
        let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "bare"}})).unwrap();
        assert_eq!(pod(&bare).unwrap().owner, PodOwner::Unmanaged);
    }

    #[test]
    fn pdb_status_must_be_current() {
        let b: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 2},
            "status": {"disruptionsAllowed": 1, "observedGeneration": 2, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3}
        }))
        .unwrap();
        let s = pdb(&b).unwrap();
        assert!(!s.status_current);
        assert_eq!(s.allowed(), 0);
        assert_eq!(s.disruptions_allowed, 1);
    }

    #[test]
    fn node_readiness_and_cordon() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "uid": "u"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        }))
        .unwrap();
        let s = node(&n).unwrap();
        assert!(!s.ready && s.unschedulable);
    }

    #[test]
    fn a_node_taken_by_value_reads_as_one_borrowed() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"pool": "a"}, "annotations": {"x": "y"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let owned = into_node(n.clone()).unwrap();
        assert_eq!(owned, node(&n).unwrap());
        assert_eq!(owned.uid, "n1", "the name stands in for a missing UID");
        assert!(owned.ready && !owned.unschedulable);
        assert_eq!(owned.labels.get("pool"), Some("a"));
        assert_eq!(
            into_node(Node::default()),
            Err(ConvertError::MissingName("Node"))
        );
    }

    #[test]
    fn a_pod_taken_by_value_reads_as_one_borrowed() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        let owned = into_pod(p.clone()).unwrap();
        assert_eq!(owned, pod(&p).unwrap());
        assert_eq!(owned.namespace, "default");
        assert_eq!(owned.uid, "web-1", "the name stands in for a missing UID");
        assert_eq!(owned.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(owned.phase, PodPhase::Pending);
        assert_eq!(
            into_pod(Pod::default()),
            Err(ConvertError::MissingName("Pod"))
        );
    }

    #[test]
    fn unknown_selector_operators_are_errors() {
        let b: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}
        }))
        .unwrap();
        assert_eq!(
            pdb(&b).unwrap_err().to_string(),
            "PodDisruptionBudget shop/web: selector operator \"Near\" is not In, NotIn, Exists or DoesNotExist"
        );
    }
}

//! Nodes decoded straight into what drydock reads.
//!
//! A Node as the API server sends it carries its managed fields (a JSON tree per field
//! manager), images, addresses, capacity and every condition. The operator reads none of
//! that, yet decoding it into a full `Node` builds every piece before it can be dropped —
//! thousands of small allocations per watch event and per patch reply, which at 5,000
//! nodes is most of the operator's allocation traffic and what fragments its heap.
//! [`SlimNode`] skips those fields while parsing, so they are never built.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer};

/// A Node with only what the planner and the endpoints read: its identity, labels and
/// annotations (the node protocol, pool selectors, hooks), `spec.unschedulable`, the
/// Ready condition and `status.nodeInfo` (boot and machine ids). Everything else in the
/// API server's JSON is skipped while decoding. It is the Node API's own resource (same
/// kind, group, version and path), so `Api<SlimNode>` watches, gets and patches Nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlimNode(pub Node);

impl k8s_openapi::Resource for SlimNode {
    const API_VERSION: &'static str = <Node as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Node as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Node as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Node as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Node as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Node as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for SlimNode {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

#[derive(Deserialize)]
struct WireNode {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<WireSpec>,
    #[serde(default)]
    status: Option<WireStatus>,
}

/// The metadata drydock reads; `managedFields`, `ownerReferences`, `finalizers` and the
/// rest are skipped.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireMeta {
    name: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

#[derive(Deserialize)]
struct WireSpec {
    #[serde(default)]
    unschedulable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    #[serde(default, deserialize_with = "ready_only")]
    conditions: Option<Vec<NodeCondition>>,
    #[serde(default)]
    node_info: Option<NodeSystemInfo>,
}

/// The conditions list, keeping only `Ready` (the others are skipped unbuilt).
fn ready_only<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<NodeCondition>>, D::Error> {
    /// One element of `status.conditions`: the Ready condition, or nothing.
    struct MaybeReady(Option<NodeCondition>);
    impl<'de> Deserialize<'de> for MaybeReady {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            // Conditions are few and small: each is decoded, only Ready is kept.
            let c = NodeCondition::deserialize(d)?;
            Ok(MaybeReady((c.type_ == "Ready").then_some(c)))
        }
    }
    let all: Option<Vec<MaybeReady>> = Option::deserialize(d)?;
    Ok(all.map(|cs| cs.into_iter().filter_map(|c| c.0).collect()))
}

impl<'de> Deserialize<'de> for SlimNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireNode::deserialize(d)?;
        let m = w.metadata;
        Ok(SlimNode(Node {
            metadata: ObjectMeta {
                name: m.name,
                uid: m.uid,
                resource_version: m.resource_version,
                generation: m.generation,
                labels: m.labels,
                annotations: m.annotations,
                creation_timestamp: m.creation_timestamp,
                deletion_timestamp: m.deletion_timestamp,
                ..ObjectMeta::default()
            },
            spec: w.spec.map(|s| NodeSpec {
                unschedulable: s.unschedulable,
                ..NodeSpec::default()
            }),
            status: w.status.map(|s| NodeStatus {
                conditions: s.conditions,
                node_info: s.node_info,
                ..NodeStatus::default()
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "n1", "uid": "u1", "resourceVersion": "7", "generation": 3,
                "creationTimestamp": "2026-11-01T00:00:00Z",
                "labels": {"pool": "blue", "drydock.dev/phase": "Queued"},
                "annotations": {"drydock.dev/reason": "pool blue: 1 of 1 unavailable", "example.com/hook": "true"},
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "o"}],
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}}}}}}]
            },
            "spec": {"unschedulable": true, "podCIDR": "10.0.0.0/24", "providerID": "kwok://n1",
                "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                    {"type": "DiskPressure", "status": "False"}
                ],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "capacity": {"cpu": "2"},
                "images": [{"names": ["pause"], "sizeBytes": 1}],
                "nodeInfo": {"machineID": "m1", "bootID": "b1", "systemUUID": "s", "kernelVersion": "k",
                    "osImage": "Flatcar", "containerRuntimeVersion": "c", "kubeletVersion": "v",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}
            }
        })
    }

    #[test]
    fn a_slim_node_keeps_what_the_planner_and_the_endpoints_read() {
        let full: Node = serde_json::from_value(full_json()).expect("a node");
        let SlimNode(slim) = serde_json::from_value(full_json()).expect("a slim node");
        assert_eq!(
            format!("{:?}", drydock_core::k8s::node(&slim)),
            format!("{:?}", drydock_core::k8s::node(&full)),
            "the planner sees the same node"
        );
        let (m, fm) = (&slim.metadata, &full.metadata);
        assert_eq!(m.annotations, fm.annotations);
        assert_eq!(m.labels, fm.labels);
        assert_eq!(
            (&m.name, &m.uid, &m.resource_version, m.generation),
            (&fm.name, &fm.uid, &fm.resource_version, fm.generation)
        );
        assert_eq!(m.creation_timestamp, fm.creation_timestamp);
        assert!(
            m.managed_fields.is_none() && m.owner_references.is_none() && m.finalizers.is_none()
        );
        let spec = slim.spec.as_ref().expect("spec");
        assert_eq!(spec.unschedulable, Some(true));
        assert!(spec.pod_cidr.is_none() && spec.provider_id.is_none() && spec.taints.is_none());
        let status = slim.status.as_ref().expect("status");
        let types: Vec<&str> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, vec!["Ready"]);
        assert_eq!(
            status.node_info.as_ref().map(|i| i.boot_id.as_str()),
            Some("b1")
        );
        assert!(status.images.is_none() && status.addresses.is_none() && status.capacity.is_none());
    }

    #[test]
    fn a_node_without_spec_or_status_decodes_and_garbage_is_an_error() {
        let SlimNode(n) = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "bare"}
        }))
        .expect("a bare node");
        assert_eq!(n.metadata.name.as_deref(), Some("bare"));
        assert!(n.spec.is_none() && n.status.is_none());
        // Fields drydock reads must still have their API types.
        let bad = serde_json::from_value::<SlimNode>(serde_json::json!({
            "metadata": {"name": "n", "labels": {"pool": 3}}
        }));
        assert!(bad.is_err(), "a number as a label value is refused");
        let bad = serde_json::from_value::<SlimNode>(serde_json::json!({
            "metadata": {"name": "n"}, "status": {"conditions": [{"type": 5, "status": "True"}]}
        }));
        assert!(bad.is_err(), "a number as a condition type is refused");
        let bad = serde_json::from_value::<SlimNode>(serde_json::json!({
            "metadata": {"name": "n"}, "spec": {"unschedulable": "yes"}
        }));
        assert!(bad.is_err(), "a string as spec.unschedulable is refused");
    }
}

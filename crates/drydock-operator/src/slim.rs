//! Nodes decoded straight into what drydock reads, and read once.
//!
//! A Node as the API server sends it carries its managed fields (a JSON tree per field
//! manager), images, addresses, capacity and every condition. The operator reads none of
//! that, yet decoding it into a full `Node` builds every piece before it can be dropped —
//! thousands of small allocations per watch event and per patch reply, which at 5,000
//! nodes is most of the operator's allocation traffic and what fragments its heap.
//! [`FleetNode`] skips those fields while parsing, so they are never built, and keeps
//! the rest as the planner's reading of the node ([`ReadNode`]: labels, annotations,
//! the drydock state parsed from them). The node cache holds that one reading per node,
//! which every pass, the Omaha proxy and FleetLock share: a node's labels and
//! annotations are held once, and parsed once per change of the node.
//!
//! Pods are read the same way ([`FleetPod`]): a pod list decodes only what the planner
//! reads of each Pod, not its containers, environment, managed fields and statuses, so
//! what a list costs follows its number of pods, not their size.

use std::collections::BTreeMap;
use std::sync::Arc;

use drydock_core::k8s::{ConvertError, MIRROR_POD_ANNOTATION};
use drydock_core::snapshot::{PodSnapshot, ReadNode};
use drydock_core::strmap::StrMap;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, Node, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod,
    PodCondition, PodSpec, PodStatus, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A Node as the operator keeps it: its identity (name, UID, resourceVersion), its
/// reading for the planner (labels, annotations, Ready, `spec.unschedulable`, the drydock
/// state) and of `status.nodeInfo` the boot and machine ids and the OS image. Everything else in the
/// API server's JSON is skipped while decoding. It is the Node API's own resource (same
/// kind, group, version and path), so `Api<FleetNode>` watches, gets and patches Nodes.
#[derive(Clone, Debug, Default)]
pub struct FleetNode {
    metadata: ObjectMeta,
    read: Option<Arc<ReadNode>>,
    node_info: Option<NodeSystemInfo>,
}

impl FleetNode {
    /// The planner's reading of the node; None for a Node without a name, which the API
    /// server never sends.
    pub fn read(&self) -> Option<&Arc<ReadNode>> {
        self.read.as_ref()
    }

    /// `status.nodeInfo` as the kubelet reported it, with only `bootID`, `machineID` and
    /// `osImage` filled in (the other fields are empty).
    pub fn node_info(&self) -> Option<&NodeSystemInfo> {
        self.node_info.as_ref()
    }

    /// `status.nodeInfo.machineID`, or "" before the kubelet reported it.
    pub fn machine_id(&self) -> &str {
        self.node_info
            .as_ref()
            .map_or("", |i| i.machine_id.as_str())
    }
}

impl k8s_openapi::Resource for FleetNode {
    const API_VERSION: &'static str = <Node as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Node as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Node as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Node as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Node as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Node as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for FleetNode {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
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
    labels: Option<StrMap>,
    annotations: Option<StrMap>,
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
    node_info: Option<WireNodeInfo>,
}

/// The part of `status.nodeInfo` drydock reads: the boot id (whether a node rebooted),
/// the machine id (which Node an Omaha or FleetLock client is) and the OS image (the
/// version Zincati runs). The kernel, runtime and kubelet versions, the system UUID and
/// the rest are skipped: seven strings a node, held for nothing.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireNodeInfo {
    #[serde(rename = "bootID")]
    boot_id: String,
    #[serde(rename = "machineID")]
    machine_id: String,
    os_image: String,
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

impl<'de> Deserialize<'de> for FleetNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireNode::deserialize(d)?;
        let m = w.metadata;
        let (conditions, node_info) = match w.status {
            Some(s) => (s.conditions, s.node_info),
            None => (None, None),
        };
        let node_info = node_info.map(|i| NodeSystemInfo {
            boot_id: i.boot_id,
            machine_id: i.machine_id,
            os_image: i.os_image,
            ..NodeSystemInfo::default()
        });
        let metadata = ObjectMeta {
            name: m.name,
            uid: m.uid,
            resource_version: m.resource_version,
            ..ObjectMeta::default()
        };
        // Read as `drydock_core::k8s` reads any Node. The labels and annotations were
        // decoded straight into the reading's compact maps and are held nowhere else.
        let read = drydock_core::k8s::node_with(
            &Node {
                metadata: metadata.clone(),
                spec: w.spec.map(|s| NodeSpec {
                    unschedulable: s.unschedulable,
                    ..NodeSpec::default()
                }),
                status: Some(NodeStatus {
                    conditions,
                    ..NodeStatus::default()
                }),
            },
            m.labels.unwrap_or_default(),
            m.annotations.unwrap_or_default(),
        )
        .ok()
        .map(|n| Arc::new(ReadNode::new(n)));
        Ok(FleetNode {
            metadata,
            read,
            node_info,
        })
    }
}

/// A Pod as a drain reads it: its identity and the planner's reading
/// ([`PodSnapshot`], by the rules of `drydock_core::k8s::pod`). Everything else in the
/// API server's JSON is skipped while decoding. It is the Pod API's own resource, so
/// `Api<FleetPod>` lists Pods.
#[derive(Clone, Debug)]
pub struct FleetPod {
    metadata: ObjectMeta,
    read: Result<PodSnapshot, ConvertError>,
}

impl FleetPod {
    /// The planner's reading of the pod, or why it has none (a Pod without a name,
    /// which the API server never sends).
    pub fn read(&self) -> Result<&PodSnapshot, &ConvertError> {
        self.read.as_ref()
    }

    /// The reading, taken out.
    pub fn into_read(self) -> Result<PodSnapshot, ConvertError> {
        self.read
    }
}

impl k8s_openapi::Resource for FleetPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for FleetPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[derive(Deserialize)]
struct WirePod {
    #[serde(default)]
    metadata: WirePodMeta,
    #[serde(default)]
    spec: Option<WirePodSpec>,
    #[serde(default)]
    status: Option<WirePodStatus>,
}

/// The metadata a drain reads: of the annotations only whether the pod is a mirror pod
/// (their values, which can be whole manifests, are skipped).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WirePodMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(deserialize_with = "is_mirror")]
    annotations: bool,
    owner_references: Option<Vec<OwnerReference>>,
    deletion_timestamp: Option<Time>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePodSpec {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    volumes: Option<Vec<WireVolume>>,
}

/// A volume: only whether it is an `emptyDir`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireVolume {
    #[serde(default)]
    empty_dir: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct WirePodStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    conditions: Option<Vec<PodCondition>>,
}

/// Whether an annotations map (or null) holds the mirror-pod annotation. Keys and
/// values must be strings, as in the API's type; neither is kept.
fn is_mirror<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    /// A string, compared with the mirror-pod annotation's key and dropped.
    struct Str(bool);
    impl<'de> Deserialize<'de> for Str {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Str;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Str, E> {
                    Ok(Str(v == MIRROR_POD_ANNOTATION))
                }
            }
            d.deserialize_str(V)
        }
    }
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut mirror = false;
            while let Some(Str(is)) = map.next_key()? {
                let _: Str = map.next_value()?;
                mirror |= is;
            }
            Ok(mirror)
        }
    }
    d.deserialize_option(Keys)
}

impl<'de> Deserialize<'de> for FleetPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WirePod::deserialize(d)?;
        let m = w.metadata;
        let metadata = ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            ..ObjectMeta::default()
        };
        // Read as `drydock_core::k8s` reads any Pod, from the fields it reads.
        let pod = Pod {
            metadata: ObjectMeta {
                labels: m.labels,
                annotations: m
                    .annotations
                    .then(|| BTreeMap::from([(MIRROR_POD_ANNOTATION.into(), String::new())])),
                owner_references: m.owner_references,
                deletion_timestamp: m.deletion_timestamp,
                ..metadata.clone()
            },
            spec: w.spec.map(|s| PodSpec {
                node_name: s.node_name,
                volumes: s.volumes.map(|vs| {
                    vs.into_iter()
                        .filter(|v| v.empty_dir.is_some())
                        .map(|_| Volume {
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        })
                        .collect()
                }),
                ..PodSpec::default()
            }),
            status: w.status.map(|s| PodStatus {
                phase: s.phase,
                conditions: s.conditions,
                ..PodStatus::default()
            }),
        };
        let read = drydock_core::k8s::into_pod(pod);
        Ok(FleetPod { metadata, read })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drydock_core::protocol::Phase;

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
    fn a_fleet_node_is_the_planners_reading_of_the_full_node() {
        let full: Node = serde_json::from_value(full_json()).expect("a node");
        let fleet: FleetNode = serde_json::from_value(full_json()).expect("a fleet node");
        let from_full = ReadNode::new(drydock_core::k8s::node(&full).expect("readable"));
        let read = fleet.read().expect("a named node is read");
        assert_eq!(**read, from_full, "the planner sees the same node");
        assert_eq!(read.state().operator.phase(), Phase::Queued);
        assert!(read.ready && read.unschedulable);
        assert_eq!(read.annotations.get("example.com/hook"), Some("true"));
        let m = &fleet.metadata;
        assert_eq!(
            (
                m.name.as_deref(),
                m.uid.as_deref(),
                m.resource_version.as_deref()
            ),
            (Some("n1"), Some("u1"), Some("7"))
        );
        assert!(
            m.labels.is_none() && m.annotations.is_none(),
            "held once, in the reading"
        );
        assert!(
            m.managed_fields.is_none() && m.owner_references.is_none() && m.finalizers.is_none()
        );
        assert_eq!(fleet.node_info().map(|i| i.boot_id.as_str()), Some("b1"));
        assert_eq!(fleet.machine_id(), "m1");
        // The store keys on the name, as for a Node.
        assert_eq!(kube::Resource::meta(&fleet).name.as_deref(), Some("n1"));
    }

    #[test]
    fn of_node_info_the_ids_and_os_image_are_kept() {
        let fleet: FleetNode = serde_json::from_value(full_json()).expect("a fleet node");
        let info = fleet.node_info().expect("nodeInfo");
        assert_eq!(
            (
                info.boot_id.as_str(),
                info.machine_id.as_str(),
                info.os_image.as_str()
            ),
            ("b1", "m1", "Flatcar")
        );
        assert!(
            info.kubelet_version.is_empty() && info.architecture.is_empty(),
            "the rest is skipped"
        );
        // A nodeInfo without the ids reads as empty ids, as the full type reads it.
        let bare: FleetNode = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"}, "status": {"nodeInfo": {"osImage": "x"}}
        }))
        .expect("a fleet node");
        assert_eq!(bare.machine_id(), "");
    }

    #[test]
    fn a_node_that_is_not_ready_or_without_uid_reads_as_drydock_core_reads_it() {
        for (json, ready) in [
            (serde_json::json!({"metadata": {"name": "bare"}}), false),
            (
                serde_json::json!({"metadata": {"name": "nr", "uid": "u"},
                    "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                false,
            ),
            (
                serde_json::json!({"metadata": {"name": "r"},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                true,
            ),
        ] {
            let full: Node = serde_json::from_value(json.clone()).expect("a node");
            let fleet: FleetNode = serde_json::from_value(json).expect("a fleet node");
            let read = fleet.read().expect("named");
            assert_eq!(read.ready, ready);
            assert_eq!(
                **read,
                ReadNode::new(drydock_core::k8s::node(&full).expect("readable"))
            );
        }
        let unnamed: FleetNode =
            serde_json::from_value(serde_json::json!({"metadata": {"uid": "u"}})).expect("decodes");
        assert!(
            unnamed.read().is_none(),
            "a Node without a name is not read"
        );
        assert_eq!(unnamed.machine_id(), "");
    }

    #[test]
    fn fields_drydock_reads_must_have_their_api_types() {
        let bad = serde_json::from_value::<FleetNode>(serde_json::json!({
            "metadata": {"name": "n", "labels": {"pool": 3}}
        }));
        assert!(bad.is_err(), "a number as a label value is refused");
        let bad = serde_json::from_value::<FleetNode>(serde_json::json!({
            "metadata": {"name": "n"}, "status": {"conditions": [{"type": 5, "status": "True"}]}
        }));
        assert!(bad.is_err(), "a number as a condition type is refused");
        let bad = serde_json::from_value::<FleetNode>(serde_json::json!({
            "metadata": {"name": "n"}, "spec": {"unschedulable": "yes"}
        }));
        assert!(bad.is_err(), "a string as spec.unschedulable is refused");
    }

    fn full_pod_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "p1", "resourceVersion": "9",
                "labels": {"app": "web", "pod-template-hash": "5d"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d",
                    "uid": "r", "controller": true}],
                "deletionTimestamp": "2026-12-05T01:00:00Z",
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "10m"}}}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "web"}},
                    {"name": "tmp", "emptyDir": {}}
                ],
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"}
                ],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "nginx",
                    "imageID": "", "state": {"running": {"startedAt": "2026-12-05T00:00:00Z"}}}],
                "podIP": "10.0.0.9"
            }
        })
    }

    #[test]
    fn a_fleet_pod_is_the_planners_reading_of_the_full_pod() {
        let mut variants = vec![full_pod_json()];
        // A mirror pod, a pod without volumes or status, a bare pod.
        let mut mirror = full_pod_json();
        mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "abc".into();
        variants.push(mirror);
        let mut plain = full_pod_json();
        plain["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("volumes");
        plain.as_object_mut().expect("pod").remove("status");
        plain["metadata"]["annotations"] = serde_json::Value::Null;
        variants.push(plain);
        variants.push(serde_json::json!({"metadata": {"name": "bare"}}));
        for json in variants {
            let full: Pod = serde_json::from_value(json.clone()).expect("a pod");
            let fleet: FleetPod = serde_json::from_value(json.clone()).expect("a fleet pod");
            assert_eq!(
                fleet.read(),
                drydock_core::k8s::pod(&full).as_ref(),
                "the planner sees the same pod: {json}"
            );
        }
        let fleet: FleetPod = serde_json::from_value(full_pod_json()).expect("a fleet pod");
        let read = fleet.read().expect("named");
        assert!(read.has_empty_dir && read.ready && read.terminating());
        assert_eq!(read.key(), "shop/web-1");
        let m = &fleet.metadata;
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref(), m.uid.as_deref()),
            (Some("web-1"), Some("shop"), Some("p1"))
        );
        assert!(m.labels.is_none() && m.annotations.is_none() && m.managed_fields.is_none());
        let unnamed: FleetPod =
            serde_json::from_value(serde_json::json!({"metadata": {"uid": "u"}})).expect("decodes");
        assert_eq!(unnamed.into_read(), Err(ConvertError::MissingName("Pod")));
    }

    #[test]
    fn pod_fields_drydock_reads_must_have_their_api_types() {
        for (json, what) in [
            (
                serde_json::json!({"metadata": {"name": "p", "annotations": {"a": 1}}}),
                "a number as an annotation value",
            ),
            (
                serde_json::json!({"metadata": {"name": "p", "annotations": ["a"]}}),
                "a list as the annotations",
            ),
            (
                serde_json::json!({"metadata": {"name": "p", "ownerReferences": [{"kind": 3}]}}),
                "a number as an owner's kind",
            ),
            (
                serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": 1}}),
                "a number as the phase",
            ),
            (
                serde_json::json!({"metadata": {"name": "p"}, "spec": {"volumes": {"tmp": {}}}}),
                "a map as the volumes",
            ),
        ] {
            assert!(
                serde_json::from_value::<FleetPod>(json).is_err(),
                "{what} is refused"
            );
        }
    }

    #[test]
    fn a_pod_list_decodes_into_fleet_pods() {
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "12"},
            "items": [full_pod_json(), {"metadata": {"name": "other", "namespace": "shop"}}]
        });
        let list: kube::core::ObjectList<FleetPod> =
            serde_json::from_value(list).expect("a pod list");
        let names: Vec<_> = list
            .items
            .iter()
            .map(|p| p.read().map(|r| r.name.clone()))
            .collect();
        assert_eq!(
            names,
            vec![Ok("web-1".to_string()), Ok("other".to_string())]
        );
    }
}

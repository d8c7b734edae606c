//! Helpers shared by the operator's end-to-end suites: the namespaces and policy, sample
//! workloads in `shop`, and what the tests read back (pods Ready, Events, the policy's
//! rejection).
#![allow(dead_code)] // each suite uses its own subset

pub mod machines;

use std::time::Duration;

use drydock_testenv::{TestEnv, workload};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// drydock's namespace.
pub const NS: &str = "drydock-system";

/// Creates drydock's namespace and `shop`, and sets the policy.
pub async fn setup(env: &TestEnv, policy: &str) {
    let client = env.client();
    let ns: Api<Namespace> = Api::all(client.clone());
    for n in [NS, "shop"] {
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": n}})).expect("namespace"),
        )
        .await
        .expect("namespace");
    }
    set_policy(env, policy).await;
}

/// Applies `policy` as the drydock-config ConfigMap.
pub async fn set_policy(env: &TestEnv, policy: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), NS);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "drydock-config", "namespace": NS},
        "data": {"config.yaml": policy}});
    cms.patch(
        "drydock-config",
        &PatchParams::apply("test").force(),
        &Patch::Apply(&cm),
    )
    .await
    .expect("ConfigMap");
}

/// Server-side applies a Deployment, StatefulSet or PodDisruptionBudget.
pub async fn apply(env: &TestEnv, doc: serde_json::Value) {
    env.apply(&doc)
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", doc["metadata"]["name"]));
}

/// A Deployment of pause pods in `shop`.
pub fn deployment(name: &str, replicas: u32) -> serde_json::Value {
    workload::deployment("shop", name, replicas)
}

/// A Deployment whose pods may only run on `node`.
pub fn pinned(name: &str, replicas: u32, node: &str) -> serde_json::Value {
    let mut d = deployment(name, replicas);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    d
}

/// A PodDisruptionBudget in `shop` over the pods of `name`.
pub fn pdb(name: &str, spec: serde_json::Value) -> serde_json::Value {
    workload::pdb("shop", name, spec)
}

/// Waits until every pod in `shop` is Running and Ready and `count` in all.
pub async fn wait_pods_ready(env: &mut TestEnv, count: usize) {
    env.wait_pods_ready("shop", count, Duration::from_secs(120))
        .await
        .expect("workload Ready");
}

/// (type, reason, note) of every Event about the object named `name`.
pub async fn events_for(env: &TestEnv, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::all(env.client());
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// A Deployment of one pod on `node` that takes ten minutes to terminate once evicted.
pub fn slow(node: &str) -> serde_json::Value {
    let mut d = pinned("slow", 1, node);
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(600);
    d
}

/// The operator's report of a rejected policy on the ConfigMap, if any.
pub async fn config_error(env: &TestEnv) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), NS);
    cms.get("drydock-config")
        .await
        .expect("ConfigMap")
        .metadata
        .annotations
        .unwrap_or_default()
        .get(drydock_operator::controller::CONFIG_ERROR_ANNOTATION)
        .cloned()
}

/// Waits until the operator reports a rejected policy whose errors mention `needle`.
pub async fn wait_config_error(env: &mut TestEnv, needle: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), NS);
    let needle = needle.to_string();
    env.wait_for(
        &format!("the policy's rejection mentioning {needle:?} on the ConfigMap"),
        Duration::from_secs(30),
        move || {
            let (cms, needle) = (cms.clone(), needle.clone());
            async move {
                let cm = cms.get("drydock-config").await?;
                Ok(cm
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .get(drydock_operator::controller::CONFIG_ERROR_ANNOTATION)
                    .is_some_and(|e| e.contains(&needle)))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

//! The disruption controller keeps PDB status and the Eviction API honours it: with a
//! Deployment of 3 (one pod per node) behind `minAvailable: 2`, the first eviction
//! succeeds and the second is refused with 429.

use std::time::Duration;

use drydock_testenv::{Error, TestEnv};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn evictions_follow_the_pdb_status_kept_by_the_disruption_controller() {
    let mut env = TestEnv::start().await.expect("control plane starts");
    env.add_ready_nodes("node", 3, &[], Duration::from_secs(60))
        .await
        .expect("nodes Ready");
    let client = env.client();
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("namespace"),
    )
    .await
    .expect("create namespace");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}],
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                    ]}}
                }
            }
        }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "shop");
    let b: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .expect("pdb");
    pdbs.create(&PostParams::default(), &b)
        .await
        .expect("create pdb");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let (p2, b2) = (pods.clone(), pdbs.clone());
    env.wait_for(
        "3 web pods Running and Ready, and the PDB allowing 1",
        Duration::from_secs(90),
        move || {
            let (pods, pdbs) = (p2.clone(), b2.clone());
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .map_err(Error::Kube)?;
                let ready = list
                    .items
                    .iter()
                    .filter(|p| {
                        let st = p.status.as_ref();
                        st.and_then(|s| s.phase.as_deref()) == Some("Running")
                            && st.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                let pdb = pdbs.get("web").await.map_err(Error::Kube)?;
                let allowed = pdb.status.as_ref().and_then(|s| s.disruptions_allowed);
                Ok(ready == 3 && allowed == Some(1))
            }
        },
    )
    .await
    .expect("workload up and PDB status computed");

    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    let names: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    pods.evict(&names[0], &EvictParams::default())
        .await
        .expect("first eviction is allowed");
    // The eviction spent the budget; wait until the status says so (the replacement
    // cannot be scheduled: one web pod per node, and the evicted one still terminates).
    let b3 = pdbs.clone();
    env.wait_for(
        "the PDB to allow 0 disruptions after the first eviction",
        Duration::from_secs(30),
        move || {
            let pdbs = b3.clone();
            async move {
                let pdb = pdbs.get("web").await?;
                Ok(pdb.status.as_ref().and_then(|s| s.disruptions_allowed) == Some(0))
            }
        },
    )
    .await
    .expect("budget spent");
    match pods.evict(&names[1], &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(
            status.code, 429,
            "second eviction refused with 429: {status:?}"
        ),
        other => panic!("second eviction should be refused by the PDB with 429, got {other:?}"),
    }
}

//! Sample workloads for the plane: Deployments of pause pods and their
//! PodDisruptionBudgets, as manifests to [`TestEnv::apply`](crate::TestEnv::apply).
//! Shared by the operator's suites and `drydockctl demo`.

use serde_json::{Value, json};

/// A Deployment of `replicas` pause pods labelled `app: name` in `namespace`, which
/// terminate within a second.
pub fn deployment(namespace: &str, name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}})
}

/// A PodDisruptionBudget over the pods of `name` in `namespace`; `spec` holds
/// `minAvailable` or `maxUnavailable`.
pub fn pdb(namespace: &str, name: &str, spec: Value) -> Value {
    let mut s = spec;
    s["selector"] = json!({"matchLabels": {"app": name}});
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace}, "spec": s})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_selects_its_deployments_pods() {
        let d = deployment("shop", "web", 3);
        let b = pdb("shop", "web", json!({"maxUnavailable": 1}));
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"],
            b["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(b["spec"]["maxUnavailable"], 1);
        assert_eq!(d["metadata"]["namespace"], "shop");
    }
}

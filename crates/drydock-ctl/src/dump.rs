//! Reads `kubectl get nodes,pods,poddisruptionbudgets -A -o json` output into a snapshot.

use anyhow::{Context, bail};
use drydock_core::Snapshot;
use drydock_core::k8s;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::Value;

/// Parses a `v1` `List` of Nodes, Pods and PodDisruptionBudgets. Other kinds are an error
/// (the dump was made with a different command than the one documented), as are items
/// that do not decode; each error names the item's index, kind and name.
pub fn snapshot_from_list(text: &str) -> anyhow::Result<Snapshot> {
    let doc: Value = serde_json::from_str(text)
        .context("not JSON (expected `kubectl get ... -o json` output)")?;
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "List" {
        bail!(
            "expected a v1 List (from `kubectl get nodes,pods,poddisruptionbudgets -A -o json`), found kind {kind:?}"
        );
    }
    let items = doc
        .get("items")
        .and_then(Value::as_array)
        .context("the List has no items array")?;
    let (mut nodes, mut pods, mut pdbs) = (Vec::new(), Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let kind = item.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>");
        let at = || format!("items[{i}] ({kind} {name})");
        match kind {
            "Node" => {
                let n: Node = serde_json::from_value(item.clone()).with_context(at)?;
                nodes.push(k8s::node(&n).with_context(at)?);
            }
            "Pod" => {
                let p: Pod = serde_json::from_value(item.clone()).with_context(at)?;
                pods.push(k8s::pod(&p).with_context(at)?);
            }
            "PodDisruptionBudget" => {
                let b: PodDisruptionBudget =
                    serde_json::from_value(item.clone()).with_context(at)?;
                pdbs.push(k8s::pdb(&b).with_context(at)?);
            }
            other => bail!(
                "{}: unexpected kind {other:?}; dump only nodes, pods and poddisruptionbudgets",
                at()
            ),
        }
    }
    if nodes.is_empty() {
        bail!("the dump holds no Nodes");
    }
    Ok(Snapshot::new(nodes, pods, pdbs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_kinds_and_bad_items_are_named() {
        let e = snapshot_from_list(
            r#"{"kind":"List","items":[{"kind":"Service","metadata":{"name":"x"}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "items[0] (Service x): unexpected kind \"Service\"; dump only nodes, pods and poddisruptionbudgets"
        );
        let e = snapshot_from_list(
            r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"n1","labels":"oops"}}]}"#,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("items[0] (Node n1): "),
            "{e:#}"
        );
        let e = snapshot_from_list(r#"{"kind":"NodeList","items":[]}"#).unwrap_err();
        assert!(format!("{e:#}").contains("expected a v1 List"), "{e:#}");
        let e = snapshot_from_list("not json").unwrap_err();
        assert!(format!("{e:#}").starts_with("not JSON"), "{e:#}");
    }

    #[test]
    fn the_shipped_example_reads() {
        let text = include_str!("../../../examples/cluster.json");
        let s = snapshot_from_list(text).unwrap();
        assert_eq!(s.nodes().len(), 12);
        assert!(s.pods().len() > 20);
        assert!(s.pdbs().len() >= 3);
    }
}

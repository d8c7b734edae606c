//! The live cluster: connecting the way kubectl does, reading what the planner needs, and
//! the few writes a person makes (the policy's `paused`, a node's hold or release). Every
//! failure becomes a sentence a person can act on: no kubeconfig, drydock not installed,
//! not allowed, API server unreachable.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use drydock_core::{Policy, Snapshot, k8s};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

/// The key of the policy in the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";

/// Where drydock lives in the cluster.
#[derive(Debug, Clone)]
pub struct Target {
    /// A kubeconfig file (default: as kubectl finds one).
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context (default: the current one).
    pub context: Option<String>,
    /// drydock's namespace.
    pub namespace: String,
    /// The policy ConfigMap.
    pub config_map: String,
}

/// A connected cluster.
pub struct Cluster {
    /// The client.
    pub client: kube::Client,
    /// Where drydock lives.
    pub target: Target,
    server: String,
}

/// Turns an API error into what a person can act on. `what` says what was being done
/// ("listing pods").
pub fn explain(e: kube::Error, what: &str, server: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "not allowed {what}: {}\n(your kubeconfig's user needs the rights listed in docs/drydockctl.md)",
            s.message
        ),
        kube::Error::Api(s) if s.code == 401 => anyhow!(
            "the API server at {server} did not accept your credentials while {what}: {}",
            s.message
        ),
        kube::Error::Api(s) => anyhow!("{what}: the API server said {} ({})", s.message, s.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => anyhow!(
            "cannot reach the API server at {server} while {what}: {}",
            error_chain(&e)
        ),
        other => anyhow!("{what}: {}", error_chain(&other)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`,
/// else the pod's ServiceAccount.
pub async fn connect(target: &Target) -> anyhow::Result<Cluster> {
    let options = kube::config::KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow!("cannot read the kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| anyhow!("the kubeconfig {} is not usable: {e}", path.display()))?
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(c) => c,
            Err(kc_err) => kube::Config::incluster().map_err(|_| {
                anyhow!(
                    "no cluster to talk to: {kc_err}\n(point --kubeconfig or $KUBECONFIG at a kubeconfig, as for kubectl)"
                )
            })?,
        },
    };
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("building the API client")?;
    Ok(Cluster {
        client,
        target: target.clone(),
        server,
    })
}

/// What `status` and `plan` read.
pub struct Live {
    /// The fleet as the planner sees it.
    pub snapshot: Snapshot,
    /// The policy in force as far as can be told.
    pub policy: Policy,
    /// Why the ConfigMap's policy is not the one in force, if it is not.
    pub policy_warning: Option<String>,
}

impl Cluster {
    /// Wraps an API error for a person.
    pub fn explain(&self, e: kube::Error, what: &str) -> anyhow::Error {
        explain(e, what, &self.server)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.target.namespace)
    }

    /// The policy ConfigMap; its absence means drydock is not installed.
    pub async fn config_map(&self) -> anyhow::Result<ConfigMap> {
        let (ns, name) = (&self.target.namespace, &self.target.config_map);
        match self.config_maps().get(name).await {
            Ok(cm) => Ok(cm),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(anyhow!(
                "drydock is not installed in this cluster: there is no ConfigMap {ns}/{name}\n(install it with `kubectl apply --server-side -k deploy/overlays/flatcar` or `.../fcos`, or pass --namespace)"
            )),
            Err(e) => Err(self.explain(e, &format!("reading the ConfigMap {ns}/{name}"))),
        }
    }

    /// Reads nodes, pods, budgets and the policy.
    pub async fn read(&self) -> anyhow::Result<Live> {
        let cm = self.config_map().await?;
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_KEY))
            .cloned()
            .unwrap_or_default();
        let (policy, policy_warning) = match Policy::from_yaml(&text) {
            Ok(p) => (p, None),
            Err(e) => (
                Policy::default(),
                Some(format!(
                    "the policy in {}/{} is invalid, so the operator keeps its last good one; shown here with the defaults instead:\n{e}",
                    self.target.namespace, self.target.config_map
                )),
            ),
        };
        let lp = ListParams::default();
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&lp)
            .await
            .map_err(|e| self.explain(e, "listing nodes"))?
            .items;
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&lp)
            .await
            .map_err(|e| self.explain(e, "listing pods"))?
            .items;
        let pdbs = Api::<PodDisruptionBudget>::all(self.client.clone())
            .list(&lp)
            .await
            .map_err(|e| self.explain(e, "listing PodDisruptionBudgets"))?
            .items;
        let mut ns = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let name = n.metadata.name.as_deref().unwrap_or("?");
            ns.push(k8s::node(n).with_context(|| format!("node {name}"))?);
        }
        let mut ps = Vec::with_capacity(pods.len());
        for p in &pods {
            let name = p.metadata.name.as_deref().unwrap_or("?");
            ps.push(k8s::pod(p).with_context(|| format!("pod {name}"))?);
        }
        let mut bs = Vec::with_capacity(pdbs.len());
        for b in &pdbs {
            let name = b.metadata.name.as_deref().unwrap_or("?");
            bs.push(k8s::pdb(b).with_context(|| format!("PodDisruptionBudget {name}"))?);
        }
        Ok(Live {
            snapshot: Snapshot::new(ns, ps, bs),
            policy,
            policy_warning,
        })
    }

    /// Replaces the policy text, failing (not overwriting) if someone changed it since
    /// `cm` was read.
    pub async fn write_policy(&self, cm: &ConfigMap, text: &str) -> anyhow::Result<()> {
        let mut new = cm.clone();
        new.data
            .get_or_insert_with(Default::default)
            .insert(CONFIG_KEY.to_string(), text.to_string());
        new.metadata.managed_fields = None;
        match self
            .config_maps()
            .replace(&self.target.config_map, &PostParams::default(), &new)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(anyhow!(
                "the ConfigMap changed while drydockctl edited it; nothing was written, run the command again"
            )),
            Err(e) => Err(self.explain(e, "updating the policy ConfigMap")),
        }
    }

    /// A node, by name, with a clear error when it does not exist.
    pub async fn node(&self, name: &str) -> anyhow::Result<Node> {
        match Api::<Node>::all(self.client.clone()).get(name).await {
            Ok(n) => Ok(n),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(anyhow!("there is no node {name:?}")),
            Err(e) => Err(self.explain(e, &format!("reading node {name}"))),
        }
    }

    /// Sets (Some) or removes (None) people's annotations on a node.
    pub async fn annotate(
        &self,
        node: &str,
        changes: &[(&str, Option<&str>)],
    ) -> anyhow::Result<()> {
        let mut annotations = serde_json::Map::new();
        for (k, v) in changes {
            annotations.insert(
                k.to_string(),
                v.map_or(serde_json::Value::Null, |v| {
                    serde_json::Value::String(v.into())
                }),
            );
        }
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| self.explain(e, &format!("annotating node {node}")))
    }
}

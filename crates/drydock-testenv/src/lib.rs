//! A real Kubernetes control plane on loopback, for drydock's tests and for exploring by
//! hand: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built
//! from Go modules by `tests/cluster/build.sh`.
//!
//! [`TestEnv::start`] brings a fresh plane up in a temporary directory (free ports, a
//! throwaway PKI, etcd without fsync) and hands back a [`kube::Client`] and a kubeconfig.
//! Every child is stopped by PID when the handle drops, when the test panics (the drop
//! runs while unwinding, and prints the components' logs), and when the test binary is
//! killed (a parent-death signal). The binaries are found through `DRYDOCK_CLUSTER_BIN`,
//! which `tests/run.sh` sets; without it the start fails and says how to build them.

mod pki;
mod process;
pub mod workload;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use process::{Component, start as start_process, start_piped as start_piped_process};

/// Environment variable naming the directory with the control-plane binaries.
pub const BIN_ENV: &str = "DRYDOCK_CLUSTER_BIN";
/// Annotation that hands a node to kwok.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
const STAGES: &str = include_str!("../stages/kwok-stages.yaml");

/// While a KWOK node carries this annotation, KWOK leaves its `Ready` condition as a test
/// set it (e.g. `False`), as a kubelet that stopped reporting would; remove the annotation
/// and KWOK reports the node Ready again. See [`TestEnv::set_not_ready`].
pub const NOT_READY_ANNOTATION: &str = "testenv.drydock.dev/not-ready";
const BINARIES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
];

/// Why the plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries are not there.
    #[error(
        "{0}\nBuild the control plane with `tests/cluster/build.sh` and set {BIN_ENV} to the directory it prints (tests/run.sh does both)."
    )]
    MissingBinaries(String),
    /// Filesystem trouble.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Certificate generation failed.
    #[error("generating the test PKI: {0}")]
    Pki(String),
    /// A component would not start or died.
    #[error("{0} failed: {1}")]
    Start(String, String),
    /// Something did not happen in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The Kubernetes client failed.
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

/// A node to add: its name and labels (zones, roles).
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    /// A node named `name` with the given labels.
    pub fn new(name: impl Into<String>, labels: &[(&str, &str)]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// How to start a plane beyond the defaults (for benchmarks).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Write the API server's audit log (`audit.log` in the plane's directory, see
    /// [`TestEnv::audit_log`]): one JSON line per request at level `Metadata` (verb,
    /// resource, user agent, status), except the node Lease renewals of `kube-node-lease`.
    pub audit: bool,
    /// How often KWOK posts a Ready node's status (a kubelet's
    /// `nodeStatusReportFrequency`); default 20–45 s. Lease heartbeats are separate.
    pub node_heartbeat: Option<Duration>,
    /// The controller-manager's and the scheduler's client rate to the API server
    /// (`--kube-api-qps` and `--kube-api-burst`, both set to this); default: theirs (20
    /// and 30 for the controller-manager, 50 and 100 for the scheduler). Large clusters
    /// raise it: Kubernetes' own 5,000-node scalability jobs run both at 100.
    pub controller_qps: Option<u32>,
    /// How many pod stages KWOK plays at once (its `podPlayStageParallelism`); default:
    /// KWOK's, 4. KWOK stands in for every node's kubelet, each of which would delete its
    /// own pods: with 4 workers for a fleet, a wave of evicted pods is deleted seconds
    /// after their grace periods end.
    pub kwok_parallelism: Option<u32>,
    /// How many node stages and node Lease renewals KWOK plays at once (its
    /// `nodePlayStageParallelism` and `nodeLeaseParallelism`); default: KWOK's, 4 each.
    pub kwok_node_parallelism: Option<u32>,
    /// The node Leases' duration, in seconds (KWOK renews each a quarter of it apart, as
    /// a kubelet does), and the controller-manager's `--node-monitor-grace-period` with
    /// it; default 40 (a kubelet's lease duration). Every renewal is a write: 5,000
    /// nodes at 40 s make 500 a second, which a 2-core machine's API server cannot take
    /// beside the fleet it simulates.
    pub node_lease_seconds: Option<u32>,
}

/// The audit policy of [`Options::audit`].
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  namespaces: [kube-node-lease]
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: Metadata
";

/// The KWOK node heartbeat's delay in [`STAGES`], which [`Options::node_heartbeat`]
/// replaces.
const HEARTBEAT_DELAY: &str = "durationMilliseconds: 20000\n    jitterDurationMilliseconds: 25000";

/// The Node object of a KWOK-managed node (what [`TestEnv::add_nodes`] creates): its
/// labels plus `type: kwok` and its hostname, and a machine id from its name.
pub fn kwok_node(n: &NodeSpec) -> Result<Node, Error> {
    let mut labels = n.labels.clone();
    labels.insert("type".into(), "kwok".into());
    labels.insert("kubernetes.io/hostname".into(), n.name.clone());
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"nodeInfo": {"machineID": machine_id(&n.name), "bootID": ""}},
    }))
    .map_err(|e| Error::Kubeconfig(format!("building node {}: {e}", n.name)))
}

/// A running control plane.
pub struct TestEnv {
    components: Vec<Component>,
    /// How each component was started (binary and arguments), for [`TestEnv::restart`].
    specs: Vec<(PathBuf, Vec<String>)>,
    restarts: std::collections::HashMap<String, u32>,
    client: kube::Client,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    /// Time from start to a usable plane.
    pub startup: Duration,
    audit_log: Option<PathBuf>,
}

/// Ports handed out by [`free_port`] come from below Linux's ephemeral range (32768 and
/// up), so an outgoing connection of some other process cannot take one between the
/// check and the component's bind; the start is random per process, so parallel test
/// binaries rarely try the same port.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A loopback TCP port that is free now, for a server a test or the demo starts. The port
/// is closed again before returning, so another process could still take it: a caller
/// that starts a server on it should treat "address already in use" as a reason to pick
/// again (as [`TestEnv::start`] does).
pub fn free_port() -> Result<u16, Error> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    let mut last = None;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let offset = (seed as u32).wrapping_add(n.wrapping_mul(7919)) % span;
        let port = PORT_RANGE.start + offset as u16;
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Io(
        format!("finding a free port in {PORT_RANGE:?}"),
        last.unwrap_or_else(|| std::io::Error::other("no port tried")),
    ))
}

/// Whether a start failed because a picked port was taken in the meantime.
fn lost_port_race(e: &Error) -> bool {
    matches!(e, Error::Start(_, why) if why.contains("address already in use"))
}

/// The directory holding the binaries, checked.
pub fn bin_dir() -> Result<PathBuf, Error> {
    bin_dir_from(std::env::var_os(BIN_ENV).map(PathBuf::from))
}

/// [`bin_dir`] for a given value of the variable.
pub fn bin_dir_from(dir: Option<PathBuf>) -> Result<PathBuf, Error> {
    let dir = dir.ok_or_else(|| Error::MissingBinaries(format!("{BIN_ENV} is not set.")))?;
    let missing: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingBinaries(format!(
            "{} not found in {}.",
            missing.join(", "),
            dir.display()
        )));
    }
    Ok(dir)
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

impl TestEnv {
    /// Starts a fresh plane and waits until it serves, schedules and runs controllers.
    /// A component that finds its port taken by another process (the ports are checked
    /// free, then handed to the component) makes the whole plane start again on new
    /// ports, up to three times.
    pub async fn start() -> Result<TestEnv, Error> {
        TestEnv::start_with(&Options::default()).await
    }

    /// [`TestEnv::start`] with `options`.
    pub async fn start_with(options: &Options) -> Result<TestEnv, Error> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match TestEnv::start_once(started, options).await {
                Err(e) if attempt < 3 && lost_port_race(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    async fn start_once(started: Instant, options: &Options) -> Result<TestEnv, Error> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("drydock-testenv-")
            .tempdir()
            .map_err(|e| Error::Io("creating the plane's directory".into(), e))?;
        let root = dir.path().to_path_buf();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| Error::Io("creating logs/".into(), e))?;
        let pki = pki::generate(&root)?;
        let (etcd_client, etcd_peer, api_port, kwok_port) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = root.join("kubeconfig");
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: drydock-testenv\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: drydock-testenv\n  context: {{cluster: drydock-testenv, user: admin, namespace: default}}\ncurrent-context: drydock-testenv\n",
            pki.ca_cert.display(),
            pki.admin_cert.display(),
            pki.admin_key.display()
        );
        std::fs::write(&kubeconfig, kc)
            .map_err(|e| Error::Io("writing the kubeconfig".into(), e))?;
        let stages = root.join("kwok-stages.yaml");
        let stages_text = match options.node_heartbeat {
            Some(every) => {
                let ms = every.as_millis();
                STAGES.replace(
                    HEARTBEAT_DELAY,
                    &format!(
                        "durationMilliseconds: {}\n    jitterDurationMilliseconds: {}",
                        ms * 9 / 10,
                        ms * 2 / 10
                    ),
                )
            }
            None => STAGES.to_string(),
        };
        let mut kwok_options = String::new();
        if let Some(n) = options.kwok_parallelism {
            kwok_options.push_str(&format!("  podPlayStageParallelism: {n}\n"));
        }
        if let Some(n) = options.kwok_node_parallelism {
            kwok_options.push_str(&format!(
                "  nodePlayStageParallelism: {n}\n  nodeLeaseParallelism: {n}\n"
            ));
        }
        let stages_text = if kwok_options.is_empty() {
            stages_text
        } else {
            format!(
                "{stages_text}---\napiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n{kwok_options}"
            )
        };
        let lease_seconds = options.node_lease_seconds.unwrap_or(40);
        std::fs::write(&stages, stages_text)
            .map_err(|e| Error::Io("writing kwok stages".into(), e))?;
        let audit_log = if options.audit {
            let policy = root.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY)
                .map_err(|e| Error::Io("writing the audit policy".into(), e))?;
            Some((policy, root.join("audit.log")))
        } else {
            None
        };

        let mut env = TestEnv {
            components: Vec::new(),
            specs: Vec::new(),
            restarts: Default::default(),
            client: kube::Client::try_from(kube::Config::new(
                server
                    .parse()
                    .map_err(|e| Error::Kubeconfig(format!("{e}")))?,
            ))?,
            kubeconfig: kubeconfig.clone(),
            dir,
            startup: Duration::ZERO,
            audit_log: audit_log.as_ref().map(|(_, log)| log.clone()),
        };
        let p = |x: &Path| x.display().to_string();

        env.spawn(
            &bin,
            "etcd",
            vec![
                s("--name=default"),
                format!("--data-dir={}", p(&root.join("etcd"))),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                s("--unsafe-no-fsync"),
                s("--log-level=warn"),
            ],
        )?;
        env.spawn(
            &bin,
            "kube-apiserver",
            vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                s("--bind-address=127.0.0.1"),
                s("--advertise-address=127.0.0.1"),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p(&root.join("apiserver-certs"))),
                format!("--tls-cert-file={}", p(&pki.serving_cert)),
                format!("--tls-private-key-file={}", p(&pki.serving_key)),
                format!("--client-ca-file={}", p(&pki.ca_cert)),
                s("--authorization-mode=Node,RBAC"),
                s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
                format!("--service-account-key-file={}", p(&pki.sa_pub)),
                format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
                s("--service-cluster-ip-range=10.96.0.0/16"),
                s("--allow-privileged=true"),
                s("--enable-priority-and-fairness=false"),
                s("--endpoint-reconciler-type=none"),
                s("--profiling=false"),
                s("--v=1"),
            ]
            .into_iter()
            .chain(audit_log.iter().flat_map(|(policy, log)| {
                [
                    format!("--audit-policy-file={}", p(policy)),
                    format!("--audit-log-path={}", p(log)),
                    s("--audit-log-format=json"),
                    s("--audit-log-maxsize=0"),
                    s("--audit-log-mode=blocking"),
                ]
            }))
            .collect(),
        )?;
        env.client = client_from(&kubeconfig).await?;
        env.wait_ready("kube-apiserver /readyz", Duration::from_secs(90))
            .await?;

        let qps: Vec<String> = options
            .controller_qps
            .map(|q| {
                vec![
                    format!("--kube-api-qps={q}"),
                    format!("--kube-api-burst={q}"),
                ]
            })
            .unwrap_or_default();
        env.spawn(
            &bin,
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--service-account-private-key-file={}", p(&pki.sa_key)),
                format!("--root-ca-file={}", p(&pki.ca_cert)),
                s("--controllers=*"),
                s("--leader-elect=false"),
                s("--use-service-account-credentials=false"),
                s("--bind-address=127.0.0.1"),
                s("--secure-port=0"),
                format!("--node-monitor-grace-period={lease_seconds}s"),
                s("--concurrent-deployment-syncs=10"),
                s("--v=1"),
            ]
            .into_iter()
            .chain(qps.clone())
            .collect(),
        )?;
        env.spawn(
            &bin,
            "kube-scheduler",
            vec![
                format!("--kubeconfig={}", p(&kubeconfig)),
                s("--leader-elect=false"),
                s("--bind-address=127.0.0.1"),
                s("--secure-port=0"),
                s("--v=1"),
            ]
            .into_iter()
            .chain(qps)
            .collect(),
        )?;
        env.spawn(
            &bin,
            "kwok",
            vec![
                format!("--kubeconfig={}", p(&kubeconfig)),
                format!("--config={}", p(&stages)),
                s("--manage-all-nodes=false"),
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
                format!("--node-lease-duration-seconds={lease_seconds}"),
                s("--cidr=10.0.0.1/16"),
                format!("--server-address=127.0.0.1:{kwok_port}"),
            ],
        )?;
        // The controller-manager is working once it has created the default ServiceAccount.
        let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), "default");
        env.wait_for(
            "the default ServiceAccount (kube-controller-manager running)",
            Duration::from_secs(90),
            || {
                let sas = sas.clone();
                async move { Ok(sas.get_opt("default").await?.is_some()) }
            },
        )
        .await?;
        env.startup = started.elapsed();
        Ok(env)
    }

    fn spawn(&mut self, bin: &Path, name: &str, args: Vec<String>) -> Result<(), Error> {
        let c = process::start(name, &bin.join(name), &args, &self.dir.path().join("logs"))?;
        self.components.push(c);
        self.specs.push((bin.join(name), args));
        Ok(())
    }

    /// Leaves the plane's directory (every component's log, the audit log, etcd's data)
    /// in place when the plane stops, for a look afterwards; returns where it is.
    pub fn keep_dir(&mut self) -> &Path {
        self.dir.disable_cleanup(true);
        self.dir.path()
    }

    /// The API server's audit log, when started with [`Options::audit`].
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// Kills a component (SIGKILL), keeps it down for `down`, and starts it again with the
    /// same arguments, as a crash and a restart would; for the API server, waits until it
    /// is ready again. Its log goes on in `NAME.restart-N.log`. For fault injection.
    pub async fn restart(&mut self, name: &str, down: Duration) -> Result<(), Error> {
        let i = self
            .components
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| Error::Start(name.into(), "no such component".into()))?;
        self.components[i].stop();
        tokio::time::sleep(down).await;
        let (program, args) = self.specs[i].clone();
        let n = self.restarts.entry(name.to_string()).or_insert(0);
        *n += 1;
        let mut c = process::start(
            &format!("{name}.restart-{n}"),
            &program,
            &args,
            &self.dir.path().join("logs"),
        )?;
        c.name = name.to_string();
        self.components[i] = c;
        if name == "kube-apiserver" {
            self.wait_ready(
                "kube-apiserver /readyz after a restart",
                Duration::from_secs(90),
            )
            .await?;
        }
        Ok(())
    }

    /// A client with cluster-admin rights. It does not retry 429 responses (kube's default
    /// does), so a refused eviction reaches the caller.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The kubeconfig file (for `kubectl --kubeconfig` or `KUBECONFIG`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The running components.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Fails when a component has exited, naming it with its log's tail.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        for c in &mut self.components {
            if let Some(status) = c.exited() {
                return Err(Error::Start(
                    c.name.clone(),
                    format!(
                        "exited ({status}); last log lines:\n{}",
                        process::tail(&c.log, 30)
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, what: &str, timeout: Duration) -> Result<(), Error> {
        let client = self.client.clone();
        self.wait_for(what, timeout, move || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| Error::Kubeconfig(e.to_string()))?;
                Ok(client
                    .request_text(req)
                    .await
                    .map(|t| t.trim() == "ok")
                    .unwrap_or(false))
            }
        })
        .await
    }

    /// Polls `check` every 200 ms until it is true, a component dies, or `timeout`.
    pub async fn wait_for<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, Error>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if matches!(check().await, Ok(true)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(timeout, what.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates kwok-managed nodes with the given labels.
    pub async fn add_nodes(&self, nodes: &[NodeSpec]) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        for n in nodes {
            api.create(&PostParams::default(), &kwok_node(n)?).await?;
        }
        Ok(())
    }

    /// Holds a KWOK node NotReady (`not_ready`), or lets KWOK report it Ready again.
    pub async fn set_not_ready(&self, node: &str, not_ready: bool) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mark = if not_ready {
            serde_json::json!({"metadata": {"annotations": {NOT_READY_ANNOTATION: "true"}}})
        } else {
            serde_json::json!({"metadata": {"annotations": {NOT_READY_ANNOTATION: null}}})
        };
        api.patch(node, &PatchParams::default(), &Patch::Merge(&mark))
            .await?;
        if not_ready {
            let now = jiff::Timestamp::now().to_string();
            let status = serde_json::json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "KubeletStopped",
                "message": "held NotReady by a test", "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }]}});
            api.patch_status(node, &PatchParams::default(), &Patch::Strategic(&status))
                .await?;
        } else {
            // KWOK initialises it again at once; a Ready=Unknown nudge makes that certain.
            let status = serde_json::json!({"status": {"conditions": [{
                "type": "Ready", "status": "Unknown", "reason": "KubeletStarting",
                "message": "released by a test",
            }]}});
            api.patch_status(node, &PatchParams::default(), &Patch::Strategic(&status))
                .await?;
        }
        Ok(())
    }

    /// Waits until every named node reports Ready.
    pub async fn wait_nodes_ready(
        &mut self,
        names: &[String],
        timeout: Duration,
    ) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let names = names.to_vec();
        self.wait_for(
            &format!("{} node(s) Ready", names.len()),
            timeout,
            move || {
                let api = api.clone();
                let names = names.clone();
                async move {
                    let list = api.list(&Default::default()).await?;
                    let ready = list
                        .items
                        .iter()
                        .filter(|n| names.iter().any(|x| Some(x) == n.metadata.name.as_ref()))
                        .filter(|n| {
                            n.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                        })
                        .count();
                    Ok(ready == names.len())
                }
            },
        )
        .await
    }

    /// Adds `count` nodes named `{prefix}-{i}` spread over three zones, then waits until
    /// they are Ready.
    pub async fn add_ready_nodes(
        &mut self,
        prefix: &str,
        count: usize,
        labels: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Vec<String>, Error> {
        let zones = ["zone-a", "zone-b", "zone-c"];
        let specs: Vec<NodeSpec> = (0..count)
            .map(|i| {
                let mut s = NodeSpec::new(format!("{prefix}-{i}"), labels);
                s.labels
                    .insert("topology.kubernetes.io/zone".into(), zones[i % 3].into());
                s
            })
            .collect();
        self.add_nodes(&specs).await?;
        let names: Vec<String> = specs.into_iter().map(|s| s.name).collect();
        self.wait_nodes_ready(&names, timeout).await?;
        Ok(names)
    }

    /// Server-side applies a Deployment, StatefulSet or PodDisruptionBudget manifest (see
    /// [`workload`]) in the namespace it names.
    pub async fn apply(&self, doc: &serde_json::Value) -> Result<(), Error> {
        use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
        let field = |path: &str| {
            doc.pointer(path)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| Error::Kubeconfig(format!("the manifest has no {path}")))
        };
        let (kind, name, ns) = (
            field("/kind")?,
            field("/metadata/name")?,
            field("/metadata/namespace")?,
        );
        let ar = match kind {
            "Deployment" => ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
            "StatefulSet" => ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
            "PodDisruptionBudget" => {
                ApiResource::erase::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(&())
            }
            other => {
                return Err(Error::Kubeconfig(format!(
                    "apply: unsupported kind {other} (Deployment, StatefulSet, PodDisruptionBudget)"
                )));
            }
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        api.patch(
            name,
            &PatchParams::apply("drydock-testenv").force(),
            &Patch::Apply(doc),
        )
        .await?;
        Ok(())
    }

    /// Waits until `namespace` holds exactly `count` pods, all Running and Ready.
    pub async fn wait_pods_ready(
        &mut self,
        namespace: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.wait_for(
            &format!("{count} pods Ready in {namespace}"),
            timeout,
            move || {
                let pods = pods.clone();
                async move {
                    let list = pods.list(&Default::default()).await?;
                    let ready = list
                        .items
                        .iter()
                        .filter(|p| {
                            p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                        })
                        .count();
                    Ok(ready == count && list.items.len() == count)
                }
            },
        )
        .await
    }

    /// Where the components' logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest API, valid for an
    /// hour. Bound to `pod`, it carries the pod's node in the
    /// `authentication.kubernetes.io/node-name` claim, as a DaemonSet pod's token does.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        pod: Option<&Pod>,
    ) -> Result<String, Error> {
        let mut spec = serde_json::json!({"expirationSeconds": 3600});
        if let Some(p) = pod {
            spec["boundObjectRef"] = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "name": p.metadata.name, "uid": p.metadata.uid});
        }
        let request: TokenRequest = serde_json::from_value(serde_json::json!({"spec": spec}))
            .map_err(|e| Error::Kubeconfig(format!("building a TokenRequest: {e}")))?;
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        sas.create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Kubeconfig(format!("no token issued for {namespace}/{name}")))
    }

    /// Writes a kubeconfig that authenticates with `token` (trusting this plane's CA) and
    /// returns its path; `server` overrides the API server's URL (to point it nowhere).
    pub fn token_kubeconfig(&self, token: &str, server: Option<&str>) -> Result<PathBuf, Error> {
        let admin = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let cluster = admin
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| Error::Kubeconfig("the plane's kubeconfig has no cluster".into()))?;
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {
                "server": server.map(String::from).or(cluster.server),
                "certificate-authority": cluster.certificate_authority}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        });
        let mut n = 0;
        let path = loop {
            let p = self.dir.path().join(format!("token-kubeconfig-{n}"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        std::fs::write(&path, doc.to_string())
            .map_err(|e| Error::Io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

impl TestEnv {
    /// The last `lines` lines of every component's log, each under a header naming the
    /// component: what a failing test prints (the drop prints it while unwinding).
    pub fn log_tails(&self, lines: usize) -> String {
        self.components
            .iter()
            .map(|c| {
                format!(
                    "---- {} (pid {}) log tail ----\n{}\n",
                    c.name,
                    c.pid(),
                    process::tail(&c.log, lines)
                )
            })
            .collect()
    }
}

/// A stable 32-hex-digit machine id for a node name (what `/etc/machine-id` holds).
pub fn machine_id(name: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in name.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    format!("{h:032x}")
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    // kube retries 429 and 503 by default. That would turn an Eviction API refusal
    // ("the PDB allows no disruption") into a silent wait; tests must see it.
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprint!("{}", self.log_tails(40));
        }
        // Stop in reverse start order: clients first, etcd last.
        while let Some(mut c) = self.components.pop() {
            c.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_option_has_a_delay_to_replace() {
        assert_eq!(STAGES.matches(HEARTBEAT_DELAY).count(), 1);
    }

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a port")).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in &ports {
            assert!(PORT_RANGE.contains(p), "{p}");
        }
        let held = TcpListener::bind(("127.0.0.1", ports[0])).expect("bindable");
        drop(held);
    }

    #[test]
    fn only_a_taken_port_counts_as_a_lost_race() {
        let taken = Error::Start(
            "kube-apiserver".into(),
            "exited (exit status: 1); last log lines:\nfailed to listen on 127.0.0.1:34995: listen tcp 127.0.0.1:34995: bind: address already in use".into(),
        );
        assert!(lost_port_race(&taken));
        let other = Error::Start("etcd".into(), "exited (exit status: 1): bad flag".into());
        assert!(!lost_port_race(&other));
        assert!(!lost_port_race(&Error::Timeout(
            Duration::from_secs(1),
            "address already in use".into()
        )));
    }
}

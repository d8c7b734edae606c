//! What the operator serves Zincati, for Fedora CoreOS nodes that run Zincati instead of
//! a drydock agent: a pinned update graph and a FleetLock server.
//!
//! - `GET /v1/graph` (Zincati's `[cincinnati] base_url`): the operator asks the upstream
//!   graph for the node's stream, chooses the release the node's pool pin and the rollout
//!   allow ([`drydock_core::cincinnati::choose`], [`drydock_core::download`]), and answers
//!   a graph holding only the booted release and that one, so Zincati stages exactly it.
//!   The choice is recorded on the Node (`drydock.dev/zincati-offer`).
//! - `POST /v1/pre-reboot` and `/v1/steady-state` (Zincati's `[updates.fleet_lock]
//!   base_url`): the node's status is written in the agent's place from the kubelet's
//!   `nodeInfo` ([`drydock_core::fleetlock::standin_status`]), so the planner queues,
//!   drains and grants it like any node; `pre-reboot` answers 200 only once the reboot is
//!   granted, and `steady-state` once the new boot is verified.
//!
//! Every replica serves these; the writes are the node's agent-side keys only, under the
//! field manager [`FIELD_MANAGER`], and never on a node a drydock agent reports on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drydock_core::cincinnati::{self, Choice, Graph};
use drydock_core::fleetlock::{self, ProtocolError};
use drydock_core::protocol::{AgentStatus, NodeState, keys};
use drydock_core::snapshot::Snapshot;
use drydock_core::strmap::StrMap;
use drydock_core::version::{OsFamily, OsVersion};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tracing::{info, warn};

use crate::controller::Fleet;
use crate::metrics::Metrics;
use crate::upstream::fetch;

/// Fedora CoreOS's public update graph.
pub const PUBLIC_FCOS: &str = "https://updates.coreos.fedoraproject.org";
/// The field manager of the status written in Zincati's place.
pub const FIELD_MANAGER: &str = "drydock-fleetlock";
/// Largest upstream graph read; Fedora CoreOS's is a few hundred KiB.
pub const MAX_GRAPH_BYTES: usize = 8 * 1024 * 1024;
/// How long an upstream graph is reused before it is asked again.
pub const GRAPH_TTL: Duration = Duration::from_secs(30);

/// The agent-side keys the stand-in status owns.
const OWNED: [&str; 13] = [
    keys::OS,
    keys::BOOTED_VERSION,
    keys::BOOTED_SLOT,
    keys::BOOT_ID,
    keys::STAGED_VERSION,
    keys::UPDATE_STATUS,
    keys::PROGRESS,
    keys::LAST_CHECK,
    keys::CHANNEL,
    keys::AGENT_VERSION,
    keys::REBOOT_ACK,
    keys::AGENT_MESSAGE,
    keys::ZINCATI_OFFER,
];

/// Where to ask for the update graph.
#[derive(Debug, Clone)]
pub struct ZincatiConfig {
    /// The upstream Cincinnati base URL (without `/v1/graph`).
    pub upstream: String,
    /// How long one upstream request may take, all included.
    pub timeout: Duration,
}

type GraphCache = Arc<tokio::sync::Mutex<HashMap<(String, String), (Instant, Arc<Graph>)>>>;

/// What the handlers need.
#[derive(Clone)]
pub struct Zincati {
    http: reqwest::Client,
    upstream: String,
    client: kube::Client,
    fleet: Fleet,
    metrics: Arc<Metrics>,
    graphs: GraphCache,
}

impl Zincati {
    /// The endpoints over the fleet caches, writing with `client`.
    pub fn new(
        cfg: &ZincatiConfig,
        client: kube::Client,
        fleet: Fleet,
        metrics: Arc<Metrics>,
    ) -> Result<Zincati, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()?;
        Ok(Zincati {
            http,
            upstream: cfg.upstream.trim_end_matches('/').to_string(),
            client,
            fleet,
            metrics,
            graphs: Arc::default(),
        })
    }

    async fn upstream_graph(&self, stream: &str, basearch: &str) -> Result<Arc<Graph>, String> {
        let key = (stream.to_string(), basearch.to_string());
        let mut cache = self.graphs.lock().await;
        if let Some((at, g)) = cache.get(&key)
            && at.elapsed() < GRAPH_TTL
        {
            return Ok(g.clone());
        }
        let request = self
            .http
            .get(format!("{}/v1/graph", self.upstream))
            .header(header::ACCEPT, "application/json")
            .query(&[("stream", stream), ("basearch", basearch)]);
        let body = fetch(request, MAX_GRAPH_BYTES).await.map_err(|e| {
            self.metrics.zincati("graph", e.outcome());
            e.to_string()
        })?;
        let graph = Arc::new(Graph::parse(&body).map_err(|e| {
            self.metrics.zincati("graph", "upstream-malformed");
            e.to_string()
        })?);
        cache.insert(key, (Instant::now(), graph.clone()));
        Ok(graph)
    }

    /// The node whose machine id gives Zincati's client id `id`, and what FleetLock may
    /// say about it.
    fn resolve(&self, id: &str) -> Result<Resolved, ProtocolError> {
        let nodes = self.fleet.nodes.state();
        let id = id.trim().to_ascii_lowercase();
        let (node, read) = nodes
            .iter()
            .filter(|n| fleetlock::zincati_id(n.machine_id()).is_ok_and(|z| z == id))
            .find_map(|n| n.read().map(|r| (Arc::clone(n), Arc::clone(r))))
            .ok_or_else(|| {
                ProtocolError::new(
                    404,
                    "unknown_id",
                    format!("no Node's status.nodeInfo.machineID gives Zincati client id {id:?}"),
                )
            })?;
        let name = read.name.clone();
        let annotations = &read.annotations;
        let state = read.state().clone();
        if !fleetlock::speaks_for(&state.agent) {
            return Err(ProtocolError::new(
                409,
                "agent_managed",
                format!("node {name} runs drydock-agent; FleetLock does not speak for it"),
            ));
        }
        let info = node.node_info();
        let boot_id = info.map(|i| i.boot_id.trim()).unwrap_or_default();
        if boot_id.is_empty() {
            return Err(ProtocolError::new(
                409,
                "unknown_boot",
                format!("the kubelet has not reported node {name}'s status.nodeInfo.bootID yet"),
            ));
        }
        let booted =
            fleetlock::os_image_version(info.map(|i| i.os_image.as_str()).unwrap_or(""))
                .map_err(|e| ProtocolError::new(409, "unknown_os", format!("node {name}: {e}")))?;
        let offer = annotations
            .get(keys::ZINCATI_OFFER)
            .and_then(|o| OsVersion::parse(OsFamily::Fcos, o).ok());
        Ok(Resolved {
            boot_id: boot_id.to_string(),
            annotations: annotations.clone(),
            labels: read.labels.clone(),
            name,
            state,
            booted,
            offer,
        })
    }

    /// Writes the stand-in status and the offer when they differ from what the node has.
    async fn write(
        &self,
        r: &Resolved,
        status: &AgentStatus,
        offer: Option<&OsVersion>,
    ) -> Result<(), ProtocolError> {
        let (mut annotations, labels) = status.to_metadata();
        if let Some(o) = offer {
            annotations.insert(keys::ZINCATI_OFFER.into(), o.to_string());
        }
        let unchanged = OWNED
            .iter()
            .all(|k| r.annotations.get(k) == annotations.get(*k).map(String::as_str))
            && labels
                .iter()
                .all(|(k, v)| r.labels.get(k) == Some(v.as_str()));
        if unchanged {
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": r.name, "annotations": annotations, "labels": labels},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(
            &r.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            warn!(node = %r.name, error = %e, "writing the status in Zincati's place");
            ProtocolError::new(
                503,
                "write_failed",
                format!("could not record node {}'s status: {e}", r.name),
            )
        })
    }
}

struct Resolved {
    name: String,
    labels: StrMap,
    annotations: StrMap,
    state: NodeState,
    booted: OsVersion,
    boot_id: String,
    offer: Option<OsVersion>,
}

fn json_error(e: &ProtocolError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.body(),
    )
        .into_response()
}

/// `GET /v1/graph`: the pinned graph for one node.
pub async fn graph(
    State(z): State<Zincati>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let fail = |e: ProtocolError| {
        z.metrics.zincati("graph", e.kind);
        json_error(&e)
    };
    if let Some(accept) = headers.get(header::ACCEPT) {
        let accept = accept.to_str().unwrap_or("");
        if !accept.contains("application/json") && !accept.contains("*/*") {
            return fail(ProtocolError::new(
                406,
                "invalid_content_type",
                format!("Accept is {accept:?}; the graph is served as application/json"),
            ));
        }
    }
    let param = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let checksum = param("os_checksum").or_else(|| param("current_os"));
    let missing: Vec<&str> = [
        ("basearch", param("basearch")),
        ("stream", param("stream")),
        ("os_checksum", checksum),
        ("node_uuid", param("node_uuid")),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_none())
    .map(|(k, _)| k)
    .collect();
    let (Some(basearch), Some(stream), Some(checksum), Some(node_uuid)) = (
        param("basearch"),
        param("stream"),
        checksum,
        param("node_uuid"),
    ) else {
        return fail(ProtocolError::new(
            400,
            "missing_params",
            format!(
                "mandatory client parameters missing: {}",
                missing.join(", ")
            ),
        ));
    };
    let policy = z.fleet.policy.borrow().clone();
    if !policy.loaded {
        return fail(ProtocolError::new(
            503,
            "starting",
            "the operator has not read its policy yet; ask again shortly",
        ));
    }
    let r = match z.resolve(node_uuid) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let upstream = match z.upstream_graph(stream, basearch).await {
        Ok(g) => g,
        Err(e) => {
            warn!(node = %r.name, error = %e, "no update graph: upstream failed");
            return json_error(&ProtocolError::new(
                502,
                "upstream_failed",
                format!("the upstream update graph: {e}"),
            ));
        }
    };
    let pool = policy.policy.pool_for(&r.labels);
    let decision = cincinnati::choose(&upstream, checksum, pool.version.as_ref());
    let target = match decision.choice {
        Choice::Stage(t) => {
            let nodes = z.fleet.nodes.state();
            let snaps = nodes.iter().filter_map(|n| n.read().cloned()).collect();
            let snapshot = Snapshot::from_read(snaps, Vec::new(), Vec::new());
            match drydock_core::download::may_download(
                &snapshot,
                &policy.policy,
                &r.name,
                &t.version,
            ) {
                Ok(()) => Some(t),
                Err(w) => {
                    info!(node = %r.name, version = %t.version, reason = %w.message, "update withheld from Zincati");
                    z.metrics.zincati("graph", &format!("withheld-{}", w.code));
                    None
                }
            }
        }
        Choice::Wait(why) => {
            info!(node = %r.name, reason = %why, "no update for Zincati");
            None
        }
        Choice::UpToDate | Choice::NotInGraph => None,
    };
    let status = fleetlock::standin_status(&r.state.agent, &r.booted, &r.boot_id, None);
    if let Err(e) = z
        .write(&r, &status, target.as_ref().map(|t| &t.version))
        .await
    {
        return fail(e);
    }
    z.metrics.zincati(
        "graph",
        if target.is_some() {
            "offered"
        } else {
            "no-update"
        },
    );
    let doc = cincinnati::offer_document(&upstream, checksum, target.as_ref());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

async fn read_request(
    headers: &HeaderMap,
    body: Body,
) -> Result<fleetlock::ClientParams, ProtocolError> {
    let bytes = axum::body::to_bytes(body, fleetlock::MAX_BODY_BYTES + 1)
        .await
        .map_err(|_| {
            ProtocolError::new(
                413,
                "body_too_large",
                format!("the body is over {} bytes", fleetlock::MAX_BODY_BYTES),
            )
        })?;
    let header = headers
        .get(fleetlock::PROTOCOL_HEADER)
        .map(|h| h.to_str().unwrap_or("(not text)"));
    fleetlock::parse_request(header, &bytes)
}

fn ok() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// A FleetLock request: checks it, finds the node, lets `decide` settle the stand-in
/// status and the answer (an outcome for the metric, or the 409 to send), records the
/// status, and answers 200 `{}` or the 409.
async fn fleetlock_request(
    z: &Zincati,
    endpoint: &'static str,
    headers: &HeaderMap,
    body: Body,
    decide: impl FnOnce(&Resolved) -> (AgentStatus, Result<&'static str, ProtocolError>),
) -> Response {
    let fail = |e: ProtocolError| {
        z.metrics.zincati(endpoint, e.kind);
        json_error(&e)
    };
    let params = match read_request(headers, body).await {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let r = match z.resolve(&params.id) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let (status, answer) = decide(&r);
    if let Err(e) = z.write(&r, &status, r.offer.as_ref()).await {
        return fail(e);
    }
    match answer {
        Ok(outcome) => {
            info!(node = %r.name, group = %params.group, endpoint, outcome, "FleetLock");
            z.metrics.zincati(endpoint, outcome);
            ok()
        }
        Err(wait) => {
            z.metrics.zincati(endpoint, "waiting");
            json_error(&wait)
        }
    }
}

/// `POST /v1/pre-reboot`: may this node reboot now? Records the offered release as
/// staged, and acknowledges the grant when there is one.
pub async fn pre_reboot(State(z): State<Zincati>, headers: HeaderMap, body: Body) -> Response {
    fleetlock_request(&z, "pre-reboot", &headers, body, |r| {
        let mut status =
            fleetlock::standin_status(&r.state.agent, &r.booted, &r.boot_id, r.offer.as_ref());
        let mut state = r.state.clone();
        state.agent = status.clone();
        let answer = fleetlock::pre_reboot(&state, &r.boot_id).map(|token| {
            status.reboot_ack = Some(token);
            "granted"
        });
        (status, answer)
    })
    .await
}

/// `POST /v1/steady-state`: the node booted and Zincati reports it steady. Records the
/// kubelet's boot, and holds Zincati until drydock has verified it.
pub async fn steady_state(State(z): State<Zincati>, headers: HeaderMap, body: Body) -> Response {
    fleetlock_request(&z, "steady-state", &headers, body, |r| {
        let status = fleetlock::standin_status(&r.state.agent, &r.booted, &r.boot_id, None);
        let mut state = r.state.clone();
        state.agent = status.clone();
        let answer = fleetlock::steady_state(&state, &r.boot_id).map(|()| "steady");
        (status, answer)
    })
    .await
}

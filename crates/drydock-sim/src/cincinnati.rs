//! A fake Fedora CoreOS Cincinnati server (what `updates.coreos.fedoraproject.org` is to
//! a real node): `GET /v1/graph?basearch=…&stream=…` answers the stream's update graph,
//! built from its releases the way upstream's graph builder does it:
//! - every release has an edge to every newer one,
//! - except that no release older than a barrier has an edge past the barrier,
//! - and a dead-end release has no edges out.
//!
//! Payloads are the commit checksums the simulated rpm-ostree remote gives the same
//! versions ([`crate::rpm_ostree::checksum_of`]), so a host can stage what the graph names.
//! Errors follow the protocol: JSON `{"kind","value"}` with a 4xx status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drydock_core::cincinnati::{
    AGE_INDEX_KEY, BARRIER_KEY, BARRIER_REASON_KEY, CHECKSUM_SCHEME, DEADEND_KEY,
    DEADEND_REASON_KEY, SCHEME_KEY,
};
use serde_json::{Value, json};

use crate::rpm_ostree::checksum_of;

/// A release of a stream, oldest first in [`CincinnatiServer::set_releases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSpec {
    /// Version.
    pub version: String,
    /// A barrier, with its reason.
    pub barrier: Option<String>,
    /// A dead-end, with its reason.
    pub deadend: Option<String>,
}

impl ReleaseSpec {
    /// An ordinary release.
    pub fn new(version: &str) -> ReleaseSpec {
        ReleaseSpec {
            version: version.to_string(),
            barrier: None,
            deadend: None,
        }
    }

    /// This release as a barrier.
    pub fn barrier(mut self, reason: &str) -> ReleaseSpec {
        self.barrier = Some(reason.to_string());
        self
    }

    /// This release as a dead-end.
    pub fn deadend(mut self, reason: &str) -> ReleaseSpec {
        self.deadend = Some(reason.to_string());
        self
    }
}

/// The graph document for `releases` (oldest first), as upstream's builder makes it.
pub fn graph(releases: &[ReleaseSpec]) -> Value {
    let nodes: Vec<Value> = releases
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = json!({SCHEME_KEY: CHECKSUM_SCHEME, AGE_INDEX_KEY: i.to_string()});
            if let Some(why) = &r.barrier {
                m[BARRIER_KEY] = json!("true");
                m[BARRIER_REASON_KEY] = json!(why);
            }
            if let Some(why) = &r.deadend {
                m[DEADEND_KEY] = json!("true");
                m[DEADEND_REASON_KEY] = json!(why);
            }
            json!({"version": r.version, "payload": checksum_of(&r.version), "metadata": m})
        })
        .collect();
    let mut edges = Vec::new();
    for (from, r) in releases.iter().enumerate() {
        if r.deadend.is_some() {
            continue;
        }
        // The first barrier newer than `from` bounds how far it may go.
        let limit = releases
            .iter()
            .enumerate()
            .skip(from + 1)
            .find(|(_, b)| b.barrier.is_some())
            .map_or(releases.len() - 1, |(i, _)| i);
        for to in from + 1..=limit {
            edges.push(json!([from, to]));
        }
    }
    json!({"nodes": nodes, "edges": edges})
}

/// One `/v1/graph` request, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphRequest {
    /// The query parameters.
    pub params: BTreeMap<String, String>,
}

#[derive(Default)]
struct Shared {
    streams: BTreeMap<String, Vec<ReleaseSpec>>,
    requests: Vec<GraphRequest>,
}

/// A running server; it stops when dropped.
pub struct CincinnatiServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, kind: &str, value: String) -> Response {
    json_response(status, &json!({"kind": kind, "value": value}))
}

/// `a=1&b=x%2Fy` → {a: 1, b: x/y}; None when an escape is malformed.
fn parse_query(q: &str) -> Option<BTreeMap<String, String>> {
    fn unescape(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((unescape(k)?, unescape(v)?))
        })
        .collect()
}

async fn serve_graph(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(params) = parse_query(query.as_deref().unwrap_or("")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_params",
            "the query string is not valid percent-encoding".into(),
        );
    };
    let accepts = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !accepts {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "invalid_content_type",
            "the request must accept application/json".into(),
        );
    }
    for key in ["basearch", "stream"] {
        if params.get(key).is_none_or(|v| v.is_empty()) {
            return error(
                StatusCode::BAD_REQUEST,
                "missing_params",
                format!("mandatory parameter {key:?} is missing or empty"),
            );
        }
    }
    let Ok(mut s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    s.requests.push(GraphRequest {
        params: params.clone(),
    });
    let stream = params.get("stream").cloned().unwrap_or_default();
    let releases = s.streams.get(&stream).cloned().unwrap_or_default();
    json_response(StatusCode::OK, &graph(&releases))
}

impl CincinnatiServer {
    /// Listens on `listen` (port 0 for any), with no releases yet.
    pub async fn start(listen: SocketAddr) -> std::io::Result<CincinnatiServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/v1/graph", get(serve_graph))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CincinnatiServer { addr, shared, task })
    }

    /// The base URL nodes use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces `stream`'s releases (oldest first).
    pub fn set_releases(&self, stream: &str, releases: Vec<ReleaseSpec>) {
        if let Ok(mut s) = self.shared.lock() {
            s.streams.insert(stream.to_string(), releases);
        }
    }

    /// The graph requests received so far.
    pub fn requests(&self) -> Vec<GraphRequest> {
        self.shared
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }
}

impl Drop for CincinnatiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drydock_core::cincinnati::{Choice, Graph, choose};

    #[test]
    fn the_graph_stops_at_barriers_and_leaves_dead_ends_without_edges() {
        let releases = vec![
            ReleaseSpec::new("41.20251001.3.0"),
            ReleaseSpec::new("41.20251015.3.0"),
            ReleaseSpec::new("41.20251029.3.0").barrier("b"),
            ReleaseSpec::new("41.20251112.3.0"),
            ReleaseSpec::new("41.20251126.3.0").deadend("d"),
        ];
        let doc = graph(&releases);
        assert_eq!(
            doc["edges"],
            json!([[0, 1], [0, 2], [1, 2], [2, 3], [2, 4], [3, 4]])
        );
        let g = Graph::parse(doc.to_string().as_bytes()).expect("parses");
        match choose(&g, &checksum_of("41.20251001.3.0"), None).choice {
            Choice::Stage(t) => assert_eq!(t.version.to_string(), "41.20251029.3.0"),
            other => panic!("{other:?}"),
        }
    }
}

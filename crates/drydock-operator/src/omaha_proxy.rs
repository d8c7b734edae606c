//! The Omaha proxy: Flatcar nodes' update_engine asks here (update.conf `SERVER`), and
//! the operator asks the real upstream (Nebraska or the public Flatcar server) with the
//! node's channel as `track`. An offer reaches the node only when its pool's pin allows
//! the version and the rollout has reached the node ([`drydock_core::download`]);
//! otherwise the node hears `noupdate`. An offer passed on is the upstream's response,
//! byte for byte, so the payload hash stays the one upstream signed.
//!
//! Every replica serves it from its own caches; it never writes to the API server.
//! Malformed requests get a 400 naming the problem. A malformed, oversized, failing or
//! unreachable upstream means `noupdate` and a metric, never a half-read offer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use drydock_core::omaha::{self, AppRequest, FLATCAR_APP_ID, UpdateCheck};
use drydock_core::snapshot::{ReadNode, Snapshot};
use drydock_core::version::{OsFamily, OsVersion};
use tracing::{info, warn};

use crate::controller::Fleet;
use crate::metrics::Metrics;
use crate::slim::FleetNode;
use crate::upstream::{UpstreamError, fetch};

/// The public Flatcar update server.
pub const PUBLIC_FLATCAR: &str = "https://public.update.flatcar-linux.net/v1/update/";
/// Largest upstream response read; Flatcar's are a few KiB.
pub const MAX_UPSTREAM_BYTES: usize = 1024 * 1024;

/// Where and how to ask upstream.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream Omaha URL.
    pub upstream: String,
    /// How long one upstream request may take, all included.
    pub timeout: Duration,
}

/// What the handler needs.
#[derive(Clone)]
pub struct Proxy {
    http: reqwest::Client,
    upstream: String,
    fleet: Fleet,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// A proxy over the fleet caches.
    pub fn new(
        cfg: &ProxyConfig,
        fleet: Fleet,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()?;
        Ok(Proxy {
            http,
            upstream: cfg.upstream.clone(),
            fleet,
            metrics,
        })
    }
}

fn xml(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn bad_request(metrics: &Metrics, message: String) -> Response {
    metrics.omaha("bad-request");
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The answer to an event report update_engine accepts when upstream cannot be asked.
fn events_ack(appid: &str, events: usize) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response protocol=\"3.0\" server=\"drydock\">\n <daystart elapsed_seconds=\"0\"/>\n",
    );
    x.push_str(&format!(
        " <app appid=\"{}\" status=\"ok\">\n",
        quick_xml::escape::escape(appid)
    ));
    for _ in 0..events {
        x.push_str("  <event status=\"ok\"/>\n");
    }
    x.push_str(" </app>\n</response>\n");
    x
}

/// The reading of the node whose `status.nodeInfo.machineID` is `machine_id`.
fn node_by_machine_id(nodes: &[Arc<FleetNode>], machine_id: &str) -> Option<Arc<ReadNode>> {
    nodes
        .iter()
        .filter(|n| n.machine_id().eq_ignore_ascii_case(machine_id))
        .find_map(|n| n.read().cloned())
}

/// Why upstream gave no usable answer.
enum Upstream {
    Failed(UpstreamError),
    NotText,
}

impl Upstream {
    fn outcome(&self) -> &'static str {
        match self {
            Upstream::Failed(e) => e.outcome(),
            Upstream::NotText => "upstream-malformed",
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Failed(e) => e.fmt(f),
            Upstream::NotText => write!(f, "upstream's answer is not UTF-8"),
        }
    }
}

async fn ask_upstream(p: &Proxy, body: String) -> Result<String, Upstream> {
    let request = p
        .http
        .post(&p.upstream)
        .header(header::CONTENT_TYPE, "text/xml")
        .body(body);
    let buf = fetch(request, MAX_UPSTREAM_BYTES)
        .await
        .map_err(Upstream::Failed)?;
    String::from_utf8(buf).map_err(|_| Upstream::NotText)
}

/// `POST /v1/update/`.
pub async fn update(State(p): State<Proxy>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request(&p.metrics, "the request body is not UTF-8".into());
    };
    let apps = match omaha::parse_request(text) {
        Ok(a) => a,
        Err(e) => return bad_request(&p.metrics, format!("malformed Omaha request: {e}")),
    };
    let Some(app) = apps
        .iter()
        .find(|a| a.appid.eq_ignore_ascii_case(FLATCAR_APP_ID))
    else {
        return bad_request(
            &p.metrics,
            format!("the request has no Flatcar app (appid {FLATCAR_APP_ID})"),
        );
    };
    if !app.updatecheck {
        // An event report (download started, installed, …): upstream keeps its statistics.
        p.metrics.omaha("events");
        return match ask_upstream(&p, text.to_string()).await {
            Ok(answer) => xml(StatusCode::OK, answer),
            Err(e) => {
                warn!(error = %e, "forwarding an event report");
                p.metrics.omaha(e.outcome());
                xml(StatusCode::OK, events_ack(&app.appid, app.events.len()))
            }
        };
    }
    if app.machineid.is_empty() {
        return bad_request(
            &p.metrics,
            "the update check has no machineid; drydock maps machineid to a Node".into(),
        );
    }
    let noupdate = || {
        xml(
            StatusCode::OK,
            omaha::build_response(&app.appid, &UpdateCheck::NoUpdate),
        )
    };

    let policy_state = p.fleet.policy.borrow().clone();
    if !policy_state.loaded {
        p.metrics.omaha("withheld-starting");
        return noupdate();
    }
    let nodes = p.fleet.nodes.state();
    let Some(read) = node_by_machine_id(&nodes, &app.machineid) else {
        warn!(machine_id = %app.machineid, "an update check from a machine that is no Node");
        p.metrics.omaha("withheld-unknown");
        return noupdate();
    };
    let name = read.name.clone();
    let state = read.state();
    // The channel the operator set for the node wins over what update.conf still says.
    let track = state
        .operator
        .desired_channel
        .clone()
        .unwrap_or_else(|| app.track.clone());
    let forwarded = AppRequest {
        track: track.clone(),
        ..app.clone()
    };
    let answer = match ask_upstream(&p, omaha::build_request(&forwarded)).await {
        Ok(a) => a,
        Err(e) => {
            warn!(node = %name, error = %e, "no update offered: upstream failed");
            p.metrics.omaha(e.outcome());
            return noupdate();
        }
    };
    let offer = match omaha::parse_response(&answer) {
        Ok(UpdateCheck::Offer(o)) => o,
        Ok(UpdateCheck::NoUpdate) => {
            p.metrics.omaha("noupdate");
            return xml(StatusCode::OK, answer);
        }
        Ok(UpdateCheck::Error(status)) => {
            warn!(node = %name, %status, "upstream refused the update check");
            p.metrics.omaha("upstream-refused");
            return xml(StatusCode::OK, answer);
        }
        Err(e) => {
            warn!(node = %name, error = %e, "no update offered: upstream's answer is malformed");
            p.metrics.omaha("upstream-malformed");
            return noupdate();
        }
    };
    let version = match OsVersion::parse(OsFamily::Flatcar, &offer.version) {
        Ok(v) => v,
        Err(e) => {
            warn!(node = %name, version = %offer.version, error = %e, "no update offered: upstream's version is not a Flatcar version");
            p.metrics.omaha("upstream-malformed");
            return noupdate();
        }
    };
    let snaps = nodes.iter().filter_map(|n| n.read().cloned()).collect();
    let snapshot = Snapshot::from_read(snaps, Vec::new(), Vec::new());
    match drydock_core::download::may_download(&snapshot, &policy_state.policy, &name, &version) {
        Ok(()) => {
            info!(node = %name, %version, %track, "passing the offer on");
            p.metrics.omaha("offered");
            xml(StatusCode::OK, answer)
        }
        Err(w) => {
            info!(node = %name, %version, reason = %w.message, "offer withheld");
            p.metrics.omaha(&format!("withheld-{}", w.code));
            noupdate()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_ack_is_an_omaha_response_update_engine_reads() {
        let x = events_ack(FLATCAR_APP_ID, 2);
        assert_eq!(x.matches("<event status=\"ok\"/>").count(), 2);
        assert!(x.contains("protocol=\"3.0\""));
    }
}

//! A fake upstream Omaha server (what Nebraska or the public Flatcar server is to a real
//! node): it answers update checks per channel (`track`), serves payloads with correct
//! sizes and SHA-256 hashes, and lets a test or a person change the offered version while
//! it runs (`PUT /admin/releases/{channel}` with the version as body).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use drydock_core::omaha::{self, AppRequest, Offer, UpdateCheck};
use drydock_core::version::OsVersion;
use sha2::{Digest, Sha256};

/// Name of the payload file, as Flatcar's servers name it.
pub const PAYLOAD_NAME: &str = "flatcar_production_update.gz";
/// Size of every simulated payload.
pub const PAYLOAD_BYTES: usize = 256 * 1024;

/// The payload of a version: deterministic bytes, so its hash is known to both sides.
pub fn payload(version: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAYLOAD_BYTES);
    let mut block = Sha256::digest(version.as_bytes());
    while out.len() < PAYLOAD_BYTES {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(PAYLOAD_BYTES);
    out
}

/// Base64 SHA-256 of a payload, as Omaha carries it.
pub fn payload_sha256(version: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(payload(version)))
}

#[derive(Default)]
struct Shared {
    releases: BTreeMap<String, String>,
    requests: Vec<AppRequest>,
    corrupt_payloads: bool,
}

/// A running server; it stops when dropped.
pub struct OmahaServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

fn offer_for(shared: &Shared, addr: SocketAddr, app: &AppRequest) -> UpdateCheck {
    let Some(release) = shared.releases.get(&app.track) else {
        return UpdateCheck::NoUpdate;
    };
    let newer = match (
        OsVersion::parse_any(release),
        OsVersion::parse_any(&app.version),
    ) {
        (Ok(r), Ok(n)) => r.compare(&n).map(|o| o.is_gt()).unwrap_or(false),
        _ => release != &app.version,
    };
    if !newer {
        return UpdateCheck::NoUpdate;
    }
    UpdateCheck::Offer(Offer {
        version: release.clone(),
        codebases: vec![format!("http://{addr}/payloads/{release}/")],
        package: PAYLOAD_NAME.into(),
        size: PAYLOAD_BYTES as u64,
        sha256: payload_sha256(release),
        package_hash: None,
    })
}

async fn update(
    State((shared, addr)): State<(Arc<Mutex<Shared>>, SocketAddr)>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the request body is not UTF-8\n").into_response();
    };
    let apps = match omaha::parse_request(text) {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let Ok(mut s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let app = &apps[0];
    s.requests.push(app.clone());
    let check = if app.updatecheck {
        offer_for(&s, addr, app)
    } else {
        UpdateCheck::NoUpdate
    };
    (
        [("content-type", "text/xml")],
        omaha::build_response(&app.appid, &check),
    )
        .into_response()
}

async fn download(
    State((shared, _)): State<(Arc<Mutex<Shared>>, SocketAddr)>,
    Path((version, name)): Path<(String, String)>,
) -> Response {
    if name != PAYLOAD_NAME {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut bytes = payload(&version);
    if shared.lock().map(|s| s.corrupt_payloads).unwrap_or(false) {
        bytes[0] ^= 0xff;
    }
    bytes.into_response()
}

async fn set_release(
    State((shared, _)): State<(Arc<Mutex<Shared>>, SocketAddr)>,
    Path(channel): Path<String>,
    body: String,
) -> Response {
    let version = body.trim().to_string();
    if OsVersion::parse_any(&version).is_err() {
        return (
            StatusCode::BAD_REQUEST,
            format!("{version:?} is not a version\n"),
        )
            .into_response();
    }
    if let Ok(mut s) = shared.lock() {
        s.releases.insert(channel, version);
    }
    StatusCode::NO_CONTENT.into_response()
}

impl OmahaServer {
    /// Listens on `listen` (port 0 for any), offering `releases` (channel → version).
    pub async fn start(
        listen: SocketAddr,
        releases: BTreeMap<String, String>,
    ) -> std::io::Result<OmahaServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            releases,
            ..Shared::default()
        }));
        let app = Router::new()
            .route("/v1/update/", post(update))
            .route("/v1/update", post(update))
            .route("/payloads/{version}/{name}", get(download))
            .route("/admin/releases/{channel}", put(set_release))
            .layer(axum::extract::DefaultBodyLimit::max(
                omaha::MAX_REQUEST_BYTES,
            ))
            .with_state((shared.clone(), addr));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(OmahaServer { addr, shared, task })
    }

    /// The update URL nodes use (`SERVER=` in update.conf).
    pub fn url(&self) -> String {
        format!("http://{}/v1/update/", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Offer `version` on `channel` from now on.
    pub fn set_release(&self, channel: &str, version: &str) {
        if let Ok(mut s) = self.shared.lock() {
            s.releases.insert(channel.to_string(), version.to_string());
        }
    }

    /// Serve payloads whose bytes do not match their announced hash (tests of
    /// update_engine's verification).
    pub fn corrupt_payloads(&self, on: bool) {
        if let Ok(mut s) = self.shared.lock() {
            s.corrupt_payloads = on;
        }
    }

    /// The update checks received so far.
    pub fn requests(&self) -> Vec<AppRequest> {
        self.shared
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }
}

impl Drop for OmahaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

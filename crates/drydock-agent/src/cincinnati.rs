//! Asks a Cincinnati server for the update graph of the node's stream (`GET /v1/graph`,
//! the parameters Fedora CoreOS clients send), bounded in time and size. What to stage
//! from the graph is `drydock_core::cincinnati::choose`.

use std::time::Duration;

use drydock_core::cincinnati::Graph;

/// Most bytes of a graph accepted (the public stable graph is a few hundred KiB).
pub const MAX_GRAPH_BYTES: usize = 8 * 1024 * 1024;
/// How long one graph request may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The public Fedora CoreOS update service.
pub const FEDORA_COREOS: &str = "https://updates.coreos.fedoraproject.org";

/// Who asks, and about what.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The node's stream (`stable`, `testing`, `next`).
    pub stream: &'a str,
    /// The booted version.
    pub os_version: Option<&'a str>,
    /// The booted commit.
    pub os_checksum: &'a str,
}

/// An HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the server at `base` (`https://updates.coreos.fedoraproject.org`);
    /// refuses anything that is not an http(s) URL.
    pub fn new(base: &str) -> Result<Client, String> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "Cincinnati URL {base:?} must start with http:// or https://"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(crate::USER_AGENT)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: base.to_string(),
        })
    }

    /// Fetches and parses the graph; an error says what went wrong in one line.
    pub async fn graph(&self, q: &Query<'_>) -> Result<Graph, String> {
        let url = format!("{}/v1/graph", self.base);
        let mut params = vec![
            ("basearch", std::env::consts::ARCH),
            ("stream", q.stream),
            ("os_checksum", q.os_checksum),
        ];
        if let Some(v) = q.os_version {
            params.push(("os_version", v));
        }
        let mut resp = self
            .http
            .get(&url)
            .header("accept", "application/json")
            .query(&params)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_GRAPH_BYTES as u64)
        {
            return Err(format!(
                "GET {url}: the graph is over {MAX_GRAPH_BYTES} bytes"
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: reading the answer: {e}"))?
        {
            if body.len() + chunk.len() > MAX_GRAPH_BYTES {
                return Err(format!(
                    "GET {url}: the graph is over {MAX_GRAPH_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            // The protocol's errors are {"kind","value"}; show them when they are.
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    Some(format!(
                        "{}: {}",
                        v.get("kind")?.as_str()?,
                        v.get("value")?.as_str()?
                    ))
                })
                .unwrap_or_else(|| "not a protocol error".into());
            return Err(format!("GET {url}: HTTP {status} ({detail})"));
        }
        Graph::parse(&body).map_err(|e| format!("GET {url}: {e}"))
    }
}

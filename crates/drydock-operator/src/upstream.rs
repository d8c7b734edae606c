//! Reading an upstream server's answer (Omaha, Cincinnati) with a byte limit, so a
//! misbehaving upstream can cost the operator at most that much memory, and every way it
//! can fail has a name for logs and metrics.

use std::fmt;

/// Why upstream gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection, a timeout, or the connection broke mid-answer.
    Unreachable(String),
    /// A non-2xx status.
    Status(u16),
    /// The answer is longer than the limit.
    TooLarge(usize),
}

impl UpstreamError {
    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "upstream-unreachable",
            UpstreamError::Status(_) => "upstream-status",
            UpstreamError::TooLarge(_) => "upstream-too-large",
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Unreachable(e) => write!(f, "cannot reach upstream: {e}"),
            UpstreamError::Status(s) => write!(f, "upstream answered HTTP {s}"),
            UpstreamError::TooLarge(limit) => {
                write!(f, "upstream's answer is over {limit} bytes")
            }
        }
    }
}

/// Sends `request` and reads a successful answer's body, refusing one over `limit` bytes
/// before reading past the limit.
pub async fn fetch(
    request: reqwest::RequestBuilder,
    limit: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let mut r = request
        .send()
        .await
        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
    if !r.status().is_success() {
        return Err(UpstreamError::Status(r.status().as_u16()));
    }
    if r.content_length().is_some_and(|l| l > limit as u64) {
        return Err(UpstreamError::TooLarge(limit));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(UpstreamError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

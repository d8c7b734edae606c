//! Draining through the `policy/v1` Eviction API, so PodDisruptionBudgets hold.
//!
//! An eviction is a request; the API server answers it:
//! - any 2xx: the pod is being deleted (its grace period runs); 404: it is already gone;
//!   409 on our UID precondition: the pod was replaced — both are done.
//! - 429: a budget does not allow it now. The answer's `Retry-After` is honoured: the pod
//!   is not asked again before then. The blocking budget is reported.
//! - 500 with "more than one PodDisruptionBudget": the API server will never evict it (the
//!   planner already holds such nodes); anything else is retried on the next pass.
//!
//! The request is sent raw (not through `Api::evict`) to read `Retry-After`, and the
//! client must not retry 429s by itself (`default_retry = false`), or it would hammer the
//! budget behind the operator's back.

use std::time::Duration;

use drydock_core::planner::PodRef;
use kube::client::Body;

/// What the API server said to one eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evicted {
    /// Accepted: the pod is terminating.
    Accepted,
    /// Already gone, or replaced by a pod with another UID.
    Gone,
    /// A budget refuses it now; ask again after `retry_after`.
    Blocked {
        /// From `Retry-After` (10 s when absent).
        retry_after: Duration,
        /// The API server's message (names the budget's rule).
        message: String,
    },
    /// Refused for another reason (status code and message).
    Refused {
        /// HTTP status.
        status: u16,
        /// Message.
        message: String,
    },
}

/// Why an eviction could not be asked at all.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Building or sending the request failed.
    #[error("evicting {pod}: {source}")]
    Request {
        /// `namespace/name`.
        pod: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);

fn retry_after(headers: &http::HeaderMap) -> Duration {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 600)))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

fn message_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut msg = v["message"].as_str().unwrap_or("").to_string();
    if let Some(causes) = v["details"]["causes"].as_array() {
        for c in causes {
            if let Some(m) = c["message"].as_str() {
                msg.push_str(": ");
                msg.push_str(m);
            }
        }
    }
    if msg.is_empty() {
        msg = String::from_utf8_lossy(body).chars().take(300).collect();
    }
    msg
}

/// Asks the API server to evict `pod` (only the pod with its UID), with `grace` seconds
/// to terminate (None: the pod's own grace period).
pub async fn evict(
    client: &kube::Client,
    pod: &PodRef,
    grace: Option<u64>,
) -> Result<Evicted, DrainError> {
    let key = format!("{}/{}", pod.namespace, pod.name);
    let wrap = |e: Box<dyn std::error::Error + Send + Sync>| DrainError::Request {
        pod: key.clone(),
        source: e,
    };
    let mut delete_options = serde_json::json!({"preconditions": {"uid": pod.uid}});
    if let Some(g) = grace {
        delete_options["gracePeriodSeconds"] = serde_json::json!(g);
    }
    let body = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": delete_options,
    });
    let bytes = serde_json::to_vec(&body).map_err(|e| wrap(Box::new(e)))?;
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{}/pods/{}/eviction",
        pod.namespace, pod.name
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(Body::from(bytes))
    .map_err(|e| wrap(Box::new(e)))?;
    let resp = client.send(req).await.map_err(|e| wrap(Box::new(e)))?;
    let status = resp.status();
    let wait = retry_after(resp.headers());
    let body = resp
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| wrap(Box::new(e)))?;
    Ok(match status.as_u16() {
        200..=299 => Evicted::Accepted,
        404 | 409 => Evicted::Gone,
        429 => Evicted::Blocked {
            retry_after: wait,
            message: message_of(&body),
        },
        s => Evicted::Refused {
            status: s,
            message: message_of(&body),
        },
    })
}

/// Deletes `pod` (only the pod with its UID), with `grace` seconds to terminate (None:
/// its own): a forced drain after the timeout, past any budget.
pub async fn delete(
    client: &kube::Client,
    pod: &PodRef,
    grace: Option<u64>,
) -> Result<Evicted, DrainError> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), &pod.namespace);
    let dp = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(pod.uid.clone()),
            resource_version: None,
        }),
        grace_period_seconds: grace.and_then(|g| u32::try_from(g).ok()),
        ..kube::api::DeleteParams::default()
    };
    match api.delete(&pod.name, &dp).await {
        Ok(_) => Ok(Evicted::Accepted),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Evicted::Gone),
        Err(kube::Error::Api(s)) => Ok(Evicted::Refused {
            status: s.code,
            message: s.message,
        }),
        Err(e) => Err(DrainError::Request {
            pod: format!("{}/{}", pod.namespace, pod.name),
            source: Box::new(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_and_bounded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), DEFAULT_RETRY_AFTER);
        h.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(3));
        h.insert(http::header::RETRY_AFTER, "0".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(http::header::RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(600));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), DEFAULT_RETRY_AFTER);
    }

    #[test]
    fn the_status_message_and_causes_are_reported() {
        let body = br#"{"kind":"Status","message":"Cannot evict pod as it would violate the pod's disruption budget.","details":{"causes":[{"reason":"DisruptionBudget","message":"The disruption budget web needs 2 healthy pods and has 2 currently"}]}}"#;
        assert_eq!(
            message_of(body),
            "Cannot evict pod as it would violate the pod's disruption budget.: The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        assert_eq!(message_of(b"oops"), "oops");
    }
}

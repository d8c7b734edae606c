//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder
//! renews `renewTime` every `retry_period`; another replica takes the lease over only once
//! `renewTime + leaseDurationSeconds` has passed; every write carries the resourceVersion it
//! read, so two replicas can never both win. A leader that cannot renew within
//! `renew_deadline` (shorter than the lease) steps down before anyone else may take over.
//! Leadership is published on a `watch` channel; whoever acts stops the moment it reads
//! `false`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// How the election runs.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica (the pod name).
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API call failed.
    #[error("lease {0}: {1}")]
    Api(String, #[source] kube::Error),
}

/// Outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Leading,
    /// Someone else holds a valid lease, or won the race.
    Following,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Tries once to acquire or renew the lease.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<Attempt, LeaseError> {
    let now = Timestamp::now();
    let secs = i32::try_from(cfg.lease_duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    let err = |e| LeaseError::Api(cfg.name.clone(), e);
    let current = match api.get(&cfg.name).await {
        Ok(l) => l,
        Err(e) if is_not_found(&e) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(e) if is_conflict(&e) => Ok(Attempt::Following),
                Err(e) => Err(err(e)),
            };
        }
        Err(e) => return Err(err(e)),
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == cfg.identity;
    let held_for = spec
        .lease_duration_seconds
        .map(|s| jiff::SignedDuration::from_secs(i64::from(s.max(0))))
        .unwrap_or(jiff::SignedDuration::ZERO);
    let expired = match spec.renew_time.as_ref() {
        Some(MicroTime(t)) => t.checked_add(held_for).map_or(true, |end| end < now),
        None => true,
    };
    if !mine && !holder.is_empty() && !expired {
        return Ok(Attempt::Following);
    }
    let mut next = current.clone();
    let mut s = spec;
    if !mine {
        s.holder_identity = Some(cfg.identity.clone());
        s.acquire_time = Some(MicroTime(now));
        s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
    }
    s.lease_duration_seconds = Some(secs);
    s.renew_time = Some(MicroTime(now));
    next.spec = Some(s);
    // `replace` sends the resourceVersion read above: a concurrent writer makes it a 409.
    match api.replace(&cfg.name, &PostParams::default(), &next).await {
        Ok(_) => {
            if !mine {
                info!(lease = %cfg.name, previous = %holder, "acquired the lease");
            }
            Ok(Attempt::Leading)
        }
        Err(e) if is_conflict(&e) => Ok(Attempt::Following),
        Err(e) => Err(err(e)),
    }
}

/// Gives the lease up (on shutdown), so another replica need not wait for it to expire.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), LeaseError> {
    let err = |e| LeaseError::Api(cfg.name.clone(), e);
    let mut lease = api.get(&cfg.name).await.map_err(err)?;
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    api.replace(&cfg.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
        .map_err(err)
}

/// Runs the election forever, publishing whether this replica leads.
pub async fn run(api: Api<Lease>, cfg: LeaseConfig, leading: watch::Sender<bool>) {
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        let result = try_acquire(&api, &cfg).await;
        let now = tokio::time::Instant::now();
        let lead = match result {
            Ok(Attempt::Leading) => {
                last_renewal = Some(now);
                true
            }
            Ok(Attempt::Following) => false,
            Err(e) => {
                warn!(error = %e, "lease attempt failed");
                // Keep leading only while the last renewal is recent enough.
                last_renewal.is_some_and(|t| now.duration_since(t) < cfg.renew_deadline)
                    && *leading.borrow()
            }
        };
        if lead != *leading.borrow() {
            if lead {
                info!(identity = %cfg.identity, "leading");
            } else {
                warn!(identity = %cfg.identity, "not leading any more; stopping all actions");
            }
            leading.send_replace(lead);
        }
        if !lead {
            last_renewal = None;
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

//! Leader election for the kube source between controller replicas: a
//! `coordination.k8s.io/v1` Lease, as Kubernetes' own controllers hold
//! one. A replica acts only while it holds the lease; it renews it every
//! [`LeaseOptions::renew`]; another replica takes it once it has not
//! changed for its duration (measured on the taker's own clock, so clocks
//! need not agree); a holder that cannot renew within
//! [`LeaseOptions::renew_deadline`] stops acting, before anyone may take it
//! over. A replica that shuts down cleanly releases the lease
//! ([`Elector::release`]), so another takes it at once rather than after
//! its duration.
//!
//! Owns the lease record and its timing only: what is done while leading
//! is the caller's (`super::kube`).

use std::time::{Duration, Instant};

use ::kube::api::{Api, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Settings of the lease.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// Namespace of the Lease object.
    pub namespace: String,
    /// Name of the Lease object.
    pub name: String,
    /// This replica's identity (`holderIdentity`).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew: Duration,
    /// How long the holder keeps acting without a successful renewal
    /// (less than `duration`).
    pub renew_deadline: Duration,
    /// How often a replica without the lease tries to take it.
    pub retry: Duration,
}

/// Name of the Lease the kube source's replicas share by default.
pub const DEFAULT_LEASE_NAME: &str = "pinfleet-controller";

impl LeaseOptions {
    /// Kubernetes' usual timing (15 s lease, renewed every 2 s, given up
    /// after 10 s without renewal) in `namespace`, for an identity made of
    /// `POD_NAME` (else `HOSTNAME`, else `pinfleet`) and a random suffix.
    pub fn new(namespace: impl Into<String>) -> Self {
        let base = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "pinfleet".to_string());
        let suffix: u32 = rand::rng().random();
        Self {
            namespace: namespace.into(),
            name: DEFAULT_LEASE_NAME.to_string(),
            identity: format!("{base}-{suffix:08x}"),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// One replica's view of the lease.
pub struct Elector {
    api: Api<Lease>,
    opts: LeaseOptions,
    /// The lease record last seen (holder and renew time) and when, on
    /// this replica's clock.
    observed: Option<(String, Instant)>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// An elector for the lease of `opts` through `client`.
    pub fn new(client: ::kube::Client, opts: LeaseOptions) -> Self {
        Self {
            api: Api::namespaced(client, &opts.namespace),
            opts,
            observed: None,
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.opts.identity
    }

    /// Takes or renews the lease once: `Ok(true)` when this replica holds
    /// it afterwards, `Ok(false)` when another replica does (or won a race).
    pub async fn try_acquire(&mut self) -> Result<bool, ::kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.opts.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.opts.name.clone()),
                    namespace: Some(self.opts.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.opts.identity.clone()),
                    lease_duration_seconds: Some(seconds(self.opts.duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(::kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!("{holder}@{:?}", spec.renew_time);
        if self.observed.as_ref().is_none_or(|(r, _)| *r != record) {
            self.observed = Some((record, Instant::now()));
        }
        let held_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.opts.duration, Duration::from_secs);
        let expired = holder.is_empty()
            || self
                .observed
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() >= held_for);
        let mine = holder == self.opts.identity;
        if !mine && !expired {
            return Ok(false);
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.opts.identity.clone()),
            lease_duration_seconds: Some(seconds(self.opts.duration)),
            acquire_time: if mine {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + if mine { 0 } else { 1 }),
            ..spec
        });
        // The resourceVersion read makes a concurrent taker's write a 409.
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(::kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease (`true`) or `cancel`
    /// (`false`).
    pub async fn acquire(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            match self.try_acquire().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.opts.name, error = %super::error_chain(&e), "kube: cannot read or take the lease");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(self.opts.retry) => {}
            }
        }
    }

    /// Gives the lease up if this replica holds it (clean shutdown, once it
    /// stopped acting): the holder is cleared, which every replica reads as
    /// expired, so the next one to try takes it at once. A lease another
    /// replica holds, or one changed meanwhile (409), is left alone.
    pub async fn release(&mut self) -> Result<(), ::kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.opts.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..spec
        });
        match self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Renews the held lease until it is lost (another replica holds it,
    /// or no renewal succeeded for `renew_deadline`) or `cancel`; then
    /// returns.
    pub async fn hold(&mut self, cancel: &CancellationToken) {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.opts.renew) => {}
            }
            let left = self.opts.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_acquire()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.opts.name, "kube: another replica holds the lease");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.opts.name, error = %super::error_chain(&e), "kube: cannot renew the lease");
                }
                Err(_) => {}
            }
            if renewed.elapsed() >= self.opts.renew_deadline {
                tracing::warn!(lease = %self.opts.name, "kube: the lease was not renewed in time");
                return;
            }
        }
    }
}

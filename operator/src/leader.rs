//! Leader election on a `coordination.k8s.io/v1` Lease, so several operator replicas
//! are safe: only the holder runs the controllers.
//!
//! The holder renews every `retry_period`. Another replica takes the lease over only
//! after `lease_duration` passed without a renewal. The holder itself stops leading
//! when it could not renew for `renew_deadline`, which is shorter than the lease
//! duration, so it stops before anyone else can start (given clocks that agree to
//! within the difference).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// How this replica takes part in the election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease lasts without renewal (whole seconds on the wire).
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often to renew or try to acquire.
    pub retry_period: Duration,
}

/// Takes part in the election for one Lease.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    /// An elector for `settings` through `client`.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    fn duration_seconds(&self) -> i32 {
        let seconds = self.settings.lease_duration.as_millis().div_ceil(1000);
        i32::try_from(seconds).unwrap_or(i32::MAX).max(1)
    }

    /// One round: creates, renews or takes over the Lease. Returns whether this
    /// replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let identity = self.settings.identity.clone();
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity),
                    lease_duration_seconds: Some(self.duration_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(err) if is_conflict(&err) => Ok(false),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(identity.as_str());
        let held = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        let expires = spec.renew_time.as_ref().map(|renewed| {
            let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0));
            renewed.0 + SignedDuration::from_secs(seconds)
        });
        let expired = expires.is_none_or(|at| at <= now);
        if !ours && held && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let renewed = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: Some(identity),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: if ours {
                    spec.acquire_time.clone()
                } else {
                    Some(MicroTime(now))
                },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
                ..spec
            }),
        };
        // The replace carries the resourceVersion read above: of two replicas taking
        // over at once, one gets a conflict.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &renewed)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if is_conflict(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Gives the lease up if this replica holds it, so another takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let released = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                ..spec
            }),
        };
        self.api
            .replace(&lease.name_any(), &PostParams::default(), &released)
            .await
            .map(|_| ())
    }

    /// Takes part until the process ends, publishing whether this replica leads.
    ///
    /// Leadership is counted from when the round that renewed it was *sent* (the API
    /// server may have written the renewal at any moment after), and it ends at the
    /// renew deadline even while a request hangs: each round is cut off at the
    /// deadline of the leadership it would extend, and the wait between rounds wakes
    /// at that deadline. Otherwise a request stuck on an unreachable API server would
    /// keep this replica reconciling after another took the expired lease over.
    pub async fn run(self, leading: watch::Sender<bool>) {
        let deadline = self.settings.renew_deadline;
        let mut renewed: Option<Instant> = None;
        loop {
            let sent = Instant::now();
            renewed = renewed.filter(|at| sent < *at + deadline);
            self.publish(&leading, renewed.is_some());
            let bound = renewed.map_or(deadline, |at| at + deadline - sent);
            match tokio::time::timeout(bound, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Some(sent),
                Ok(Ok(false)) => renewed = None,
                Ok(Err(err)) => warn!(%err, "could not renew the leader lease"),
                Err(_) => warn!(?bound, "renewing the leader lease timed out"),
            }
            let now = Instant::now();
            renewed = renewed.filter(|at| now < *at + deadline);
            self.publish(&leading, renewed.is_some());
            let retry_at = now + self.settings.retry_period;
            let next = renewed.map_or(retry_at, |at| retry_at.min(at + deadline));
            tokio::time::sleep_until(next).await;
        }
    }

    /// Tells the watchers whether this replica leads, if that changed.
    fn publish(&self, leading: &watch::Sender<bool>, now_leading: bool) {
        leading.send_if_modified(|was| {
            let changed = *was != now_leading;
            if changed {
                info!(leading = now_leading, identity = %self.settings.identity, "leadership changed");
            }
            *was = now_leading;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use serde_json::{Value, json};

    use super::*;
    use crate::fixtures::{Call, context, verify};
    use crate::metadata::MemoryMetadata;

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ferry-system/leases/ferry-operator";

    fn elector(client: Client, identity: &str) -> LeaderElector {
        LeaderElector::new(
            client,
            LeaseSettings {
                name: "ferry-operator".to_owned(),
                namespace: "ferry-system".to_owned(),
                identity: identity.to_owned(),
                lease_duration: Duration::from_millis(15_000),
                renew_deadline: Duration::from_millis(10_000),
                retry_period: Duration::from_millis(2_000),
            },
        )
    }

    fn lease(holder: &str, renewed_s_ago: i64, transitions: i32) -> Value {
        let renewed = Timestamp::now() - SignedDuration::from_secs(renewed_s_ago);
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "ferry-operator", "namespace": "ferry-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": MicroTime(renewed), "acquireTime": MicroTime(renewed),
                     "leaseTransitions": transitions},
        })
    }

    #[tokio::test]
    async fn an_absent_lease_is_created_and_held() {
        let (ctx, server) = context(MemoryMetadata::new());
        let server = server.run(vec![
            Call::new(Method::GET, PATH).not_found(),
            Call::new(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/ferry-system/leases",
            )
            .check(|b| {
                assert_eq!(b["spec"]["holderIdentity"], "a");
                assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
            }),
        ]);
        let held = elector(ctx.client.clone(), "a")
            .try_acquire_or_renew()
            .await;
        assert!(held.expect("no API error"));
        verify(server).await;
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_replica_is_left_alone() {
        let (ctx, server) = context(MemoryMetadata::new());
        let server = server.run(vec![
            Call::new(Method::GET, PATH).reply(StatusCode::OK, lease("b", 3, 0)),
        ]);
        let held = elector(ctx.client.clone(), "a")
            .try_acquire_or_renew()
            .await;
        assert!(!held.expect("no API error"));
        verify(server).await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_its_resource_version() {
        let (ctx, server) = context(MemoryMetadata::new());
        let server = server.run(vec![
            Call::new(Method::GET, PATH).reply(StatusCode::OK, lease("b", 20, 4)),
            Call::new(Method::PUT, PATH).check(|b| {
                assert_eq!(b["metadata"]["resourceVersion"], "7");
                assert_eq!(b["spec"]["holderIdentity"], "a");
                assert_eq!(b["spec"]["leaseTransitions"], 5);
            }),
        ]);
        let held = elector(ctx.client.clone(), "a")
            .try_acquire_or_renew()
            .await;
        assert!(held.expect("no API error"));
        verify(server).await;
    }

    #[tokio::test]
    async fn losing_a_takeover_race_is_not_an_error() {
        let (ctx, server) = context(MemoryMetadata::new());
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "Conflict", "code": 409, "message": "conflict"});
        let server = server.run(vec![
            Call::new(Method::GET, PATH).reply(StatusCode::OK, lease("b", 20, 4)),
            Call::new(Method::PUT, PATH).reply(StatusCode::CONFLICT, conflict),
        ]);
        let held = elector(ctx.client.clone(), "a")
            .try_acquire_or_renew()
            .await;
        assert!(!held.expect("no API error"));
        verify(server).await;
    }

    #[tokio::test]
    async fn the_holder_renews_without_a_transition() {
        let (ctx, server) = context(MemoryMetadata::new());
        let server = server.run(vec![
            Call::new(Method::GET, PATH).reply(StatusCode::OK, lease("a", 3, 2)),
            Call::new(Method::PUT, PATH).check(|b| assert_eq!(b["spec"]["leaseTransitions"], 2)),
        ]);
        let held = elector(ctx.client.clone(), "a")
            .try_acquire_or_renew()
            .await;
        assert!(held.expect("no API error"));
        verify(server).await;
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_ends_at_the_renew_deadline_while_a_renewal_hangs() {
        let (ctx, server) = context(MemoryMetadata::new());
        let _server = server.run(vec![
            Call::new(Method::GET, PATH).not_found(),
            Call::new(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/ferry-system/leases",
            ),
            // The first renewal's read never comes back.
            Call::new(Method::GET, PATH).stall(),
        ]);
        let elector = elector(ctx.client.clone(), "a");
        let renew_deadline = elector.settings.renew_deadline;
        let (tx, mut leading) = watch::channel(false);
        let acquired = Instant::now();
        tokio::spawn(elector.run(tx));
        leading
            .wait_for(|now| *now)
            .await
            .expect("the elector runs");
        // Time is paused: it only moves when every task waits, so the deadline the
        // elector keeps is exactly what ends its leadership.
        let ended = tokio::time::timeout(renew_deadline * 2, leading.wait_for(|now| !*now)).await;
        assert!(
            ended.is_ok(),
            "still leading {:?} after the last renewal",
            renew_deadline * 2
        );
        assert_eq!(acquired.elapsed(), renew_deadline);
    }
}

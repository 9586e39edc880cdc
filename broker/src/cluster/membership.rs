//! A host's membership: an etcd lease kept alive, the host key attached to it, and the
//! host's own conservative idea of whether the lease still holds.
//!
//! Fencing rests on that idea being conservative: the host counts its lease's life from
//! the moment it *sent* the grant or keep-alive (etcd counts from when it received it,
//! which is later) and gives up a safety margin on top. So the host stops acting as a
//! leader before etcd can expire the lease and the controller can elect another one.
//! Epochs on every replicated write cover what timing cannot (a paused process).

use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ClusterConfig;
use super::records::HostRecord;
use crate::clock::now_ms;
use crate::meta::{EtcdConnection, encode_json, keys};

/// The host's lease as the host itself sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseStatus {
    /// The etcd lease id, once granted.
    pub id: Option<i64>,
    /// Until when the host may act on it (already shortened by the safety margin).
    pub valid_until: Option<Instant>,
}

impl LeaseStatus {
    /// True while the host may still act as a member (and a leader) on this lease.
    pub fn is_live(&self, now: Instant) -> bool {
        self.id.is_some() && self.valid_until.is_some_and(|until| now < until)
    }
}

/// A registered host; dropping it stops renewing (the lease then expires in etcd).
pub struct Membership {
    status: watch::Receiver<LeaseStatus>,
    task: JoinHandle<()>,
    connection: EtcdConnection,
    leave_timeout: Duration,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Membership {
    /// Starts registering and renewing in the background; watch [`Membership::status`]
    /// to learn when the host is live.
    pub fn start(connection: EtcdConnection, config: ClusterConfig) -> Self {
        let (sender, status) = watch::channel(LeaseStatus::default());
        let leave_timeout = config.keep_alive_interval;
        let task = tokio::spawn(keep_membership(connection.clone(), config, sender));
        Self {
            status,
            task,
            connection,
            leave_timeout,
        }
    }

    /// The lease as the host sees it, updated on every renewal.
    pub fn status(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Stops renewing and revokes the lease, so the host's keys go at once rather than
    /// when the lease expires. Best effort: etcd may be unreachable.
    pub async fn leave(self) {
        self.task.abort();
        let Some(id) = self.status.borrow().id else {
            return;
        };
        let mut client = self.connection.client();
        match tokio::time::timeout(self.leave_timeout, client.lease_revoke(id)).await {
            Ok(Ok(_)) => tracing::info!(lease = id, "host left the cluster"),
            Ok(Err(err)) => tracing::warn!(lease = id, error = %err, "could not revoke the lease"),
            Err(_) => tracing::warn!(lease = id, "revoking the lease timed out"),
        }
    }

    /// Waits until the host holds a live lease, up to `timeout`.
    pub async fn wait_live(&self, timeout: Duration) -> Option<LeaseStatus> {
        let mut status = self.status.clone();
        tokio::time::timeout(timeout, async {
            loop {
                let now = *status.borrow_and_update();
                if now.is_live(Instant::now()) {
                    return now;
                }
                if status.changed().await.is_err() {
                    // The renewal task ended; nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }
}

/// Grants, registers and renews for as long as the host runs; after any failure the
/// host counts its lease as gone once its validity runs out, and starts over.
async fn keep_membership(
    connection: EtcdConnection,
    config: ClusterConfig,
    status: watch::Sender<LeaseStatus>,
) {
    let mut lost: Option<i64> = None;
    loop {
        let mut client = connection.client();
        match register(&mut client, &config, &status).await {
            Ok(id) => {
                if let Some(old) = lost.take() {
                    revoke_lost(&mut client, &config, old).await;
                }
                let reason = renew(&connection, &config, &status, id).await;
                tracing::warn!(lease = id, %reason, "host lease lost; registering again");
                lost = Some(id);
            }
            Err(err) => tracing::warn!(error = %err, "host registration failed; retrying"),
        }
        // Whatever happened, the old lease is no longer ours to act on.
        status.send_replace(LeaseStatus::default());
        tokio::time::sleep(config.retry_pause).await;
    }
}

/// Revokes a lease this host gave up on, once it holds a new one. Keys still attached
/// to it — the controller seat, if this host held it — go at once instead of when
/// etcd expires the lease, so the cluster elects a controller without waiting out a
/// TTL. Best effort: etcd may already have expired it.
async fn revoke_lost(client: &mut Client, config: &ClusterConfig, lease: i64) {
    match tokio::time::timeout(config.keep_alive_interval, client.lease_revoke(lease)).await {
        Ok(Ok(_)) => tracing::info!(lease, "revoked the lease this host lost"),
        Ok(Err(err)) => tracing::debug!(lease, error = %err, "old lease already gone"),
        Err(_) => tracing::debug!(lease, "revoking the old lease timed out"),
    }
}

/// Grants a lease and writes the host key under it.
async fn register(
    client: &mut Client,
    config: &ClusterConfig,
    status: &watch::Sender<LeaseStatus>,
) -> Result<i64, etcd_client::Error> {
    let sent = Instant::now();
    let granted = client.lease_grant(config.lease_ttl_seconds(), None).await?;
    let id = granted.id();
    let record = HostRecord {
        host_id: config.host_id.clone(),
        advertise: config.advertise.clone(),
        registered_at_ms: now_ms(),
        zone: config.zone.clone(),
        peer_advertise: config.peer_advertise.clone(),
    };
    client
        .put(
            keys::cluster_host(&config.cluster, &config.host_id),
            encode_json(&record),
            Some(PutOptions::new().with_lease(id)),
        )
        .await?;
    status.send_replace(LeaseStatus {
        id: Some(id),
        valid_until: valid_until(sent, granted.ttl(), config),
    });
    tracing::info!(
        cluster = %config.cluster,
        host = %config.host_id,
        lease = id,
        "host registered"
    );
    Ok(id)
}

/// The local deadline for a lease etcd reported `ttl_s` seconds for, counted from
/// when the request was sent and shortened by the safety margin.
fn valid_until(sent: Instant, ttl_s: i64, config: &ClusterConfig) -> Option<Instant> {
    let ttl = Duration::from_secs(u64::try_from(ttl_s).ok()?);
    ttl.checked_sub(config.lease_safety_margin)
        .map(|usable| sent + usable)
}

/// Renews the lease until it is lost; returns why. A broken keep-alive stream (an
/// etcd member restarting, a network blip) is reopened on the same lease for as long
/// as the lease may still be valid, so leadership rides out short interruptions; it
/// is reopened with the connection's current client (renewed etcd certificates).
async fn renew(
    connection: &EtcdConnection,
    config: &ClusterConfig,
    status: &watch::Sender<LeaseStatus>,
    id: i64,
) -> String {
    let mut last_failure = String::new();
    loop {
        if !status.borrow().is_live(Instant::now()) {
            return format!("the lease ran out before it could be renewed ({last_failure})");
        }
        match renew_on_stream(&mut connection.client(), config, status, id).await {
            Renewal::Expired => return "etcd says the lease expired".into(),
            Renewal::Broken(reason) => {
                tracing::debug!(lease = id, %reason, "keep-alive interrupted; reopening");
                last_failure = reason;
                tokio::time::sleep(config.retry_pause.min(config.keep_alive_interval)).await;
            }
        }
    }
}

/// How a keep-alive stream ended.
enum Renewal {
    /// etcd no longer knows the lease.
    Expired,
    /// The stream failed; the lease may still be valid.
    Broken(String),
}

/// Renews over one keep-alive stream until it fails or the lease is gone.
async fn renew_on_stream(
    client: &mut Client,
    config: &ClusterConfig,
    status: &watch::Sender<LeaseStatus>,
    id: i64,
) -> Renewal {
    let (mut keeper, mut responses) = match client.lease_keep_alive(id).await {
        Ok(stream) => stream,
        Err(err) => return Renewal::Broken(format!("keep-alive stream failed to open: {err}")),
    };
    let mut tick = tokio::time::interval(config.keep_alive_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !status.borrow().is_live(Instant::now()) {
            return Renewal::Broken("no renewal before the lease ran out".into());
        }
        let sent = Instant::now();
        if let Err(err) = keeper.keep_alive().await {
            return Renewal::Broken(format!("keep-alive failed: {err}"));
        }
        let answer = tokio::time::timeout(config.keep_alive_interval, responses.message()).await;
        match answer {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                status.send_replace(LeaseStatus {
                    id: Some(id),
                    valid_until: valid_until(sent, response.ttl(), config),
                });
            }
            Ok(Ok(Some(_))) => return Renewal::Expired,
            Ok(Ok(None)) => return Renewal::Broken("keep-alive stream closed".into()),
            Ok(Err(err)) => return Renewal::Broken(format!("keep-alive failed: {err}")),
            // No answer yet: the next tick tries again while the lease may be valid.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_counts_from_sending_and_keeps_a_margin() {
        let config = ClusterConfig::new("c", "h", "127.0.0.1:1");
        let sent = Instant::now();
        let until = valid_until(sent, 5, &config).expect("valid");
        assert_eq!(until - sent, Duration::from_secs(4));
        assert_eq!(valid_until(sent, 0, &config), None);
        let status = LeaseStatus {
            id: Some(1),
            valid_until: Some(until),
        };
        assert!(status.is_live(sent));
        assert!(!status.is_live(until));
        assert!(!LeaseStatus::default().is_live(sent));
    }
}

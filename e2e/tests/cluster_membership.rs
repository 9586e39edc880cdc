//! Cluster membership against real processes: hosts register in etcd under their
//! leases, exactly one controller is elected, a killed controller is replaced, and
//! a host frozen past its lease TTL drops out and registers again when it thaws.

mod common;

use std::time::Duration;

use common::{ClusterView, wait_for_view};
use ferry_e2e::{Cluster, ClusterOptions};

/// A short lease so expiry happens in seconds.
const LEASE_TTL_MS: u64 = 2_000;
/// Generous deadlines: these are correctness checks, not timing checks.
const FORM_DEADLINE: Duration = Duration::from_secs(15);
const REJOIN_DEADLINE: Duration = Duration::from_secs(10);
const EXPIRY_DEADLINE: Duration = Duration::from_millis(LEASE_TTL_MS + 10_000);

/// Checks every registration against the host processes: the key's id, the
/// address each host really listens on, and a lease behind each key.
fn assert_registrations_match(view: &ClusterView, cluster: &Cluster) {
    for (key_id, record) in &view.hosts {
        assert_eq!(
            &record.host_id, key_id,
            "host key and record disagree: {view:#?}"
        );
        let host = cluster.host(key_id);
        assert_eq!(record.advertise, host.addr().to_string(), "{view:#?}");
        assert!(record.registered_at_ms > 0, "{view:#?}");
        assert_ne!(
            record.lease, 0,
            "host key {key_id} is not on a lease: {view:#?}"
        );
    }
    if let Some(controller) = &view.controller {
        assert_ne!(
            controller.lease, 0,
            "controller key is not on a lease: {view:#?}"
        );
    }
}

#[tokio::test]
async fn hosts_register_elect_one_controller_and_leave_with_their_lease() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        hosts: 3,
        lease_ttl_ms: Some(LEASE_TTL_MS),
        ..ClusterOptions::default()
    });
    let name = cluster.name().to_owned();
    let mut etcd = etcd_client::Client::connect([cluster.etcd_endpoint()], None)
        .await
        .expect("connect to etcd");

    let formed = wait_for_view(
        &mut etcd,
        &name,
        FORM_DEADLINE,
        "all three hosts registered and one of them controller",
        |view| {
            ["h0", "h1", "h2"].iter().all(|id| view.has_host(id))
                && view.hosts.len() == 3
                && view.live_controller().is_some()
        },
    )
    .await;
    assert_registrations_match(&formed, &cluster);
    let first_controller = formed.live_controller().expect("a controller").to_owned();

    // The controller dies without a word: its lease expires, its key goes, and one
    // of the two hosts left takes over.
    cluster.host_mut(&first_controller).kill();
    let failed_over = wait_for_view(
        &mut etcd,
        &name,
        EXPIRY_DEADLINE,
        &format!("{first_controller} gone and another live host controller"),
        |view| {
            !view.has_host(&first_controller)
                && view
                    .live_controller()
                    .is_some_and(|id| id != first_controller)
        },
    )
    .await;
    assert_eq!(failed_over.hosts.len(), 2, "{failed_over:#?}");
    assert_registrations_match(&failed_over, &cluster);
    let controller = failed_over
        .live_controller()
        .expect("a controller")
        .to_owned();

    // A host frozen past its lease TTL drops out, and registers again when it thaws.
    let frozen = failed_over
        .hosts
        .keys()
        .find(|id| **id != controller)
        .expect("a host besides the controller")
        .clone();
    cluster.host_mut(&frozen).pause();
    wait_for_view(
        &mut etcd,
        &name,
        EXPIRY_DEADLINE,
        &format!("paused {frozen} gone"),
        |view| !view.has_host(&frozen),
    )
    .await;
    cluster.host_mut(&frozen).resume();
    let rejoined = wait_for_view(
        &mut etcd,
        &name,
        REJOIN_DEADLINE,
        &format!("resumed {frozen} registered again, with a live controller"),
        |view| view.has_host(&frozen) && view.live_controller().is_some(),
    )
    .await;
    assert_eq!(rejoined.hosts.len(), 2, "{rejoined:#?}");
    assert_registrations_match(&rejoined, &cluster);
}

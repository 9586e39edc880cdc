//! What runs over a host's `Broker` in the background: the replicator (roles,
//! follower fetches, in-sync proposals, replica reports), the publisher of observed
//! state, the materializer that opens a cluster's topics and queues as their records
//! appear, the metrics endpoint, and the readiness that says when a restarted host
//! has caught up. Above `broker` and `cluster` in the module graph:
//! neither imports this.

pub mod materialize;
pub mod metrics_endpoint;
pub mod observed;
pub mod readiness;
pub mod replication;

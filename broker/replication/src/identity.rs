//! Whether a host may serve on the metadata store it found: the cluster identity its
//! data directory remembers against the one the store holds.
//!
//! A store that lost the cluster (wiped, or replaced by an empty one) must never be
//! served on as if the cluster's topics and queues did not exist: the controller
//! would place them afresh and replicas would follow a new leader's shorter log.

/// What a host does with the identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityCheck {
    /// The store holds this host's cluster: serve.
    Serve(u64),
    /// A new data directory joins the cluster the store holds: remember it, serve.
    Join(u64),
    /// Neither knows a cluster: a new one is created.
    Create,
    /// The store does not hold the cluster this host's data belongs to: serve nothing
    /// until the cluster's records are rebuilt from the hosts.
    Refuse {
        /// The identity the data remembers.
        local: u64,
        /// The one the store holds, if any.
        stored: Option<u64>,
    },
}

/// The check for a host whose data remembers `local` on a store holding `stored`.
pub fn check(local: Option<u64>, stored: Option<u64>) -> IdentityCheck {
    match (local, stored) {
        (Some(local), Some(stored)) if local == stored => IdentityCheck::Serve(local),
        (Some(local), stored) => IdentityCheck::Refuse { local, stored },
        (None, Some(stored)) => IdentityCheck::Join(stored),
        (None, None) => IdentityCheck::Create,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_serves_only_on_the_store_of_its_own_cluster() {
        assert_eq!(check(Some(7), Some(7)), IdentityCheck::Serve(7));
        assert_eq!(check(None, Some(7)), IdentityCheck::Join(7));
        assert_eq!(check(None, None), IdentityCheck::Create);
        assert_eq!(
            check(Some(7), None),
            IdentityCheck::Refuse {
                local: 7,
                stored: None
            },
            "a wiped store"
        );
        assert_eq!(
            check(Some(7), Some(8)),
            IdentityCheck::Refuse {
                local: 7,
                stored: Some(8)
            },
            "another cluster's store"
        );
    }
}

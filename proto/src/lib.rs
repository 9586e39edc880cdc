//! The `ferry.v1` gRPC API: prost messages and tonic clients and servers.
//!
//! Generated from the `.proto` files under `proto/ferry/v1` (and the host-to-host
//! protocol under `proto/ferry/internal/v1`). Only the service edge of the broker and
//! the client library use these types; everything inside the broker works on domain
//! types.

/// Version 1 of the Ferry API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

/// What the hosts of one cluster say to each other (replication), apart from the
/// public API: served only on the peer listener.
pub mod internal {
    /// Version 1 of the host-to-host protocol.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("ferry.internal.v1");
    }
}

pub mod status;

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");

/// The encoded `FileDescriptorSet` of `google.rpc`'s error details, which statuses
/// carry (`status`): served by reflection too, so tools such as grpcurl print them.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] = tonic_types::pb::FILE_DESCRIPTOR_SET;

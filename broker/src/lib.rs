//! The Ferry broker: topics and consumer groups over a durable storage engine, a
//! metadata store, and the gRPC service edge.
//!
//! Layering (see ARCHITECTURE.md): `service` (protobuf, tonic) → `broker` (domain)
//! → `topic`, `group`, `offsets`, `meta` → `ferry-storage`. Only `service` sees
//! protobuf types.

pub mod access;
pub mod allocator;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod commit;
pub mod config;
pub mod dev;
pub mod disk_pressure;
pub mod error;
pub mod gateway;
pub mod group;
pub mod host;
pub mod http2;
pub mod listener;
pub mod meta;
pub mod metrics;
pub mod names;
pub mod offsets;
pub mod queue;
pub mod rebuild;
pub mod replica_stream;
pub mod replicated_log;
pub mod retained;
pub mod serve;
pub mod service;
pub mod standalone;
pub mod tls;
pub mod topic;

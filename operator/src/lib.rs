//! The Ferry operator: the custom resource types (`crd`), the conditions they report
//! (`conditions`), the generator of `crds/` (`crdgen`), and the reconcilers —
//! `cluster` (BrokerCluster → StatefulSet and friends), `mapping` (Topic and Queue
//! → etcd records) and `policy` (AccessPolicy → broker access rules) — with the metadata store they write (`metadata`, `records`),
//! leader election (`leader`), metrics, the HTTP endpoints and the controller wiring.

pub mod cluster;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod http;
pub mod leader;
pub mod mapping;
pub mod metadata;
pub mod metrics;
pub mod policy;
pub mod records;

//! End-to-end tests for Ferry clusters.
//!
//! - [`history`]: record client operations from many tasks; [`history::check`] them.

pub mod history;

pub use history::{CheckOptions, History, Verdict, check};

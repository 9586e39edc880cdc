//! Ferry broker.

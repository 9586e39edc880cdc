//! Ferry client.

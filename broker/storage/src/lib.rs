//! Ferry storage engine.

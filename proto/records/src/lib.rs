//! The Ferry record batch format.
//!
//! A record batch is the unit a producer sends, the storage engine appends and a
//! fetch returns: the broker never re-encodes records. The byte layout is in
//! `docs/storage-format.md`. The CRC32C covers everything from the magic byte to
//! the end, so the broker can stamp the base offset and leader epoch without
//! recomputing it.
//!
//! This crate does no I/O and knows nothing of protobuf, so both the client and the
//! storage engine can depend on it.

mod builder;
mod header;
mod reader;
pub mod varint;

pub use builder::{BatchBuilder, LostRange, ProducerStamp, lost_range_batch};
pub use header::{ATTR_LOST_RANGE, BatchHeader, HEADER_LEN, MAGIC, NO_PRODUCER_ID, NO_SEQUENCE};
pub use reader::{Batch, Batches, Header, Record, Records, validate_batch, validate_batch_crc};

/// Why bytes could not be read as record batches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the declared batch length.
    #[error("truncated batch: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch declares or the header needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The magic byte is not a format this build reads.
    #[error("unsupported batch magic {0}")]
    BadMagic(u8),
    /// The stored CRC32C does not match the bytes.
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// One record exceeds the configured maximum record size.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A length or count field is impossible.
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
}

/// The partition a keyed record goes to: CRC32C of the key modulo the partition count.
///
/// Clients and the broker use this same function, so a key maps to one partition
/// whoever partitions it. Returns 0 when `partitions` is 0.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    if partitions == 0 {
        return 0;
    }
    crc32c::crc32c(key) % partitions
}

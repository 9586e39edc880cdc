//! A batch checked once: sizes, CRC and every record.
//!
//! Checking a batch (the CRC and a walk over every record) is the costliest part of
//! an append after the copy into the page cache. A caller that must check batches
//! before appending any of them (the broker refuses a whole request if one batch is
//! bad) keeps the result as a [`CheckedBatch`] and hands it to
//! [`crate::Log::append_checked`], which does not check it again; only
//! [`check_batch`] makes one, so nothing unchecked reaches a log this way.

use ferry_records::{BatchHeader, RecordError, validate_batch, validate_batch_crc};

use crate::StorageError;

/// A record batch that passed [`check_batch`], with its parsed header.
#[derive(Debug, Clone)]
pub struct CheckedBatch<B> {
    bytes: B,
    header: BatchHeader,
    /// The limits it was checked against; a log with smaller ones checks it again.
    max_batch_bytes: usize,
    max_record_bytes: usize,
}

impl<B: AsRef<[u8]>> CheckedBatch<B> {
    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// Whether it was checked against limits at most these.
    pub(crate) fn checked_within(&self, max_batch_bytes: usize, max_record_bytes: usize) -> bool {
        self.max_batch_bytes <= max_batch_bytes && self.max_record_bytes <= max_record_bytes
    }
}

/// Checks a batch as every append does: at most `max_batch_bytes`, a whole batch with
/// a good CRC, consistent records none over `max_record_bytes`, and a base sequence
/// when it carries a producer id.
pub fn check_batch<B: AsRef<[u8]>>(
    bytes: B,
    max_batch_bytes: usize,
    max_record_bytes: usize,
) -> Result<CheckedBatch<B>, StorageError> {
    let batch = bytes.as_ref();
    if batch.len() > max_batch_bytes {
        return Err(StorageError::BatchTooLarge {
            size: batch.len(),
            limit: max_batch_bytes,
        });
    }
    let header = validate_batch(batch, max_record_bytes)?;
    if header.has_producer() && header.base_sequence < 0 {
        return Err(RecordError::Malformed("idempotent batch without a base sequence").into());
    }
    Ok(CheckedBatch {
        bytes,
        header,
        max_batch_bytes,
        max_record_bytes,
    })
}

/// Checks a batch copied from a partition's leader: at most `max_batch_bytes`, a whole
/// batch with a good CRC. Its records were walked when the leader took it from its
/// producer ([`check_batch`]) and the copy is the leader's byte for byte under that
/// CRC, so walking every record again on every replica would only repeat the check
/// (about 3 % of the brokers' CPU on the RF=3 benchmark).
pub(crate) fn check_replica_batch(
    batch: &[u8],
    max_batch_bytes: usize,
) -> Result<BatchHeader, StorageError> {
    if batch.len() > max_batch_bytes {
        return Err(StorageError::BatchTooLarge {
            size: batch.len(),
            limit: max_batch_bytes,
        });
    }
    Ok(validate_batch_crc(batch)?)
}

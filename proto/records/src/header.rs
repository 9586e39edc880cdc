//! The fixed 64-byte batch header.

use crate::RecordError;

/// Bytes in a batch header.
pub const HEADER_LEN: usize = 64;
/// The format version this build writes and reads.
pub const MAGIC: u8 = 1;
/// `producer_id` of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// `base_sequence` of a batch without sequence numbers.
pub const NO_SEQUENCE: i32 = -1;
/// Attribute bit of a *lost-range* batch: it stands for `record_count` offsets whose
/// records were lost to damage on disk. It holds no records (its body is padding, so it
/// can take the exact place of the damaged bytes), and only the storage engine writes it.
pub const ATTR_LOST_RANGE: u8 = 0x80;

/// Bytes before `batch_length` ends: `batch_length` counts what follows them.
pub(crate) const LENGTH_PREFIX_LEN: usize = 12;
/// The CRC covers bytes from here to the end of the batch.
pub(crate) const CRC_START: usize = 24;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const CRC: usize = 20;
const MAGIC_AT: usize = 24;
const ATTRIBUTES: usize = 25;
const RECORD_COUNT: usize = 28;
const FIRST_TIMESTAMP: usize = 32;
const MAX_TIMESTAMP: usize = 40;
const PRODUCER_ID: usize = 48;
const PRODUCER_EPOCH: usize = 56;
const BASE_SEQUENCE: usize = 60;

/// The decoded header of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (stamped by the broker).
    pub base_offset: u64,
    /// Bytes after the `batch_length` field, to the end of the batch.
    pub batch_length: u32,
    /// Epoch of the leader that appended the batch (stamped by the broker).
    pub leader_epoch: u64,
    /// CRC32C of bytes 24..end.
    pub crc: u32,
    /// Format version.
    pub magic: u8,
    /// Reserved flags (compression later); 0 today.
    pub attributes: u8,
    /// Records in the batch, at least 1.
    pub record_count: u32,
    /// Timestamp of the first record, ms since the Unix epoch.
    pub first_timestamp_ms: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp_ms: i64,
    /// Idempotent producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i32,
    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    pub base_sequence: i32,
}

impl BatchHeader {
    /// Parses a header from the first [`HEADER_LEN`] bytes of `buf` (no CRC check).
    pub fn parse(buf: &[u8]) -> Result<Self, RecordError> {
        if buf.len() < HEADER_LEN {
            return Err(RecordError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let header = Self {
            base_offset: read_u64(buf, BASE_OFFSET),
            batch_length: read_u32(buf, BATCH_LENGTH),
            leader_epoch: read_u64(buf, LEADER_EPOCH),
            crc: read_u32(buf, CRC),
            magic: buf[MAGIC_AT],
            attributes: buf[ATTRIBUTES],
            record_count: read_u32(buf, RECORD_COUNT),
            first_timestamp_ms: read_u64(buf, FIRST_TIMESTAMP) as i64,
            max_timestamp_ms: read_u64(buf, MAX_TIMESTAMP) as i64,
            producer_id: read_u64(buf, PRODUCER_ID) as i64,
            producer_epoch: read_u32(buf, PRODUCER_EPOCH) as i32,
            base_sequence: read_u32(buf, BASE_SEQUENCE) as i32,
        };
        if header.magic != MAGIC {
            return Err(RecordError::BadMagic(header.magic));
        }
        if (header.batch_length as usize) < HEADER_LEN - LENGTH_PREFIX_LEN {
            return Err(RecordError::Malformed("batch length shorter than header"));
        }
        if header.record_count == 0 {
            return Err(RecordError::Malformed("batch has no records"));
        }
        Ok(header)
    }

    /// Total bytes of the batch, header included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LENGTH_PREFIX_LEN
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }

    /// Offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Whether the batch stands for lost records ([`ATTR_LOST_RANGE`]) instead of holding any.
    pub fn is_lost_range(&self) -> bool {
        self.attributes & ATTR_LOST_RANGE != 0
    }

    /// Whether the batch carries an idempotent producer id.
    pub fn has_producer(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    pub(crate) fn write(&self, buf: &mut [u8]) {
        write_u64(buf, BASE_OFFSET, self.base_offset);
        write_u32(buf, BATCH_LENGTH, self.batch_length);
        write_u64(buf, LEADER_EPOCH, self.leader_epoch);
        write_u32(buf, CRC, self.crc);
        buf[MAGIC_AT] = self.magic;
        buf[ATTRIBUTES] = self.attributes;
        buf[ATTRIBUTES + 1] = 0;
        buf[ATTRIBUTES + 2] = 0;
        write_u32(buf, RECORD_COUNT, self.record_count);
        write_u64(buf, FIRST_TIMESTAMP, self.first_timestamp_ms as u64);
        write_u64(buf, MAX_TIMESTAMP, self.max_timestamp_ms as u64);
        write_u64(buf, PRODUCER_ID, self.producer_id as u64);
        write_u32(buf, PRODUCER_EPOCH, self.producer_epoch as u32);
        write_u32(buf, BASE_SEQUENCE, self.base_sequence as u32);
    }

    /// Stamps the base offset into an encoded batch; the CRC stays valid.
    pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
        write_u64(batch, BASE_OFFSET, base_offset);
    }

    /// Stamps the leader epoch into an encoded batch; the CRC stays valid.
    pub fn set_leader_epoch(batch: &mut [u8], leader_epoch: u64) {
        write_u64(batch, LEADER_EPOCH, leader_epoch);
    }
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn write_u64(buf: &mut [u8], at: usize, value: u64) {
    buf[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

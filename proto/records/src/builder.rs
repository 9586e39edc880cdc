//! Encoding records into a batch.

use crate::header::{BatchHeader, CRC_START, HEADER_LEN, LENGTH_PREFIX_LEN, MAGIC};
use crate::{NO_PRODUCER_ID, NO_SEQUENCE, varint};

/// The idempotent-producer fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id from `InitProducer`.
    pub producer_id: i64,
    /// Producer epoch from `InitProducer`.
    pub producer_epoch: i32,
    /// Sequence of the batch's first record in this partition.
    pub base_sequence: i32,
}

/// Accumulates records and encodes them as one batch.
///
/// Timestamps are kept as deltas from the first record's, so records must not be
/// more than `i64` apart (they never are in practice).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    record_count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: Option<ProducerStamp>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch without producer fields.
    pub fn new() -> Self {
        Self::with_capacity(4096)
    }

    /// An empty batch with room for `bytes` of records before reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            record_count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            producer: None,
        }
    }

    /// Sets the idempotent-producer fields written by [`BatchBuilder::finish`].
    pub fn set_producer(&mut self, producer: Option<ProducerStamp>) {
        self.producer = producer;
    }

    /// Records added so far.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Encoded size so far, header included.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the record would add to the batch.
    pub fn record_len(
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
        timestamp_delta_ms: i64,
        offset_delta: u32,
    ) -> usize {
        let body = Self::body_len(key, value, headers, timestamp_delta_ms, offset_delta);
        varint::len_u64(body as u64) + body
    }

    /// Bytes of one record's body after its length prefix.
    fn body_len(
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
        timestamp_delta_ms: i64,
        offset_delta: u32,
    ) -> usize {
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let mut len = 1
            + varint::len_i64(timestamp_delta_ms)
            + varint::len_u64(u64::from(offset_delta))
            + varint::len_i64(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint::len_u64(value.len() as u64)
            + value.len()
            + varint::len_u64(headers.len() as u64);
        for (name, value) in headers {
            len += varint::len_u64(name.len() as u64)
                + name.len()
                + varint::len_u64(value.len() as u64)
                + value.len();
        }
        len
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
        timestamp_ms: i64,
    ) {
        if self.record_count == 0 {
            self.first_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms.wrapping_sub(self.first_timestamp_ms);
        let offset_delta = self.record_count;
        let body = Self::body_len(key, value, headers, timestamp_delta, offset_delta);
        let buf = &mut self.buf;
        buf.reserve(body + 5);
        varint::put_u64(buf, body as u64);
        buf.push(0); // record attributes, reserved
        varint::put_i64(buf, timestamp_delta);
        varint::put_u64(buf, u64::from(offset_delta));
        match key {
            Some(key) => {
                varint::put_i64(buf, key.len() as i64);
                buf.extend_from_slice(key);
            }
            None => varint::put_i64(buf, -1),
        }
        varint::put_u64(buf, value.len() as u64);
        buf.extend_from_slice(value);
        varint::put_u64(buf, headers.len() as u64);
        for (name, value) in headers {
            varint::put_u64(buf, name.len() as u64);
            buf.extend_from_slice(name.as_bytes());
            varint::put_u64(buf, value.len() as u64);
            buf.extend_from_slice(value);
        }
        self.record_count += 1;
    }

    /// Writes the header and CRC and returns the encoded batch (base offset 0).
    ///
    /// Returns `None` for an empty builder: a batch has at least one record.
    pub fn finish(mut self) -> Option<Vec<u8>> {
        if self.record_count == 0 {
            return None;
        }
        let producer = self.producer.unwrap_or(ProducerStamp {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: NO_SEQUENCE,
        });
        let mut header = BatchHeader {
            base_offset: 0,
            batch_length: (self.buf.len() - LENGTH_PREFIX_LEN) as u32,
            leader_epoch: 0,
            crc: 0,
            magic: MAGIC,
            attributes: 0,
            record_count: self.record_count,
            first_timestamp_ms: self.first_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            base_sequence: producer.base_sequence,
        };
        header.write(&mut self.buf);
        header.crc = crc32c::crc32c(&self.buf[CRC_START..]);
        header.write(&mut self.buf);
        Some(self.buf)
    }
}

/// What a lost-range batch stands for: see [`lost_range_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostRange {
    /// First lost offset.
    pub base_offset: u64,
    /// Lost offsets, at least 1.
    pub count: u32,
    /// Leader epoch to stamp (the epoch of the batch before the damage keeps the
    /// epoch history unchanged).
    pub leader_epoch: u64,
    /// Timestamp to give it (the previous batch's keeps time indexes monotonic).
    pub timestamp_ms: i64,
}

/// Encodes a lost-range batch ([`crate::ATTR_LOST_RANGE`]) of exactly `total_len`
/// bytes (at least [`HEADER_LEN`]): a header and zero padding, with a valid CRC, so
/// the storage engine can put it in the place of damaged bytes without moving any
/// other batch. `None` if `count` is 0 or `total_len` is out of range.
pub fn lost_range_batch(range: LostRange, total_len: usize) -> Option<Vec<u8>> {
    if range.count == 0 || total_len < HEADER_LEN {
        return None;
    }
    let batch_length = u32::try_from(total_len - LENGTH_PREFIX_LEN).ok()?;
    let mut buf = vec![0u8; total_len];
    let mut header = BatchHeader {
        base_offset: range.base_offset,
        batch_length,
        leader_epoch: range.leader_epoch,
        crc: 0,
        magic: MAGIC,
        attributes: crate::ATTR_LOST_RANGE,
        record_count: range.count,
        first_timestamp_ms: range.timestamp_ms,
        max_timestamp_ms: range.timestamp_ms,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: -1,
        base_sequence: NO_SEQUENCE,
    };
    header.write(&mut buf);
    header.crc = crc32c::crc32c(&buf[CRC_START..]);
    header.write(&mut buf);
    Some(buf)
}

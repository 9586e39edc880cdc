//! Reading and validating batches.

use crate::header::{BatchHeader, CRC_START, HEADER_LEN};
use crate::{RecordError, varint};

/// One record header (a key/value annotation on a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header name (UTF-8 checked when the batch is validated).
    pub key: &'a str,
    /// Header value.
    pub value: &'a [u8],
}

/// One decoded record, borrowing from the batch bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute offset (base offset + delta).
    pub offset: u64,
    /// Creation time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Partitioning key, if any.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub value: &'a [u8],
    /// Annotations.
    pub headers: Vec<Header<'a>>,
}

/// One batch within a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Decoded header.
    pub header: BatchHeader,
    /// The whole encoded batch, header included.
    pub bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Iterates over the records of the batch (none for a lost-range batch).
    pub fn records(&self) -> Records<'a> {
        let lost = self.header.is_lost_range();
        Records {
            rest: if lost { &[] } else { &self.bytes[HEADER_LEN..] },
            header: self.header,
            remaining: if lost { 0 } else { self.header.record_count },
        }
    }

    /// Checks the CRC of the batch.
    pub fn verify_crc(&self) -> Result<(), RecordError> {
        let computed = crc32c::crc32c(&self.bytes[CRC_START..]);
        if computed != self.header.crc {
            return Err(RecordError::CrcMismatch {
                stored: self.header.crc,
                computed,
            });
        }
        Ok(())
    }
}

/// Splits concatenated batches. Yields an error (then stops) at a truncated or
/// malformed batch; it does not check CRCs (see [`Batch::verify_crc`]).
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Iterates over the batches in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            failed: false,
        }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Batch<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let parsed = BatchHeader::parse(self.rest).and_then(|header| {
            let total = header.total_len();
            if self.rest.len() < total {
                return Err(RecordError::Truncated {
                    needed: total,
                    available: self.rest.len(),
                });
            }
            Ok((header, total))
        });
        match parsed {
            Ok((header, total)) => {
                let (bytes, rest) = self.rest.split_at(total);
                self.rest = rest;
                Some(Ok(Batch { header, bytes }))
            }
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}

/// Iterates over the records of one batch.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    header: BatchHeader,
    remaining: u32,
}

impl<'a> Records<'a> {
    fn decode_one(&mut self) -> Result<Record<'a>, RecordError> {
        let body_len = usize_from(varint::get_u64(&mut self.rest)?)?;
        if body_len > self.rest.len() {
            return Err(RecordError::Malformed("record longer than its batch"));
        }
        let (mut body, rest) = self.rest.split_at(body_len);
        self.rest = rest;
        let (_attributes, after) = body
            .split_first()
            .ok_or(RecordError::Malformed("empty record"))?;
        body = after;
        let timestamp_delta = varint::get_i64(&mut body)?;
        let offset_delta = varint::get_u64(&mut body)?;
        let key_len = varint::get_i64(&mut body)?;
        let key = if key_len < 0 {
            None
        } else {
            Some(take(&mut body, usize_from(key_len as u64)?)?)
        };
        let value_len = usize_from(varint::get_u64(&mut body)?)?;
        let value = take(&mut body, value_len)?;
        let header_count = varint::get_u64(&mut body)?;
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let name_len = usize_from(varint::get_u64(&mut body)?)?;
            let name = std::str::from_utf8(take(&mut body, name_len)?)
                .map_err(|_| RecordError::Malformed("header name is not UTF-8"))?;
            let value_len = usize_from(varint::get_u64(&mut body)?)?;
            let value = take(&mut body, value_len)?;
            headers.push(Header { key: name, value });
        }
        if !body.is_empty() {
            return Err(RecordError::Malformed("trailing bytes in record"));
        }
        Ok(Record {
            offset: self.header.base_offset.wrapping_add(offset_delta),
            timestamp_ms: self.header.first_timestamp_ms.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let record = self.decode_one();
        self.remaining = if record.is_ok() {
            self.remaining - 1
        } else {
            0
        };
        Some(record)
    }
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8], RecordError> {
    if len > buf.len() {
        return Err(RecordError::Malformed("field longer than its record"));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn usize_from(value: u64) -> Result<usize, RecordError> {
    usize::try_from(value).map_err(|_| RecordError::Malformed("length does not fit in memory"))
}

/// Checks that `bytes` are exactly one batch, with a valid header and CRC (and equal
/// timestamps if it is a lost range), without walking its records: enough for a copy
/// of a batch that [`validate_batch`] passed before, which the CRC covers. Returns the
/// header.
pub fn validate_batch_crc(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
    let header = BatchHeader::parse(bytes)?;
    if header.total_len() != bytes.len() {
        return Err(if header.total_len() > bytes.len() {
            RecordError::Truncated {
                needed: header.total_len(),
                available: bytes.len(),
            }
        } else {
            RecordError::Malformed("bytes after the batch")
        });
    }
    Batch { header, bytes }.verify_crc()?;
    if header.is_lost_range() && header.first_timestamp_ms != header.max_timestamp_ms {
        return Err(RecordError::Malformed("lost-range batch with a time span"));
    }
    Ok(header)
}

/// Fully checks one encoded batch as it arrives from a producer: exactly one batch,
/// valid header and CRC, every record well formed with consecutive offset deltas,
/// and no record larger than `max_record_bytes`. Returns the header.
///
/// A lost-range batch ([`crate::ATTR_LOST_RANGE`]) passes with a valid CRC and equal
/// timestamps (its body is padding); whoever accepts batches from producers must
/// refuse it, since only the storage engine may say that records were lost.
pub fn validate_batch(bytes: &[u8], max_record_bytes: usize) -> Result<BatchHeader, RecordError> {
    let header = validate_batch_crc(bytes)?;
    if header.is_lost_range() {
        return Ok(header);
    }
    let batch = Batch { header, bytes };
    let mut records = batch.records();
    let mut expected_delta = 0u64;
    let mut max_timestamp = i64::MIN;
    loop {
        let before = records.rest.len();
        let Some(record) = records.next() else { break };
        let record = record?;
        let size = before - records.rest.len();
        if size > max_record_bytes {
            return Err(RecordError::RecordTooLarge {
                size,
                limit: max_record_bytes,
            });
        }
        if record.offset.wrapping_sub(header.base_offset) != expected_delta {
            return Err(RecordError::Malformed("offset deltas are not consecutive"));
        }
        max_timestamp = max_timestamp.max(record.timestamp_ms);
        expected_delta += 1;
    }
    if !records.rest.is_empty() {
        return Err(RecordError::Malformed("bytes after the last record"));
    }
    if max_timestamp != header.max_timestamp_ms {
        return Err(RecordError::Malformed(
            "max timestamp does not match the records",
        ));
    }
    Ok(header)
}

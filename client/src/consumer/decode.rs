//! Turning fetched bytes into consumed records: split batches, check CRCs, skip
//! records below the position, and share the fetched buffer instead of copying.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use ferry_records::{Batches, RecordError};

use crate::error::ClientError;
use crate::types::ConsumedRecord;

/// Appends the records of `data` at or after `position` to `out`; returns the offset
/// to fetch next (after the last batch), or `None` when `data` held no batch.
///
/// A truncated batch after at least one whole batch ends the data without error: a
/// response cut at a byte limit is not corruption.
pub(crate) fn decode_records(
    topic: &Arc<str>,
    partition: u32,
    data: &Bytes,
    position: u64,
    out: &mut VecDeque<ConsumedRecord>,
) -> Result<Option<u64>, ClientError> {
    let corrupt = |source: RecordError| ClientError::CorruptBatch {
        topic: topic.to_string(),
        partition,
        source,
    };
    let mut next_offset = None;
    for batch in Batches::new(data) {
        let batch = match batch {
            Ok(batch) => batch,
            Err(RecordError::Truncated { .. }) if next_offset.is_some() => break,
            Err(err) => return Err(corrupt(err)),
        };
        batch.verify_crc().map_err(corrupt)?;
        if batch.header.next_offset() <= position {
            next_offset = Some(position);
            continue;
        }
        if batch.header.is_lost_range() {
            // The broker found these offsets damaged on disk and kept everything else;
            // consuming goes on after them, but say so: they were acknowledged once.
            tracing::warn!(
                topic = %topic,
                partition,
                from_offset = batch.header.base_offset.max(position),
                to_offset = batch.header.next_offset(),
                "records lost to damage on the broker's disk; skipping them"
            );
        }
        for record in batch.records() {
            let record = record.map_err(corrupt)?;
            if record.offset < position {
                continue;
            }
            out.push_back(ConsumedRecord {
                topic: Arc::clone(topic),
                partition,
                offset: record.offset,
                key: record.key.map(|key| data.slice_ref(key)),
                value: data.slice_ref(record.value),
                headers: record
                    .headers
                    .iter()
                    .map(|h| (h.key.to_owned(), data.slice_ref(h.value)))
                    .collect(),
                timestamp_ms: record.timestamp_ms,
            });
        }
        next_offset = Some(batch.header.next_offset().max(position));
    }
    Ok(next_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_records::{BatchBuilder, BatchHeader};

    fn batch(base_offset: u64, values: &[&[u8]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for (i, value) in values.iter().enumerate() {
            builder.push(Some(b"k"), value, &[("h", b"v")], 1_000 + i as i64);
        }
        let mut bytes = builder.finish().unwrap_or_default();
        BatchHeader::set_base_offset(&mut bytes, base_offset);
        bytes
    }

    #[test]
    fn skips_records_before_the_position_and_reports_the_next_offset() {
        let mut data = batch(10, &[b"a", b"b", b"c"]);
        data.extend(batch(13, &[b"d"]));
        let data = Bytes::from(data);
        let topic: Arc<str> = "t".into();
        let mut out = VecDeque::new();
        let next = decode_records(&topic, 4, &data, 11, &mut out)
            .ok()
            .flatten();
        assert_eq!(next, Some(14));
        let offsets: Vec<u64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![11, 12, 13]);
        let first = &out[0];
        assert_eq!(first.value.as_ref(), b"b");
        assert_eq!(first.key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(
            first.headers,
            vec![("h".to_owned(), Bytes::from_static(b"v"))]
        );
        assert_eq!(first.timestamp_ms, 1_001);
        assert_eq!(first.partition, 4);
    }

    #[test]
    fn a_lost_range_is_stepped_over() {
        let mut data = batch(0, &[b"a", b"b"]);
        let range = ferry_records::LostRange {
            base_offset: 2,
            count: 5,
            leader_epoch: 0,
            timestamp_ms: 1_000,
        };
        data.extend(ferry_records::lost_range_batch(range, 100).unwrap_or_default());
        data.extend(batch(7, &[b"c"]));
        let mut out = VecDeque::new();
        let next = decode_records(&"t".into(), 0, &Bytes::from(data), 0, &mut out);
        assert_eq!(next.ok().flatten(), Some(8));
        let offsets: Vec<u64> = out.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 1, 7]);
    }

    #[test]
    fn a_flipped_byte_is_reported_as_corruption() {
        let mut data = batch(0, &[b"hello"]);
        let last = data.len() - 3;
        data[last] ^= 0xff;
        let mut out = VecDeque::new();
        let result = decode_records(&"t".into(), 0, &Bytes::from(data), 0, &mut out);
        assert!(matches!(result, Err(ClientError::CorruptBatch { .. })));
    }

    #[test]
    fn a_truncated_tail_after_whole_batches_is_ignored() {
        let mut data = batch(0, &[b"a"]);
        let second = batch(1, &[b"b"]);
        data.extend_from_slice(&second[..second.len() / 2]);
        let mut out = VecDeque::new();
        let next = decode_records(&"t".into(), 0, &Bytes::from(data), 0, &mut out);
        assert_eq!(next.ok().flatten(), Some(1));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn empty_data_has_no_next_offset() {
        let mut out = VecDeque::new();
        let next = decode_records(&"t".into(), 0, &Bytes::new(), 5, &mut out);
        assert_eq!(next.ok().flatten(), None);
    }
}

//! Round trips and corruption checks for the batch format.

use ferry_records::{
    BatchBuilder, BatchHeader, Batches, HEADER_LEN, ProducerStamp, RecordError, validate_batch,
};
use proptest::prelude::*;

type OwnedRecord = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>, i64);

fn build(records: &[OwnedRecord], producer: Option<ProducerStamp>) -> Option<Vec<u8>> {
    let mut builder = BatchBuilder::new();
    builder.set_producer(producer);
    for (key, value, headers, timestamp) in records {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        builder.push(key.as_deref(), value, &headers, *timestamp);
    }
    builder.finish()
}

fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(
            ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
        0i64..4_000_000_000_000,
    )
}

proptest! {
    #[test]
    fn records_round_trip(
        records in proptest::collection::vec(record_strategy(), 1..50),
        base in 0u64..u64::MAX / 2,
        epoch: u64,
    ) {
        let producer = Some(ProducerStamp { producer_id: 7, producer_epoch: 1, base_sequence: 42 });
        let mut bytes = build(&records, producer).expect("non-empty batch");
        BatchHeader::set_base_offset(&mut bytes, base);
        BatchHeader::set_leader_epoch(&mut bytes, epoch);
        let header = validate_batch(&bytes, usize::MAX)?;
        prop_assert_eq!(header.base_offset, base);
        prop_assert_eq!(header.leader_epoch, epoch);
        prop_assert_eq!(header.record_count as usize, records.len());
        prop_assert_eq!(header.base_sequence, 42);
        let batch = Batches::new(&bytes).next().expect("one batch")?;
        let mut decoded_count = 0;
        for (i, (decoded, original)) in batch.records().zip(&records).enumerate() {
            let decoded = decoded?;
            prop_assert_eq!(decoded.offset, base + i as u64);
            prop_assert_eq!(decoded.key, original.0.as_deref());
            prop_assert_eq!(decoded.value, original.1.as_slice());
            prop_assert_eq!(decoded.timestamp_ms, original.3);
            let headers: Vec<(&str, &[u8])> = decoded.headers.iter().map(|h| (h.key, h.value)).collect();
            let expected: Vec<(&str, &[u8])> = original.2.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            prop_assert_eq!(headers, expected);
            decoded_count += 1;
        }
        prop_assert_eq!(decoded_count, records.len());
    }

    #[test]
    fn a_flipped_bit_under_the_crc_is_caught(
        value in proptest::collection::vec(any::<u8>(), 1..100),
        at in 0usize..400,
        bit in 0u8..8,
    ) {
        let mut bytes = build(&[(None, value, vec![], 1)], None).expect("batch");
        // Bytes 0..8 (base offset) and 12..20 (leader epoch) are stamped by the broker
        // outside the CRC; 8..12 (length) and 20..24 (the CRC itself) are checked.
        let at = at % bytes.len();
        prop_assume!(!(0..8).contains(&at) && !(12..20).contains(&at));
        bytes[at] ^= 1 << bit;
        prop_assert!(validate_batch(&bytes, usize::MAX).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = validate_batch(&bytes, 1024);
        for batch in Batches::new(&bytes) {
            let Ok(batch) = batch else { break };
            for record in batch.records() {
                if record.is_err() {
                    break;
                }
            }
        }
    }
}

#[test]
fn truncated_batch_is_reported() {
    let bytes = build(&[(None, b"hello".to_vec(), vec![], 1)], None).expect("batch");
    let half = &bytes[..bytes.len() / 2];
    assert!(matches!(
        validate_batch(half, usize::MAX),
        Err(RecordError::Truncated { .. })
    ));
    assert!(matches!(
        Batches::new(&bytes[..HEADER_LEN - 1]).next(),
        Some(Err(RecordError::Truncated { .. }))
    ));
}

#[test]
fn oversized_record_is_rejected_with_its_size() {
    let bytes = build(&[(None, vec![0; 2000], vec![], 1)], None).expect("batch");
    assert!(matches!(
        validate_batch(&bytes, 1000),
        Err(RecordError::RecordTooLarge { limit: 1000, .. })
    ));
}

#[test]
fn empty_builder_yields_no_batch() {
    assert!(BatchBuilder::new().finish().is_none());
}

#[test]
fn concatenated_batches_split_cleanly() {
    let mut all = Vec::new();
    for i in 0..3u8 {
        let mut batch = build(&[(None, vec![i; 10], vec![], 5)], None).expect("batch");
        BatchHeader::set_base_offset(&mut batch, u64::from(i));
        all.extend_from_slice(&batch);
    }
    let offsets: Vec<u64> = Batches::new(&all)
        .map(|b| b.expect("valid").header.base_offset)
        .collect();
    assert_eq!(offsets, vec![0, 1, 2]);
}

#[test]
fn a_lost_range_batch_fills_its_place_exactly_and_holds_no_records() {
    let range = ferry_records::LostRange {
        base_offset: 40,
        count: 7,
        leader_epoch: 3,
        timestamp_ms: 1_000,
    };
    let bytes = ferry_records::lost_range_batch(range, 300).expect("valid size");
    assert_eq!(bytes.len(), 300);
    // docs/storage-format.md: attributes 0x80 at byte 25, the lost offsets' count at 28,
    // no producer, zero padding after the 64-byte header.
    assert_eq!(bytes[25], 0x80);
    assert_eq!(bytes[28..32], 7u32.to_le_bytes());
    assert_eq!(bytes[48..56], (-1i64).to_le_bytes());
    assert!(bytes[64..].iter().all(|b| *b == 0));
    let header = ferry_records::validate_batch(&bytes, 16).expect("a lost range validates");
    assert!(header.is_lost_range());
    assert_eq!((header.base_offset, header.next_offset()), (40, 47));
    assert_eq!(header.leader_epoch, 3);
    let batch = ferry_records::Batches::new(&bytes)
        .next()
        .expect("one batch")
        .expect("parses");
    assert_eq!(batch.records().count(), 0);
    // The padding is covered by the CRC like any batch body.
    let mut flipped = bytes.clone();
    flipped[200] ^= 1;
    assert!(ferry_records::validate_batch(&flipped, 16).is_err());
    assert!(ferry_records::lost_range_batch(range, 63).is_none());
    let empty = ferry_records::LostRange { count: 0, ..range };
    assert!(ferry_records::lost_range_batch(empty, 64).is_none());
}

//! Idempotent-producer state: per producer id, its epoch and its last few batches,
//! so a retried batch is recognised and answered with its original offsets.
//!
//! The table is rebuilt on open from a snapshot written by a clean close, or else by
//! reading every batch header of the log (one sequential header walk of all
//! segments: cheap per batch, but proportional to the log's batch count).

use std::collections::{BTreeMap, HashMap, VecDeque};

use ferry_records::BatchHeader;

use crate::StorageError;

/// Batches remembered per producer; a retry older than this is out of sequence.
pub(crate) const CACHED_BATCHES: usize = 5;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedBatch {
    /// Sequence of the first record.
    pub(crate) base_sequence: i32,
    /// Records in the batch.
    pub(crate) record_count: u32,
    /// Offset of the first record.
    pub(crate) base_offset: u64,
    /// Offset of the last record.
    pub(crate) last_offset: u64,
    /// Largest record timestamp.
    pub(crate) max_timestamp_ms: i64,
}

impl CachedBatch {
    fn from_header(h: &BatchHeader) -> Self {
        Self {
            base_sequence: h.base_sequence,
            record_count: h.record_count,
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp_ms: h.max_timestamp_ms,
        }
    }

    /// The sequence the next batch must start with; sequences wrap from `i32::MAX` to 0.
    fn next_sequence(&self) -> i32 {
        let next = (i64::from(self.base_sequence) + i64::from(self.record_count))
            % (i64::from(i32::MAX) + 1);
        next as i32
    }
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i32,
    batches: VecDeque<CachedBatch>,
    /// Position in the LRU order.
    tick: u64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Append it.
    Accept,
    /// It was appended before: answer with these offsets and do not write.
    Duplicate(CachedBatch),
}

/// The bounded table of idempotent producers of one log.
#[derive(Debug, Clone)]
pub(crate) struct ProducerTable {
    entries: HashMap<i64, ProducerEntry>,
    /// Producer ids by last use, oldest first.
    lru: BTreeMap<u64, i64>,
    next_tick: u64,
    max_producers: usize,
}

impl ProducerTable {
    /// An empty table that remembers at most `max_producers` producers.
    pub(crate) fn new(max_producers: usize) -> Self {
        Self {
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            max_producers,
        }
    }

    /// Decides whether a batch is new, a duplicate or refused. Does not change the table.
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<Verdict, StorageError> {
        if !h.has_producer() {
            return Ok(Verdict::Accept);
        }
        let Some(entry) = self.entries.get(&h.producer_id) else {
            return Ok(Verdict::Accept);
        };
        if h.producer_epoch < entry.epoch {
            return Err(StorageError::ProducerFenced {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current_epoch: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            return Ok(Verdict::Accept);
        }
        if let Some(cached) = entry
            .batches
            .iter()
            .find(|b| b.base_sequence == h.base_sequence)
        {
            return Ok(Verdict::Duplicate(*cached));
        }
        let Some(last) = entry.batches.back() else {
            return Ok(Verdict::Accept);
        };
        let expected = last.next_sequence();
        if h.base_sequence != expected {
            return Err(StorageError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                received: h.base_sequence,
            });
        }
        Ok(Verdict::Accept)
    }

    /// Remembers an appended batch (its header carries the stamped base offset).
    pub(crate) fn record(&mut self, h: &BatchHeader) {
        if !h.has_producer() {
            return;
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        let entry = self
            .entries
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::with_capacity(CACHED_BATCHES),
                tick,
            });
        if h.producer_epoch > entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(CachedBatch::from_header(h));
        let old_tick = std::mem::replace(&mut entry.tick, tick);
        self.lru.remove(&old_tick);
        self.lru.insert(tick, h.producer_id);
        while self.entries.len() > self.max_producers {
            let Some((_, evicted)) = self.lru.pop_first() else {
                break;
            };
            self.entries.remove(&evicted);
        }
    }

    /// Forgets every producer that had a batch at or above `end_offset` (the log was
    /// truncated there) and returns their ids, for [`ProducerTable::restore`] to reload
    /// from the batches that are left.
    pub(crate) fn truncate(&mut self, end_offset: u64) -> Vec<i64> {
        let affected: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.batches.iter().any(|b| b.last_offset >= end_offset))
            .map(|(id, _)| *id)
            .collect();
        for id in &affected {
            if let Some(entry) = self.entries.remove(id) {
                self.lru.remove(&entry.tick);
            }
        }
        affected
    }

    /// Reloads producers from their batch headers, oldest first (as a full rebuild would).
    pub(crate) fn restore(&mut self, headers: &[BatchHeader]) {
        for header in headers {
            self.record(header);
        }
    }

    /// The largest producer id the table holds, if any.
    pub(crate) fn max_producer_id(&self) -> Option<i64> {
        self.entries.keys().copied().max()
    }

    /// Number of producers remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Encodes the table (oldest producer first, so a reload keeps the LRU order).
    pub(crate) fn encode(&self, end_offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&end_offset.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for producer_id in self.lru.values() {
            let Some(entry) = self.entries.get(producer_id) else {
                continue;
            };
            out.extend_from_slice(&producer_id.to_le_bytes());
            out.extend_from_slice(&entry.epoch.to_le_bytes());
            out.push(entry.batches.len() as u8);
            for b in &entry.batches {
                out.extend_from_slice(&b.base_sequence.to_le_bytes());
                out.extend_from_slice(&b.record_count.to_le_bytes());
                out.extend_from_slice(&b.base_offset.to_le_bytes());
                out.extend_from_slice(&b.last_offset.to_le_bytes());
                out.extend_from_slice(&b.max_timestamp_ms.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a snapshot into `(end_offset, table)`; `Err` says why it is unusable.
    pub(crate) fn decode(bytes: &[u8], max_producers: usize) -> Result<(u64, Self), String> {
        let (body, crc) = bytes
            .split_at_checked(bytes.len().wrapping_sub(4))
            .ok_or("too short")?;
        let mut r = Reader(body);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        if r.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
            return Err("bad magic".into());
        }
        let end_offset = r.u64()?;
        let count = r.u32()?;
        let mut table = Self::new(max_producers);
        for _ in 0..count {
            let producer_id = r.u64()? as i64;
            let epoch = r.u32()? as i32;
            let batches = r.take(1)?[0];
            if usize::from(batches) > CACHED_BATCHES {
                return Err("too many cached batches".into());
            }
            for _ in 0..batches {
                let base_sequence = r.u32()? as i32;
                let record_count = r.u32()?;
                let base_offset = r.u64()?;
                let _last_offset = r.u64()?;
                let max_timestamp_ms = r.u64()? as i64;
                if record_count == 0 || base_offset.checked_add(u64::from(record_count)).is_none() {
                    return Err("impossible cached batch".into());
                }
                table.record(&BatchHeader {
                    base_offset,
                    batch_length: 0,
                    leader_epoch: 0,
                    crc: 0,
                    magic: ferry_records::MAGIC,
                    attributes: 0,
                    record_count,
                    first_timestamp_ms: max_timestamp_ms,
                    max_timestamp_ms,
                    producer_id,
                    producer_epoch: epoch,
                    base_sequence,
                });
            }
        }
        if !r.0.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok((end_offset, table))
    }
}

/// First bytes of a producer snapshot file: name and format version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"FRYPSN01";

/// A bounds-checked little-endian reader over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, tail) = self.0.split_at_checked(n).ok_or("truncated snapshot")?;
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i32, seq: i32, count: u32, base: u64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 52,
            leader_epoch: 0,
            crc: 0,
            magic: ferry_records::MAGIC,
            attributes: 0,
            record_count: count,
            first_timestamp_ms: 1,
            max_timestamp_ms: 1,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    #[test]
    fn sequence_rules() {
        let mut t = ProducerTable::new(10);
        assert_eq!(
            t.check(&header(1, 0, 7, 2, 0)).expect("unknown"),
            Verdict::Accept
        );
        t.record(&header(1, 0, 7, 2, 0));
        assert!(
            matches!(t.check(&header(1, 0, 7, 2, 9)), Ok(Verdict::Duplicate(b)) if b.base_offset == 0)
        );
        assert_eq!(
            t.check(&header(1, 0, 9, 1, 0)).expect("next"),
            Verdict::Accept
        );
        assert!(matches!(
            t.check(&header(1, 0, 10, 1, 0)),
            Err(StorageError::OutOfOrderSequence {
                expected: 9,
                received: 10,
                ..
            })
        ));
        assert!(matches!(
            t.check(&header(1, -1, 9, 1, 0)),
            Err(StorageError::ProducerFenced {
                current_epoch: 0,
                ..
            })
        ));
        assert_eq!(
            t.check(&header(1, 1, 0, 1, 0)).expect("new epoch"),
            Verdict::Accept
        );
    }

    #[test]
    fn sequences_wrap() {
        let mut t = ProducerTable::new(10);
        t.record(&header(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(
            t.check(&header(1, 0, 0, 1, 2)).expect("wrapped"),
            Verdict::Accept
        );
    }

    #[test]
    fn least_recently_used_is_evicted_and_truncate_forgets() {
        let mut t = ProducerTable::new(2);
        t.record(&header(1, 0, 0, 1, 0));
        t.record(&header(2, 0, 0, 1, 1));
        t.record(&header(1, 0, 1, 1, 2));
        t.record(&header(3, 0, 0, 1, 3));
        assert_eq!(t.len(), 2);
        assert!(t.entries.contains_key(&1) && t.entries.contains_key(&3));
        assert_eq!(t.truncate(3), vec![3]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lru.len(), 1);
    }

    #[test]
    fn snapshot_round_trips_and_rejects_garbage() {
        let mut t = ProducerTable::new(10);
        for i in 0..7 {
            t.record(&header(5, 2, i, 1, u64::from(i as u32)));
        }
        t.record(&header(6, 0, 0, 3, 7));
        let bytes = t.encode(10);
        let (end, back) = ProducerTable::decode(&bytes, 10).expect("decode");
        assert_eq!(end, 10);
        assert_eq!(back.entries[&5].batches, t.entries[&5].batches);
        assert_eq!(back.entries[&6].batches, t.entries[&6].batches);
        for cut in 0..bytes.len() {
            assert!(ProducerTable::decode(&bytes[..cut], 10).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        assert!(ProducerTable::decode(&flipped, 10).is_err());
    }
}

//! The sparse offset index and the time index of one segment.
//!
//! Both are kept in memory as one vector of [`IndexEntry`] (an entry every
//! `index_interval_bytes`, plus the last batch when the segment is sealed) and
//! written to two files when the segment is sealed or the log closed:
//! `.index` holds `(u32 relative offset, u32 position)` pairs and `.timeindex`
//! holds `(i64 max timestamp so far, u32 relative offset)` triples, little-endian.
//! Memory cost: 16 bytes per entry, about 512 KiB for a 128 MiB segment at the
//! default 4 KiB interval.

/// Bytes of one `.index` entry.
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes of one `.timeindex` entry.
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// One indexed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub(crate) position: u32,
    /// Largest timestamp in the segment up to and including this batch.
    pub(crate) max_timestamp_ms: i64,
}

/// The in-memory index of one segment: entries in increasing offset order.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentIndex {
    entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    /// Adds an entry; callers add them in increasing offset and position order.
    pub(crate) fn push(&mut self, entry: IndexEntry) {
        debug_assert!(self.entries.last().is_none_or(|last| {
            last.relative_offset < entry.relative_offset && last.position < entry.position
        }));
        self.entries.push(entry);
    }

    /// The newest entry.
    pub(crate) fn last(&self) -> Option<&IndexEntry> {
        self.entries.last()
    }

    /// Position of the last indexed batch starting at or before `relative_offset` (0 if none):
    /// the batch holding that offset starts there or later.
    pub(crate) fn position_for_offset(&self, relative_offset: u32) -> u32 {
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }

    /// Position of the last indexed batch whose running max timestamp is below `timestamp_ms`
    /// (0 if none): the first batch reaching `timestamp_ms` starts there or later.
    pub(crate) fn position_for_timestamp(&self, timestamp_ms: i64) -> u32 {
        let below = self
            .entries
            .partition_point(|e| e.max_timestamp_ms < timestamp_ms);
        below.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }

    /// The `.index` file contents.
    pub(crate) fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
        }
        out
    }

    /// The `.timeindex` file contents.
    pub(crate) fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&e.max_timestamp_ms.to_le_bytes());
            out.extend_from_slice(&e.relative_offset.to_le_bytes());
        }
        out
    }

    /// Parses both files and checks they agree with each other and with a segment of
    /// `segment_len` bytes. Returns why not, for the log line that announces a rebuild.
    pub(crate) fn decode(offsets: &[u8], times: &[u8], segment_len: u64) -> Result<Self, String> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_LEN)
            || !times.len().is_multiple_of(TIME_ENTRY_LEN)
        {
            return Err("index file length is not a whole number of entries".into());
        }
        let count = offsets.len() / OFFSET_ENTRY_LEN;
        if times.len() / TIME_ENTRY_LEN != count {
            return Err("offset and time index have different entry counts".into());
        }
        let mut index = Self::default();
        let pairs = offsets
            .chunks_exact(OFFSET_ENTRY_LEN)
            .zip(times.chunks_exact(TIME_ENTRY_LEN));
        for (o, t) in pairs {
            let entry = IndexEntry {
                relative_offset: le_u32(&o[0..4]),
                position: le_u32(&o[4..8]),
                max_timestamp_ms: le_i64(&t[0..8]),
            };
            if le_u32(&t[8..12]) != entry.relative_offset {
                return Err("time index entry disagrees with offset index".into());
            }
            if u64::from(entry.position) >= segment_len {
                return Err(format!(
                    "index position {} beyond segment end",
                    entry.position
                ));
            }
            if let Some(last) = index.entries.last() {
                let increasing = last.relative_offset < entry.relative_offset
                    && last.position < entry.position
                    && last.max_timestamp_ms <= entry.max_timestamp_ms;
                if !increasing {
                    return Err("index entries are not increasing".into());
                }
            }
            index.entries.push(entry);
        }
        Ok(index)
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(bytes);
    u32::from_le_bytes(buf)
}

fn le_i64(bytes: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes);
    i64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::default();
        for (rel, pos, ts) in [(3, 100, 10), (7, 200, 10), (12, 300, 25)] {
            index.push(IndexEntry {
                relative_offset: rel,
                position: pos,
                max_timestamp_ms: ts,
            });
        }
        index
    }

    #[test]
    fn lookups_find_floor_entries() {
        let index = sample();
        assert_eq!(index.position_for_offset(0), 0);
        assert_eq!(index.position_for_offset(3), 100);
        assert_eq!(index.position_for_offset(11), 200);
        assert_eq!(index.position_for_offset(99), 300);
        assert_eq!(index.position_for_timestamp(5), 0);
        assert_eq!(index.position_for_timestamp(10), 0);
        assert_eq!(index.position_for_timestamp(11), 200);
        assert_eq!(index.position_for_timestamp(30), 300);
    }

    #[test]
    fn files_round_trip_and_garbage_is_rejected() {
        let index = sample();
        let (o, t) = (index.encode_offsets(), index.encode_times());
        let back = SegmentIndex::decode(&o, &t, 400).expect("decode");
        assert_eq!(back.entries, index.entries);
        assert!(
            SegmentIndex::decode(&o, &t, 300).is_err(),
            "position past end"
        );
        assert!(
            SegmentIndex::decode(&o[..7], &t, 400).is_err(),
            "torn entry"
        );
        assert!(
            SegmentIndex::decode(&o[..8], &t, 400).is_err(),
            "count mismatch"
        );
        let mut swapped = o.clone();
        swapped[..8].copy_from_slice(&o[8..16]);
        assert!(
            SegmentIndex::decode(&swapped, &t, 400).is_err(),
            "not increasing"
        );
    }
}

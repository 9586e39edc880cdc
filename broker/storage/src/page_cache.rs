//! Which written bytes to drop from the OS page cache, so a long run keeps a bounded
//! window of each log in memory instead of filling it.
//!
//! Why: a log is written once and read mostly near its end (consumers tailing it).
//! Left to the kernel, every byte written stays cached until memory runs out; from
//! then on each new page must first be reclaimed, and on a virtual machine whose free
//! memory goes back to the host, each never-touched page costs a fault on the host
//! too. Dropping durable bytes that are more than a window behind the end
//! (`posix_fadvise(POSIX_FADV_DONTNEED)`) recycles the same pages, which measured
//! 3.5 times faster for buffered `write` + `fdatasync` of 1 MiB chunks on this
//! project's machine. Only clean (fsynced) bytes are released: the call would start
//! writeback of dirty ones and keep them.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::segment::Segment;

/// The active segment is released in steps of at least this many bytes, so small
/// commits (one per 100-byte message at worst) do not each make a system call.
pub(crate) const RELEASE_STEP_BYTES: u64 = 4 << 20;

/// Ranges start this far back from the last release: the kernel drops only folios
/// wholly inside the range, and the page cache holds up to 2 MiB folios, so one that
/// straddled the previous range's end would otherwise stay cached for good (measured:
/// 8 of 100 MB left behind by unaligned 4 MiB steps). The bytes before the last release
/// are older still, so dropping them again costs nothing.
pub(crate) const FOLIO_ALIGN_BYTES: u64 = 2 << 20;

/// A byte range of a segment file to drop from the page cache.
#[derive(Debug)]
pub(crate) struct CacheRelease {
    /// The segment file.
    pub(crate) file: Arc<File>,
    /// Its path, for the log line if the kernel refuses.
    pub(crate) path: PathBuf,
    /// First byte to drop (aligned down to [`FOLIO_ALIGN_BYTES`]).
    pub(crate) from: u64,
    /// Byte after the last to drop; `None` to the end of the file (a sealed segment,
    /// so its last folio goes too).
    pub(crate) to: Option<u64>,
    /// Bytes released that were not released before.
    pub(crate) new_bytes: u64,
}

/// The ranges of `segments` (oldest first, all durable up to their `size`) lying more
/// than `window_bytes` before the log's end and not yet released; marks them released.
///
/// Walks from the newest segment back and stops at the first segment fully released
/// beyond the window, so the cost does not grow with the number of segments.
pub(crate) fn take_releases(segments: &mut [Segment], window_bytes: u64) -> Vec<CacheRelease> {
    let mut releases = Vec::new();
    let mut kept = 0u64;
    for (position_from_end, segment) in segments.iter_mut().rev().enumerate() {
        let keep = window_bytes.saturating_sub(kept).min(segment.size);
        kept = kept.saturating_add(segment.size);
        let release_end = segment.size - keep;
        // Truncation may have cut the segment below what was released.
        segment.cache_released_to = segment.cache_released_to.min(segment.size);
        let released = segment.cache_released_to;
        let worth_it = if position_from_end == 0 {
            release_end >= released.saturating_add(RELEASE_STEP_BYTES)
        } else {
            release_end > released
        };
        if worth_it {
            let sealed_to_its_end = position_from_end > 0 && release_end == segment.size;
            releases.push(CacheRelease {
                file: Arc::clone(&segment.file),
                path: segment.path.clone(),
                from: released - released % FOLIO_ALIGN_BYTES,
                to: (!sealed_to_its_end).then_some(release_end),
                new_bytes: release_end - released,
            });
            segment.cache_released_to = release_end;
        } else if keep == 0 && released >= segment.size {
            break;
        }
    }
    releases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(sizes: &[u64]) -> (tempfile::TempDir, Vec<Segment>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let segments = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut segment = Segment::create(dir.path(), i as u64 * 1_000).expect("segment");
                segment.size = size;
                segment
            })
            .collect();
        (dir, segments)
    }

    fn ranges(releases: &[CacheRelease]) -> Vec<(u64, Option<u64>)> {
        releases.iter().map(|r| (r.from, r.to)).collect()
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_active_segment_is_released_in_steps_behind_the_window() {
        let (_dir, mut segs) = segments(&[8 * MIB]);
        // 8 MiB written, 8 MiB window: nothing to drop.
        assert!(take_releases(&mut segs, 8 * MIB).is_empty());
        // Less than a step beyond the window: still nothing.
        segs[0].size = 8 * MIB + RELEASE_STEP_BYTES - 1;
        assert!(take_releases(&mut segs, 8 * MIB).is_empty());
        segs[0].size = 8 * MIB + RELEASE_STEP_BYTES;
        assert_eq!(
            ranges(&take_releases(&mut segs, 8 * MIB)),
            [(0, Some(RELEASE_STEP_BYTES))]
        );
        segs[0].size = 20 * MIB;
        assert_eq!(
            ranges(&take_releases(&mut segs, 8 * MIB)),
            [(RELEASE_STEP_BYTES, Some(12 * MIB))]
        );
        // A release that ended inside a folio starts the next one at its boundary.
        segs[0].size = 25 * MIB + 123;
        let released = take_releases(&mut segs, 8 * MIB);
        assert_eq!(ranges(&released), [(12 * MIB, Some(17 * MIB + 123))]);
        assert_eq!(released[0].new_bytes, 5 * MIB + 123);
        segs[0].size = 30 * MIB;
        assert_eq!(
            ranges(&take_releases(&mut segs, 8 * MIB)),
            [(16 * MIB, Some(22 * MIB))]
        );
    }

    #[test]
    fn the_window_spans_segments_and_sealed_ones_are_released_to_their_end() {
        let (_dir, mut segs) = segments(&[10 * MIB, 10 * MIB, 3 * MIB]);
        // The window of 8 MiB covers the active 3 MiB and 5 MiB of the one before;
        // the oldest goes to the end of its file.
        assert_eq!(
            ranges(&take_releases(&mut segs, 8 * MIB)),
            [(0, Some(5 * MIB)), (0, None)]
        );
        // The active segment grows past the window: the sealed one goes entirely, and
        // the oldest, already released, stops the walk.
        segs[2].size = 8 * MIB;
        assert_eq!(
            ranges(&take_releases(&mut segs, 8 * MIB)),
            [(4 * MIB, None)]
        );
        assert!(take_releases(&mut segs, 8 * MIB).is_empty());
    }

    #[test]
    fn a_truncated_segment_is_released_from_its_new_end() {
        let (_dir, mut segs) = segments(&[20 * MIB]);
        assert_eq!(ranges(&take_releases(&mut segs, 0)), [(0, Some(20 * MIB))]);
        segs[0].size = 3 * MIB;
        assert!(take_releases(&mut segs, 0).is_empty());
        segs[0].size = 3 * MIB + RELEASE_STEP_BYTES;
        assert_eq!(
            ranges(&take_releases(&mut segs, 0)),
            [(2 * MIB, Some(3 * MIB + RELEASE_STEP_BYTES))]
        );
    }
}

//! Recovery after crashes and with damaged files.

mod common;

use common::*;
use ferry_storage::{Durability, Log, LogConfig};

fn fill(log: &Log, batches: usize) -> Vec<Vec<u8>> {
    (0..batches)
        .map(|i| {
            let b = batch(1 + i % 3, 40, 1000 + i as i64);
            log.append(b.clone(), 7, 0).expect("append");
            b
        })
        .collect()
}

fn assert_reads_back(log: &Log, sent: &[Vec<u8>]) {
    let got: Vec<Vec<u8>> = read_all(log).iter().map(|b| unstamped(b)).collect();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "batches differ");
}

#[test]
fn torn_half_batch_is_cut_and_appends_continue() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let mut sent = fill(&log, 20);
    let end = log.end_offset();
    log.close().expect("close");
    let last = segment_files(&dir).pop().expect("segment");
    let half = batch(3, 40, 5000);
    append_raw(&last, &half[..half.len() / 2]);

    let log = Log::open(&dir, config.clone()).expect("reopen");
    assert_eq!(log.end_offset(), end);
    assert_eq!(
        log.torn_tail().expect("torn tail"),
        Some(end),
        "the cut is recorded: it may have been a synced batch with a flipped bit"
    );
    assert_reads_back(&log, &sent);
    let next = batch(2, 10, 6000);
    let outcome = log.append(next.clone(), 8, 0).expect("append after cut");
    assert_eq!(outcome.base_offset, end);
    sent.push(next);
    log.close().expect("close");
    let log = Log::open(&dir, config.clone()).expect("reopen again");
    assert_reads_back(&log, &sent);
    assert_eq!(
        log.torn_tail().expect("torn tail"),
        Some(end),
        "kept until forgotten"
    );
    log.forget_torn_tail().expect("forget");
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.torn_tail().expect("torn tail"), None);
}

#[test]
fn garbage_tail_is_cut() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 15);
    let end = log.end_offset();
    log.close().expect("close");
    let last = segment_files(&dir).pop().expect("segment");
    let garbage: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 256) as u8).collect();
    append_raw(&last, &garbage);

    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.end_offset(), end);
    assert_reads_back(&log, &sent);
    assert_eq!(
        log.append(batch(1, 1, 1), 7, 0)
            .expect("append")
            .base_offset,
        end
    );
}

/// Base offset of each batch `fill` appended.
fn offsets_of(sent: &[Vec<u8>]) -> Vec<u64> {
    let mut next = 0;
    sent.iter()
        .map(|b| {
            let at = next;
            next += u64::from(
                ferry_records::BatchHeader::parse(b)
                    .expect("header")
                    .record_count,
            );
            at
        })
        .collect()
}

/// Every batch from start to end as (base offset, next offset, the batch unstamped or
/// `None` for a lost range).
fn read_classified(log: &Log) -> Vec<(u64, u64, Option<Vec<u8>>)> {
    read_all(log)
        .iter()
        .map(|b| {
            let h = ferry_records::BatchHeader::parse(b).expect("header");
            let body = (!h.is_lost_range()).then(|| unstamped(b));
            (h.base_offset, h.next_offset(), body)
        })
        .collect()
}

/// Checks that the log holds exactly `sent`, except that the batches at `lost` (indexes
/// into `sent`) are one lost range per run of consecutive indexes, with their offsets.
fn assert_all_but(log: &Log, sent: &[Vec<u8>], lost: &[usize]) {
    let offsets = offsets_of(sent);
    let got = read_classified(log);
    let mut expected = Vec::new();
    let mut i = 0;
    while i < sent.len() {
        if lost.contains(&i) {
            let from = offsets[i];
            while i < sent.len() && lost.contains(&i) {
                i += 1;
            }
            let to = offsets.get(i).copied().unwrap_or(log.end_offset());
            expected.push((from, to, None));
        } else {
            let h = ferry_records::BatchHeader::parse(&sent[i]).expect("header");
            expected.push((
                offsets[i],
                offsets[i] + u64::from(h.record_count),
                Some(sent[i].clone()),
            ));
            i += 1;
        }
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "batches: {:?}",
        got.iter()
            .map(|g| (g.0, g.1, g.2.is_some()))
            .collect::<Vec<_>>()
    );
    assert!(
        got == expected,
        "the log differs from what was sent less the lost batches"
    );
}

#[test]
fn flipped_byte_in_an_earlier_batch_loses_only_that_batch() {
    let (_tmp, dir) = temp_log_dir();
    // One big segment, so the damage is in the active segment.
    let config = LogConfig {
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 10);
    drop(log); // crash: no close, no checkpoint
    let path = segment_files(&dir).pop().expect("segment");
    let mut bytes = std::fs::read(&path).expect("read segment");
    let keep: usize = sent[..4].iter().map(Vec::len).sum();
    bytes[keep + 70] ^= 0x01; // inside the records of the fifth batch
    std::fs::write(&path, &bytes).expect("write segment");

    let log = Log::open(&dir, config.clone()).expect("reopen");
    assert_all_but(&log, &sent, &[4]);
    let lost = log.lost_records().expect("lost");
    assert_eq!(lost.len(), 1);
    let offsets = offsets_of(&sent);
    assert_eq!(
        (lost[0].from_offset, lost[0].to_offset),
        (offsets[4], offsets[5])
    );
    let copied = lost[0]
        .copied_to
        .clone()
        .expect("damaged bytes copied aside");
    assert_eq!(
        std::fs::read(copied).expect("copy"),
        bytes[keep..keep + sent[4].len()]
    );
    // The file keeps its length: the lost range took the damaged batch's exact place.
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        bytes.len() as u64
    );
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen again");
    assert_all_but(&log, &sent, &[4]);
    assert!(
        log.lost_records().expect("lost").is_empty(),
        "nothing new is damaged"
    );
}

#[test]
fn damage_in_a_middle_segment_keeps_every_later_segment() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::None);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 40);
    drop(log); // crash in None mode: nothing below the (absent) recovery point is trusted
    let files = segment_files(&dir);
    assert!(files.len() >= 4, "{files:?}");
    let segments = files.len();
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).expect("read");
    bytes[30] ^= 0xff; // inside the first batch's header fields covered by the CRC
    std::fs::write(victim, &bytes).expect("write");

    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.segment_count(), segments);
    let first_of_victim = base_of(victim);
    let damaged = offsets_of(&sent)
        .iter()
        .position(|o| *o == first_of_victim)
        .expect("a batch starts the segment");
    assert_all_but(&log, &sent, &[damaged]);
    assert_eq!(log.lost_records().expect("lost").len(), 1);
}

#[test]
fn a_sealed_segment_cut_in_half_loses_only_its_second_half() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 40);
    log.close()
        .expect("clean close: every segment trusted on open");
    let files = segment_files(&dir);
    let segments = files.len();
    let victim = &files[2];
    let len = std::fs::metadata(victim).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");

    let log = Log::open(&dir, config.clone()).expect("reopen");
    assert_eq!(log.segment_count(), segments);
    let (victim_base, next_base) = (base_of(victim), base_of(&files[3]));
    let lost = log.lost_records().expect("lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].from_offset > victim_base && lost[0].to_offset == next_base);
    let offsets = offsets_of(&sent);
    let gone: Vec<usize> = (0..sent.len())
        .filter(|i| offsets[*i] >= lost[0].from_offset && offsets[*i] < next_base)
        .collect();
    assert_all_but(&log, &sent, &gone);
    // Appends go on after the intact later segments.
    let end = log.end_offset();
    assert_eq!(
        log.append(batch(1, 1, 1), 7, 0)
            .expect("append")
            .base_offset,
        end
    );
}

#[test]
fn bit_rot_in_a_trusted_segment_is_confined_when_read() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 40);
    log.close()
        .expect("clean close: every segment trusted on open");
    let files = segment_files(&dir);
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).expect("read");
    bytes[100] ^= 0x04; // in the records of the segment's first batch (CRC-covered)
    std::fs::write(victim, &bytes).expect("write");

    let log = Log::open(&dir, config.clone()).expect("reopen: the segment is trusted");
    assert!(log.lost_records().expect("lost").is_empty());
    let first_of_victim = base_of(victim);
    let damaged = offsets_of(&sent)
        .iter()
        .position(|o| *o == first_of_victim)
        .expect("a batch starts the segment");
    assert_all_but(&log, &sent, &[damaged]);
    assert_eq!(
        log.lost_records().expect("lost").len(),
        1,
        "the read found it"
    );
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen");
    assert_all_but(&log, &sent, &[damaged]);
}

/// A closed log of 40 batches in small segments (every segment trusted on the next
/// open): its temp dir, path, config and the batches sent.
fn closed_log_of_40_batches() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    ferry_storage::LogConfig,
    Vec<Vec<u8>>,
) {
    let (tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 40);
    log.close().expect("close");
    (tmp, dir, config, sent)
}

/// Flips the given bits (byte position, mask) of `file` in place.
fn flip(file: &std::path::Path, bits: &[(usize, u8)]) {
    let mut bytes = std::fs::read(file).expect("read");
    for (at, mask) in bits {
        bytes[*at] ^= mask;
    }
    std::fs::write(file, &bytes).expect("write");
}

#[test]
fn a_flipped_bit_anywhere_in_a_trusted_batch_never_stops_a_reader() {
    // Found by ferry-sim: a flipped bit in a batch's base offset (outside the CRC) or
    // its record count made reads return nothing at that offset, forever.
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 40);
    log.close()
        .expect("clean close: every segment trusted on open");
    let victim = segment_files(&dir)[1].clone();
    let pristine = std::fs::read(&victim).expect("read");
    let first_len = ferry_records::BatchHeader::parse(&pristine)
        .expect("header")
        .total_len();
    let offsets = offsets_of(&sent);
    for at in 0..first_len {
        let mut bytes = pristine.clone();
        bytes[at] ^= 0x10;
        std::fs::write(&victim, &bytes).expect("write");
        let _ = std::fs::remove_file(dir.join("lost-ranges"));
        let log = Log::open(&dir, config.clone()).expect("reopen");
        // A reader starting past the damage (the index points it at the damaged batch,
        // whose length field may send the scan past the segment) still gets a batch.
        for start in offsets.iter().filter(|o| **o > base_of(&victim)).take(3) {
            let read = log.read(*start, 1000, log.end_offset()).expect("read");
            assert!(
                read.batches > 0,
                "byte {at}: a read from {start} got nothing"
            );
        }
        // read_all asserts progress at every offset: a stuck reader fails here.
        let got = read_classified(&log);
        assert_eq!(
            got.last().map(|g| g.1),
            Some(log.end_offset()),
            "byte {at}: read to the end"
        );
        let lost = got.iter().filter(|g| g.2.is_none()).count();
        assert!(lost <= 1, "byte {at}: only the damaged batch is lost");
        for (base, _, body) in &got {
            if let Some(body) = body {
                let i = offsets
                    .iter()
                    .position(|o| o == base)
                    .expect("a sent batch");
                assert!(*body == sent[i], "byte {at}: batch at {base} intact");
            }
        }
        log.close().expect("close");
        std::fs::write(&victim, &pristine).expect("restore");
    }
}

#[test]
fn a_flipped_bit_in_a_leader_epoch_is_served_with_the_historys_epoch() {
    // Found by ferry-sim: the epoch field is outside the CRC, so a flipped bit there
    // passed every check, and followers copied the bogus epoch into their histories.
    let (_tmp, dir, config, _) = closed_log_of_40_batches();
    let victim = segment_files(&dir)[1].clone();
    // The first batch's leader epoch: 7 becomes 263.
    flip(&victim, &[(12 + 1, 0x01)]);

    let log = Log::open(&dir, config).expect("reopen");
    for batch in read_all(&log) {
        let header = ferry_records::BatchHeader::parse(&batch).expect("header");
        assert_eq!(header.leader_epoch, 7, "batch at {}", header.base_offset);
    }
}

#[test]
fn truncating_over_damage_found_since_recovery_confines_it_first() {
    // Found by ferry-sim: a follower truncating to where its leader's log diverges met
    // a damaged length field before the cut; it cut nothing and reported the old end
    // (or, with the field read later, poisoned the log).
    let (_tmp, dir, config, sent) = closed_log_of_40_batches();
    let victim = segment_files(&dir)[1].clone();
    // The first batch's length field (outside the CRC).
    flip(&victim, &[(8 + 1, 0x40)]);

    let log = Log::open(&dir, config).expect("reopen: the segment is trusted");
    let offsets = offsets_of(&sent);
    let damaged = offsets
        .iter()
        .position(|o| *o == base_of(&victim))
        .expect("a batch starts the segment");
    let cut = offsets[damaged + 1];
    assert_eq!(log.truncate_to(cut).expect("truncate"), cut);
    assert_all_but(&log, &sent[..=damaged], &[damaged]);
}

#[test]
fn a_trusted_segment_damaged_at_both_ends_still_opens() {
    // Found by ferry-sim: a flipped bit in the first batch's base offset and another
    // near the end of a trusted segment made recovery fill a gap after it, rescan it,
    // meet the first and refuse to open the log at all.
    let (_tmp, dir, config, sent) = closed_log_of_40_batches();
    let victim = segment_files(&dir)[0].clone();
    let pristine = std::fs::read(&victim).expect("read");
    let last_batch = pristine.len() - sent[0].len().max(sent[1].len()).max(sent[2].len());
    for at in last_batch.saturating_sub(100)..pristine.len() {
        let mut bytes = pristine.clone();
        bytes[0] ^= 0x20;
        bytes[at] ^= 0x01;
        std::fs::write(&victim, &bytes).expect("write");
        for side in ["lost-ranges", "torn-tail"] {
            let _ = std::fs::remove_file(dir.join(side));
        }
        let log = Log::open(&dir, config.clone())
            .unwrap_or_else(|err| panic!("byte {at}: the log must open: {err}"));
        read_all(&log);
        log.close().expect("close");
        std::fs::write(&victim, &pristine).expect("restore");
    }
}

#[test]
fn a_missing_segment_file_becomes_a_lost_range() {
    let (_tmp, dir, config, sent) = closed_log_of_40_batches();
    let files = segment_files(&dir);
    let segments = files.len();
    std::fs::remove_file(&files[2]).expect("remove a segment");
    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.segment_count(), segments - 1);
    let (from, to) = (base_of(&files[2]), base_of(&files[3]));
    let offsets = offsets_of(&sent);
    let gone: Vec<usize> = (0..sent.len())
        .filter(|i| offsets[*i] >= from && offsets[*i] < to)
        .collect();
    assert_all_but(&log, &sent, &gone);
}

#[test]
fn a_producer_cannot_send_a_lost_range() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    let range = ferry_records::LostRange {
        base_offset: 0,
        count: 5,
        leader_epoch: 0,
        timestamp_ms: 0,
    };
    let forged = ferry_records::lost_range_batch(range, 64).expect("batch");
    assert!(log.append(forged, 0, 0).is_err());
    assert_eq!(log.end_offset(), 0);
}

#[test]
fn missing_or_garbage_index_files_are_rebuilt() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 40);
    let ts_answer = log.offset_for_timestamp(1020).expect("ts");
    log.close().expect("close");
    let files = segment_files(&dir);
    std::fs::remove_file(files[0].with_extension("index")).expect("remove index");
    std::fs::write(files[1].with_extension("index"), b"not an index at all").expect("garbage");
    std::fs::write(files[2].with_extension("timeindex"), vec![0xff; 24]).expect("garbage");

    let log = Log::open(&dir, config.clone()).expect("reopen");
    assert_reads_back(&log, &sent);
    assert_eq!(log.offset_for_timestamp(1020).expect("ts"), ts_answer);
    log.close().expect("close");
    // Index files for every segment exist again and are well formed.
    for file in segment_files(&dir) {
        let index = std::fs::read(file.with_extension("index")).expect("index");
        assert_eq!(index.len() % 8, 0);
    }
    let log = Log::open(&dir, config).expect("reopen again");
    assert_reads_back(&log, &sent);
}

#[test]
fn crash_reopen_keeps_everything_written() {
    for durability in [Durability::Fsync, Durability::Interval, Durability::None] {
        let (_tmp, dir) = temp_log_dir();
        let config = small_config(durability);
        let log = Log::open(&dir, config.clone()).expect("open");
        let sent = fill(&log, 30);
        let end = log.end_offset();
        drop(log);
        let log = Log::open(&dir, config).expect("reopen");
        assert_eq!(log.end_offset(), end);
        assert_eq!(log.durable_end_offset(), end);
        assert_reads_back(&log, &sent);
    }
}

#[test]
fn leftover_temp_files_and_bad_checkpoint_are_handled() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 20);
    log.close().expect("close");
    std::fs::write(dir.join("recovery-point.tmp"), b"half").expect("tmp");
    std::fs::write(dir.join("recovery-point"), b"garbage").expect("bad checkpoint");
    std::fs::write(dir.join("00000000000000999999.index"), b"orphan").expect("orphan");
    let log = Log::open(&dir, config).expect("reopen");
    assert_reads_back(&log, &sent);
    assert!(!dir.join("recovery-point.tmp").exists());
    assert!(!dir.join("00000000000000999999.index").exists());
}

#[test]
fn empty_and_missing_directories_open() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, LogConfig::default()).expect("open creates the directory");
    assert_eq!((log.start_offset(), log.end_offset()), (0, 0));
    assert_eq!(log.read(0, 100, 0).expect("read").batches, 0);
    log.close().expect("close");
    let log = Log::open(&dir, LogConfig::default()).expect("reopen");
    assert_eq!(log.end_offset(), 0);
}

#[test]
fn truncated_active_segment_to_zero_bytes_recovers() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    fill(&log, 30);
    drop(log);
    let files = segment_files(&dir);
    let last = files.last().expect("segment");
    std::fs::write(last, b"").expect("empty the active segment");
    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.end_offset(), base_of(last));
    read_all(&log);
}

mod damage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever bytes a crash leaves in the segment files, open never panics and
        /// serves what was written with damaged batches as lost ranges, with appends
        /// continuing after it.
        #[test]
        fn damaged_segments_serve_every_intact_batch(
            edits in prop::collection::vec((0.0..1.0f64, 0.0..1.0f64, any::<u8>()), 1..4),
            tail in prop::collection::vec(any::<u8>(), 0..200),
            clean in any::<bool>(),
        ) {
            let (_tmp, dir) = temp_log_dir();
            // `None` mode writes the recovery point only at close: after a crash nothing
            // is trusted and everything is scanned; after a close everything is trusted
            // and the damage plays the part of bit rot.
            let config = small_config(Durability::None);
            let log = Log::open(&dir, config.clone()).expect("open");
            let sent = fill(&log, 25);
            if clean {
                log.close().expect("close");
            } else {
                drop(log);
            }
            let files = segment_files(&dir);
            for (which, at, byte) in edits {
                let path = &files[((files.len() as f64) * which) as usize];
                let mut bytes = std::fs::read(path).expect("read");
                if !bytes.is_empty() {
                    let i = ((bytes.len() as f64) * at) as usize;
                    bytes[i] ^= byte | 1;
                    std::fs::write(path, &bytes).expect("write");
                }
            }
            append_raw(files.last().expect("file"), &tail);

            let log = Log::open(&dir, config).expect("reopen never fails on bad bytes");
            // Reads always make progress to the end (damage found on read is confined
            // then), every batch served has a valid CRC, and every batch that is not a
            // lost range is exactly what was sent at its offset.
            let offsets = offsets_of(&sent);
            let mut offset = log.start_offset();
            while offset < log.end_offset() {
                let r = log.read(offset, 500, u64::MAX).expect("reads never fail on bad bytes");
                prop_assert!(r.batches > 0, "no progress at {}", offset);
                for b in ferry_records::Batches::new(&r.bytes) {
                    let b = b.expect("whole");
                    prop_assert!(b.verify_crc().is_ok());
                    prop_assert_eq!(b.header.base_offset, offset);
                    if !b.header.is_lost_range() {
                        let i = offsets.iter().position(|o| *o == offset);
                        prop_assert!(i.is_some_and(|i| unstamped(b.bytes) == sent[i]));
                    }
                    offset = b.header.next_offset();
                }
            }
            let end = log.end_offset();
            prop_assert_eq!(log.append(batch(1, 1, 1), 7, 0).expect("append").base_offset, end);
        }
    }
}

#[test]
fn lost_ranges_are_remembered_until_truncated_away() {
    let (_tmp, dir) = temp_log_dir();
    let config = small_config(Durability::Fsync);
    let log = Log::open(&dir, config.clone()).expect("open");
    let sent = fill(&log, 40);
    log.close().expect("close");
    let files = segment_files(&dir);
    std::fs::remove_file(&files[2]).expect("remove a segment");
    let (from, to) = (base_of(&files[2]), base_of(&files[3]));

    let log = Log::open(&dir, config.clone()).expect("reopen");
    assert_eq!(log.lost_ranges().expect("ranges"), vec![from..to]);
    log.close().expect("close");
    // A later open finds nothing new but still knows the log is not whole.
    let log = Log::open(&dir, config.clone()).expect("reopen");
    assert!(log.lost_records().expect("records").is_empty());
    assert_eq!(log.lost_ranges().expect("ranges"), vec![from..to]);
    // A replica repairs by truncating below the lost range and fetching again.
    log.truncate_to(from).expect("truncate");
    assert!(log.lost_ranges().expect("ranges").is_empty());
    log.close().expect("close");
    let log = Log::open(&dir, config).expect("reopen");
    assert!(log.lost_ranges().expect("ranges").is_empty());
    assert_eq!(log.end_offset(), from);
    assert_eq!(
        read_all(&log).len(),
        offsets_of(&sent).iter().filter(|o| **o < from).count()
    );
}

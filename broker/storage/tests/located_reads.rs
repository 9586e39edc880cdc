//! Locating batches for a reader that sends them on unread (`Log::locate`): the range
//! holds exactly the bytes `Log::read` returns, and whatever a read must decide (damage,
//! an epoch field the history corrects, many small batches) is left to the read.

mod common;

use std::os::unix::fs::FileExt;

use common::*;
use ferry_records::BatchHeader;
use ferry_storage::{BatchRange, Durability, Log, LogConfig};

fn bytes_of(range: &BatchRange) -> Vec<u8> {
    let mut bytes = vec![0; range.len as usize];
    range
        .file
        .read_exact_at(&mut bytes, range.position)
        .expect("read the located range");
    bytes
}

fn big_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        ..small_config(Durability::Fsync)
    }
}

#[test]
fn a_located_range_holds_what_a_read_returns() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, big_segments()).expect("open");
    for i in 0..40 {
        log.append(batch(1 + i % 3, 30, i as i64), 1 + i as u64 / 20, 0)
            .expect("append");
    }
    let end = log.end_offset();
    for max_bytes in [1, 200, 700, 5000] {
        let mut offset = 0;
        while offset < end {
            let read = log.read(offset, max_bytes, end).expect("read");
            let range = log
                .locate(offset, max_bytes, end)
                .expect("locate")
                .expect("undamaged batches are located");
            assert_eq!(bytes_of(&range), read.bytes, "at {offset}, max {max_bytes}");
            assert_eq!(range.batches, read.batches);
            assert_eq!(range.next_offset, read.next_offset);
            assert!(range.batches > 0, "progress at {offset}");
            offset = range.next_offset;
        }
    }
    // Nothing there yet: an empty range, not a refusal.
    let nothing = log
        .locate(end, 1000, u64::MAX)
        .expect("locate")
        .expect("empty");
    assert_eq!((nothing.len, nothing.next_offset), (0, end));
    // Below the high mark the caller gives, as a read.
    let below = log.locate(0, 1 << 20, 3).expect("locate").expect("range");
    assert_eq!(
        bytes_of(&below),
        log.read(0, 1 << 20, 3).expect("read").bytes
    );
}

#[test]
fn only_the_active_segment_is_located() {
    let (_tmp, dir) = temp_log_dir();
    // Tiny segments: most batches are in sealed ones, which may have left the page
    // cache; reading them may wait for the disk, which a copying read does on a
    // blocking thread.
    let log = Log::open(&dir, small_config(Durability::Fsync)).expect("open");
    for i in 0..40 {
        log.append(batch(2, 30, i), 1, 0).expect("append");
    }
    let end = log.end_offset();
    assert!(segment_files(&dir).len() > 2, "several segments");
    assert!(log.locate(0, 1 << 20, end).expect("locate").is_none());
    let active = *segment_bases(&dir).last().expect("an active segment");
    let range = log
        .locate(active, 1 << 20, end)
        .expect("locate")
        .expect("the active segment is located");
    assert_eq!(
        bytes_of(&range),
        log.read(active, 1 << 20, end).expect("read").bytes
    );
}

#[test]
fn many_small_batches_are_left_to_a_copying_read() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, big_segments()).expect("open");
    for i in 0..300 {
        log.append(batch(1, 10, i), 1, 0).expect("append");
    }
    let end = log.end_offset();
    assert!(
        log.locate(0, 1 << 20, end).expect("locate").is_none(),
        "300 tiny batches for a 1 MiB read: copy them"
    );
    // The same batches fill a small read: each is worth a header read.
    let range = log
        .locate(0, 4096, end)
        .expect("locate")
        .expect("a small read is located");
    assert_eq!(
        bytes_of(&range),
        log.read(0, 4096, end).expect("read").bytes
    );
}

#[test]
fn damage_and_a_damaged_epoch_are_left_to_the_read() {
    let (_tmp, dir) = temp_log_dir();
    let log = Log::open(&dir, big_segments()).expect("open");
    for i in 0..4 {
        log.append(batch(2, 50, i), 3, 0).expect("append");
    }
    let end = log.end_offset();
    let first_len = log.read(0, 1, end).expect("read").bytes.len() as u64;
    let segment = segment_files(&dir).remove(0);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .expect("open segment");
    // A leader epoch outside the CRC, flipped: the read serves the history's epoch.
    let mut header = [0u8; ferry_records::HEADER_LEN];
    file.read_exact_at(&mut header, first_len).expect("header");
    BatchHeader::set_leader_epoch(&mut header, 9);
    file.write_all_at(&header, first_len)
        .expect("damage the epoch");
    assert!(
        log.locate(0, 1 << 20, end).expect("locate").is_none(),
        "a batch whose epoch differs from the history"
    );
    let read = log.read(0, 1 << 20, end).expect("read");
    assert_eq!(
        read.batches, 4,
        "the read corrects the epoch and serves all"
    );
    // A body bit flipped under the CRC is not looked at: the receiver checks the CRC.
    let mut body = [0u8; 1];
    file.read_exact_at(&mut body, first_len - 1)
        .expect("last byte");
    file.write_all_at(&[body[0] ^ 1], first_len - 1)
        .expect("damage the body");
    let range = log.locate(0, 1, end).expect("locate").expect("range");
    assert_eq!(range.len, first_len, "located by its header alone");
    // A length field damaged past the segment's end: left to the read, which confines it.
    let mut header = [0u8; ferry_records::HEADER_LEN];
    file.read_exact_at(&mut header, 0).expect("header");
    let length_at = 8;
    header[length_at..length_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    file.write_all_at(&header, 0).expect("damage the length");
    assert!(log.locate(0, 1 << 20, end).expect("locate").is_none());
}

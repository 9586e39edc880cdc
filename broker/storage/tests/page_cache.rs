//! The page-cache window, checked against the kernel: `fincore` (util-linux) reports
//! how much of each segment file is resident after a long fsynced run.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ferry_storage::{Durability, Log, LogConfig};

const MIB: u64 = 1 << 20;
/// Written per run: several segments, many times the window.
const WRITTEN_BYTES: u64 = 192 * MIB;
const WINDOW_BYTES: u64 = 4 * MIB;

/// A log directory on the disk the target directory is on (not a tmpfs, where the
/// page cache is the storage and cannot be dropped).
fn disk_log_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let dir = tmp.path().join("log");
    (tmp, dir)
}

/// Bytes of the log's segment files resident in the page cache, as the kernel says.
fn resident_bytes(dir: &Path) -> u64 {
    let files = segment_files(dir);
    let output = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .args(&files)
        .output()
        .expect("fincore (util-linux) runs");
    assert!(output.status.success(), "fincore: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().parse::<u64>().expect("a byte count"))
        .sum()
}

/// Appends about `WRITTEN_BYTES` in batches of about 1 MB (sizes that end inside the
/// page cache's large folios), each waited on until durable.
fn write_run(window: Option<u64>) -> (tempfile::TempDir, Log) {
    let (tmp, dir) = disk_log_dir();
    let config = LogConfig {
        durability: Durability::Fsync,
        segment_bytes: 24 * MIB,
        page_cache_window_bytes: window,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config).expect("open");
    let mut written = 0;
    let mut ts = 0;
    while written < WRITTEN_BYTES {
        let batch = batch(1000, 1000, ts);
        written += batch.len() as u64;
        ts += 1000;
        let appended = log.append(batch, 1, 0).expect("append");
        log.wait_durable(appended.last_offset + 1).expect("durable");
    }
    (tmp, log)
}

#[test]
fn fsynced_bytes_beyond_the_window_leave_the_page_cache() {
    let (_tmp, log) = write_run(Some(WINDOW_BYTES));
    let resident = resident_bytes(log.dir());
    // The window, the step the active segment is released in, and the folio (up to
    // 2 MiB) holding the end of the last release. Releases that leave a straddling
    // folio behind for good would leave about 8 % of what was written.
    let bound = WINDOW_BYTES + 4 * MIB + 2 * MIB;
    assert!(
        resident <= bound,
        "{resident} bytes of the log still cached, more than the {bound} the window allows"
    );
    assert!(log.cache_released_bytes() >= WRITTEN_BYTES - bound);
    // What left the cache reads back whole, from the disk.
    let batches = read_all(&log);
    assert_eq!(batches.len() as u64, log.end_offset() / 1000);
}

#[test]
fn without_a_window_the_kernel_keeps_what_was_written() {
    // The control: fincore does see written pages, so the test above measures something.
    let (_tmp, log) = write_run(None);
    assert_eq!(log.cache_released_bytes(), 0);
    let resident = resident_bytes(log.dir());
    assert!(
        resident >= WRITTEN_BYTES / 2,
        "only {resident} bytes cached after writing {WRITTEN_BYTES}"
    );
}

//! The few file-system calls whose failure matters, with an optional fault hook.
//!
//! Every segment write and fsync goes through [`Disk`], so tests can make exactly
//! one of them fail and check that the log poisons itself. Without a hook the cost
//! is one `Option` check per call, next to a syscall.

use std::fs::File;
use std::io::IoSlice;
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{Advice, fadvise};
use rustix::io::{Errno, pwritev};
use tracing::debug;

use crate::StorageError;
use crate::error::IoContext;
use crate::page_cache::CacheRelease;

/// The operations a [`FaultInjector`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Writing a batch to a segment file.
    SegmentWrite,
    /// fsync of a segment file.
    SegmentSync,
}

/// A test hook consulted before each segment write and fsync.
pub trait FaultInjector: Send + Sync + std::fmt::Debug {
    /// Returns an error to make the operation on `path` fail as if the OS had failed it.
    fn check(&self, point: FaultPoint, path: &Path) -> std::io::Result<()>;
}

/// Told how long each segment fsync took (the broker turns this into a latency histogram).
pub trait SyncObserver: Send + Sync + std::fmt::Debug {
    /// One fsync of a segment file finished (successfully or not) after `elapsed`.
    fn synced(&self, elapsed: Duration);
}

/// Optional hooks into a log's disk operations.
#[derive(Debug, Clone, Default)]
pub struct DiskHooks {
    /// Fails chosen writes and fsyncs (tests).
    pub faults: Option<Arc<dyn FaultInjector>>,
    /// Observes fsync durations (metrics).
    pub sync_observer: Option<Arc<dyn SyncObserver>>,
}

/// Segment writes and fsyncs, counted, timed and optionally failed on purpose.
#[derive(Debug, Default)]
pub(crate) struct Disk {
    hooks: DiskHooks,
    fsyncs: AtomicU64,
    cache_released_bytes: AtomicU64,
}

impl Disk {
    /// A disk with the given hooks.
    pub(crate) fn new(hooks: DiskHooks) -> Self {
        Self {
            hooks,
            fsyncs: AtomicU64::new(0),
            cache_released_bytes: AtomicU64::new(0),
        }
    }

    fn inject(&self, point: FaultPoint, path: &Path) -> std::io::Result<()> {
        match &self.hooks.faults {
            Some(faults) => faults.check(point, path),
            None => Ok(()),
        }
    }

    /// Writes all of `parts`, one after the other, at `position` of a segment file.
    pub(crate) fn write_at(
        &self,
        file: &File,
        path: &Path,
        parts: [&[u8]; 2],
        position: u64,
    ) -> Result<(), StorageError> {
        self.inject(FaultPoint::SegmentWrite, path)
            .and_then(|()| write_all_vectored_at(file, parts, position))
            .context(|| {
                format!(
                    "writing {} bytes at {position} of {}",
                    parts[0].len() + parts[1].len(),
                    path.display()
                )
            })
    }

    /// fsyncs a segment file's data (and the size, which `fdatasync` includes).
    pub(crate) fn sync(&self, file: &File, path: &Path) -> Result<(), StorageError> {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self
            .inject(FaultPoint::SegmentSync, path)
            .and_then(|()| file.sync_data());
        if let Some(observer) = &self.hooks.sync_observer {
            observer.synced(started.elapsed());
        }
        result.context(|| format!("fsync of {}", path.display()))
    }

    /// Drops fsynced bytes from the OS page cache. Only a hint: a refusal is logged and
    /// changes nothing else.
    pub(crate) fn release_cache(&self, release: &CacheRelease) {
        // `None`: to the end of the file.
        let len = match release.to {
            Some(to) => match NonZeroU64::new(to.saturating_sub(release.from)) {
                Some(len) => Some(len),
                None => return,
            },
            None => None,
        };
        match fadvise(&*release.file, release.from, len, Advice::DontNeed) {
            Ok(()) => {
                self.cache_released_bytes
                    .fetch_add(release.new_bytes, Ordering::Relaxed);
            }
            Err(err) => debug!(
                path = %release.path.display(),
                error = %err,
                "could not drop written bytes from the page cache"
            ),
        }
    }

    /// Bytes dropped from the page cache so far.
    pub(crate) fn cache_released_bytes(&self) -> u64 {
        self.cache_released_bytes.load(Ordering::Relaxed)
    }

    /// Segment fsyncs attempted so far.
    pub(crate) fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

/// `pwritev` until every byte of `parts` is at `position` onwards: one system call for
/// a batch whose stamped header is apart from its body (a call may write less).
fn write_all_vectored_at(file: &File, parts: [&[u8]; 2], position: u64) -> std::io::Result<()> {
    let mut slices = [IoSlice::new(parts[0]), IoSlice::new(parts[1])];
    let mut slices: &mut [IoSlice<'_>] = &mut slices;
    let mut remaining = parts[0].len() + parts[1].len();
    let mut position = position;
    while remaining > 0 {
        match pwritev(file, slices, position) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "the file took no more bytes",
                ));
            }
            Ok(written) => {
                remaining -= written;
                position += written as u64;
                IoSlice::advance_slices(&mut slices, written);
            }
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// fsyncs a directory, so that files created, renamed or removed in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("fsync of directory {}", dir.display()))
}

/// Replaces `dir/name` with `bytes` atomically: write `name.tmp`, fsync, rename, fsync the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let target = dir.join(name);
    std::fs::write(&tmp, bytes).context(|| format!("writing {}", tmp.display()))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .context(|| format!("fsync of {}", tmp.display()))?;
    std::fs::rename(&tmp, &target)
        .context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
    sync_dir(dir)
}

/// Reads a whole file, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).context(|| format!("reading {}", path.display())),
    }
}

/// Removes a file if it exists.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Suffix of files being written atomically; leftovers are removed on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

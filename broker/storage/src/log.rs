//! The log: a directory of segments with one writer lock, group commit, and reads
//! that do their I/O outside the lock.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use ferry_records::{BatchHeader, HEADER_LEN, RecordError};
use tracing::{error, warn};

use crate::checked::{CheckedBatch, check_batch, check_replica_batch};
use crate::config::{Durability, LogConfig, PAGE_CACHE_WINDOW_BYTES_DEFAULT};
use crate::disk::{Disk, DiskHooks, FaultInjector, sync_dir};
use crate::epochs::{EpochHistory, EpochStart};
use crate::producer_state::{ProducerTable, Verdict};
use crate::read::{BatchRange, ReadResult, SegmentView};
use crate::recovery::{Limit, scan_confining};
use crate::recovery::{PRODUCER_SNAPSHOT_FILE, recover, reload_producers, write_recovery_point};
use crate::repair::{LostRecords, clip, load_lost, persist_lost};
use crate::scan::ScanMode;
use crate::segment::Segment;
use crate::{StorageError, disk, page_cache};

/// The least distance from its segment's end within which [`Log::locate`] finds
/// batches, whatever the page-cache window: a follower at the tail fetches up to a few
/// MiB behind it.
const MIN_LOCATED_WINDOW_BYTES: u64 = 32 << 20;

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// Largest record timestamp in the batch.
    pub max_timestamp_ms: i64,
    /// The batch was a retry of one already appended; nothing was written and the
    /// offsets are the original ones.
    pub duplicate: bool,
}

/// What [`Log::enforce_retention`] or [`Log::delete_before`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Whole segments deleted.
    pub segments_deleted: usize,
    /// Bytes of segment data deleted.
    pub bytes_deleted: u64,
    /// Records deleted.
    pub records_deleted: u64,
}

/// Everything appends change, behind one mutex held for the length of a write syscall.
#[derive(Debug)]
struct LogState {
    /// Contiguous segments, never empty; the last is active.
    segments: Vec<Segment>,
    producers: ProducerTable,
    /// Sealed segments not yet fsynced (only in `Durability::None`).
    unsynced: Vec<(Arc<File>, PathBuf)>,
    /// The offset in the recovery-point file.
    recovery_point: u64,
    /// Where each leader epoch began appending.
    epochs: EpochHistory,
    /// Records lost to damage on disk, found by recovery or reads since the log was
    /// opened, oldest first.
    lost: Vec<LostRecords>,
    /// Every lost range still in the log (persisted in `lost-ranges`), found by this
    /// open or an earlier one.
    lost_ranges: Vec<Range<u64>>,
}

impl LogState {
    /// Keeps the lost ranges inside `[start, end)`, persisting them if that changed.
    fn clip_lost_ranges(&mut self, dir: &Path, start: u64, end: u64) -> Result<(), StorageError> {
        let before = self.lost_ranges.clone();
        self.lost_ranges = clip(std::mem::take(&mut self.lost_ranges), start, end);
        if self.lost_ranges != before {
            persist_lost(dir, &self.lost_ranges)?;
        }
        Ok(())
    }
}

impl LogState {
    fn active(&self) -> &Segment {
        // Invariant: `segments` is never empty (recovery and truncation keep one).
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Index of the segment holding `offset`: the last one starting at or before it.
    fn segment_for(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    fn view(&self, index: usize, start_position: u64) -> SegmentView {
        let segment = &self.segments[index];
        SegmentView {
            file: Arc::clone(&segment.file),
            path: segment.path.clone(),
            size: segment.size,
            start_position,
        }
    }
}

/// Group-commit bookkeeping, behind its own mutex so waiters never hold the writer lock.
#[derive(Debug, Default)]
struct CommitState {
    /// A leader is fsyncing; others wait on the condvar.
    syncing: bool,
    /// Bumped by truncation, so an fsync that started before it cannot mark the
    /// removed offsets durable.
    generation: u64,
}

/// One partition replica's log. `Send + Sync`: share it in an `Arc` and call it from
/// many threads (the broker calls it from blocking tasks).
///
/// Lock order: `removing` before `state` before `commit`. Reads and `wait_durable`
/// never hold `state` during I/O.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    disk: Disk,
    /// Segments taken out of the log whose files are still to be removed, oldest first.
    /// Deleting callers hold this lock while they remove files (outside `state`), so files
    /// go strictly oldest first across callers and failed attempts: a missing segment with
    /// older ones still on disk is a gap, and recovery drops everything after a gap.
    removing: Mutex<VecDeque<Segment>>,
    state: Mutex<LogState>,
    commit: Mutex<CommitState>,
    committed: Condvar,
    start_offset: AtomicU64,
    end_offset: AtomicU64,
    durable_end: AtomicU64,
    poison: OnceLock<String>,
    closed: AtomicBool,
}

impl Log {
    /// Opens (creating if missing) and recovers the log in `dir`.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, StorageError> {
        Self::open_with_hooks(dir, config, DiskHooks::default())
    }

    /// Like [`Log::open`], with a hook that can fail segment writes and fsyncs (for tests).
    pub fn open_with_faults(
        dir: &Path,
        config: LogConfig,
        faults: Arc<dyn FaultInjector>,
    ) -> Result<Log, StorageError> {
        let hooks = DiskHooks {
            faults: Some(faults),
            sync_observer: None,
        };
        Self::open_with_hooks(dir, config, hooks)
    }

    /// Like [`Log::open`], with hooks into its disk operations (fault injection,
    /// fsync timing).
    pub fn open_with_hooks(
        dir: &Path,
        config: LogConfig,
        hooks: DiskHooks,
    ) -> Result<Log, StorageError> {
        config.validate()?;
        let recovered = recover(dir, &config)?;
        let start = recovered.segments.first().map_or(0, |s| s.base_offset);
        let end = recovered.segments.last().map_or(0, |s| s.next_offset);
        let epochs = EpochHistory::load(dir, start, end)?;
        let mut lost_ranges = load_lost(dir, start, end)?;
        if !recovered.lost.is_empty() {
            lost_ranges.extend(recovered.lost.iter().map(|l| l.from_offset..l.to_offset));
            persist_lost(dir, &lost_ranges)?;
        }
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            disk: Disk::new(hooks),
            removing: Mutex::new(VecDeque::new()),
            state: Mutex::new(LogState {
                segments: recovered.segments,
                producers: recovered.producers,
                unsynced: Vec::new(),
                recovery_point: recovered.recovery_point,
                epochs,
                lost: recovered.lost,
                lost_ranges,
            }),
            commit: Mutex::new(CommitState::default()),
            committed: Condvar::new(),
            start_offset: AtomicU64::new(start),
            end_offset: AtomicU64::new(end),
            // Recovery fsynced what it found, so all of it is durable.
            durable_end: AtomicU64::new(end),
            poison: OnceLock::new(),
            closed: AtomicBool::new(false),
        })
    }

    fn lock_state(&self) -> Result<MutexGuard<'_, LogState>, StorageError> {
        self.state.lock().map_err(|_| StorageError::Poisoned {
            reason: "a thread panicked while appending".into(),
        })
    }

    fn lock_removing(&self) -> Result<MutexGuard<'_, VecDeque<Segment>>, StorageError> {
        self.removing.lock().map_err(|_| StorageError::Poisoned {
            reason: "a thread panicked while deleting segments".into(),
        })
    }

    fn lock_commit(&self) -> Result<MutexGuard<'_, CommitState>, StorageError> {
        self.commit.lock().map_err(|_| StorageError::Poisoned {
            reason: "a thread panicked during group commit".into(),
        })
    }

    /// Fails if the log is poisoned or closed.
    fn check_usable(&self) -> Result<(), StorageError> {
        if let Some(reason) = self.poison.get() {
            return Err(StorageError::Poisoned {
                reason: reason.clone(),
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    /// Records the first write or fsync failure; from now on nothing is accepted.
    fn poison(&self, err: StorageError) -> StorageError {
        if self.poison.set(err.to_string()).is_ok() {
            error!(dir = %self.dir.display(), error = %err, "log poisoned");
        }
        err
    }

    /// Validates, deduplicates, stamps and writes one batch. Not yet durable in
    /// `Fsync` mode: call [`Log::wait_durable`] with `last_offset + 1`.
    ///
    /// `leader_epoch` is stamped on the batch; an epoch older than one that already
    /// appended is refused ([`StorageError::StaleLeaderEpoch`]), so a deposed leader
    /// cannot write behind its successor's back.
    ///
    /// The batch is borrowed: its header is stamped in a copy and written ahead of the
    /// rest in one vectored write, so the caller's buffer (a slice of a request) is
    /// never copied in user space.
    pub fn append(
        &self,
        batch: impl AsRef<[u8]>,
        leader_epoch: u64,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let checked = check_batch(
            batch,
            self.config.max_batch_bytes,
            self.config.max_record_bytes,
        )?;
        self.append_checked(checked, leader_epoch, now_ms)
    }

    /// [`Log::append`] of a batch already checked by [`crate::check_batch`] (against
    /// limits no larger than this log's; otherwise it is checked again).
    pub fn append_checked<B: AsRef<[u8]>>(
        &self,
        batch: CheckedBatch<B>,
        leader_epoch: u64,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let mut header =
            if batch.checked_within(self.config.max_batch_bytes, self.config.max_record_bytes) {
                *batch.header()
            } else {
                self.validate(batch.bytes())?
            };
        let batch = batch.bytes();
        if header.is_lost_range() {
            // Only storage may say records were lost; a producer's batch holds records.
            return Err(RecordError::Malformed("a lost-range batch cannot be produced").into());
        }
        let mut state = self.lock_state()?;
        self.check_usable()?;
        if let Verdict::Duplicate(original) = state.producers.check(&header)? {
            return Ok(AppendOutcome {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
                max_timestamp_ms: original.max_timestamp_ms,
                duplicate: true,
            });
        }
        let base_offset = state.active().next_offset;
        header.base_offset = base_offset;
        header.leader_epoch = leader_epoch;
        // `check_batch` made sure the batch holds at least a whole header.
        let (head, rest) = batch.split_at(HEADER_LEN);
        let mut stamped = [0u8; HEADER_LEN];
        stamped.copy_from_slice(head);
        BatchHeader::set_base_offset(&mut stamped, base_offset);
        BatchHeader::set_leader_epoch(&mut stamped, leader_epoch);
        self.write_batch(&mut state, [&stamped, rest], &header, now_ms)
    }

    /// Appends a batch exactly as another replica's log holds it (offsets and epoch
    /// already stamped by the leader). It must start at this log's end. It is checked
    /// whole and against its CRC, not record by record, and the producer table learns
    /// it without judging it: the leader did both when it took it. A lost-range batch
    /// (the leader's records lost to damage) becomes a lost range here too; one that
    /// starts below this log's end keeps the records held here and covers the rest.
    pub fn append_replicated(
        &self,
        batch: impl AsRef<[u8]>,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let mut batch = Cow::Borrowed(batch.as_ref());
        let mut header = check_replica_batch(&batch, self.config.max_batch_bytes)?;
        let mut state = self.lock_state()?;
        self.check_usable()?;
        let end = state.active().next_offset;
        if header.is_lost_range() && header.base_offset < end {
            // The leader lost a range this log holds the start of (its damage is not
            // aligned with the batches here): keep what is held, take the rest as lost.
            if header.next_offset() <= end {
                return Ok(AppendOutcome {
                    base_offset: header.base_offset,
                    last_offset: header.last_offset(),
                    max_timestamp_ms: header.max_timestamp_ms,
                    duplicate: true,
                });
            }
            let rest = ferry_records::LostRange {
                base_offset: end,
                count: u32::try_from(header.next_offset() - end).unwrap_or(u32::MAX),
                leader_epoch: header.leader_epoch,
                timestamp_ms: header.max_timestamp_ms,
            };
            batch = Cow::Owned(
                ferry_records::lost_range_batch(rest, HEADER_LEN)
                    .ok_or(RecordError::Malformed("an empty lost range"))?,
            );
            header = BatchHeader::parse(&batch)?;
        }
        if header.base_offset != end {
            return Err(StorageError::ReplicaOffsetMismatch {
                expected: end,
                received: header.base_offset,
            });
        }
        let outcome = self.write_batch(&mut state, [&batch, &[]], &header, now_ms)?;
        if header.is_lost_range() {
            // The leader's copy lost these records too: this log has the same gap, and
            // says so like a log that found damage itself.
            state
                .lost_ranges
                .push(header.base_offset..header.next_offset());
            persist_lost(&self.dir, &state.lost_ranges).map_err(|err| self.poison(err))?;
        }
        Ok(outcome)
    }

    /// Checks size and format before any lock is taken (the CPU-heavy part).
    fn validate(&self, batch: &[u8]) -> Result<BatchHeader, StorageError> {
        check_batch(
            batch,
            self.config.max_batch_bytes,
            self.config.max_record_bytes,
        )
        .map(|checked| *checked.header())
    }

    /// Writes a stamped batch, given as two consecutive parts, at the log end: epoch
    /// history, roll, write, indexes, producer table, end offset.
    fn write_batch(
        &self,
        state: &mut LogState,
        batch: [&[u8]; 2],
        header: &BatchHeader,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        let base_offset = header.base_offset;
        base_offset
            .checked_add(u64::from(header.record_count))
            .ok_or(RecordError::Malformed("offsets exhausted"))?;
        if state.epochs.begin(header.leader_epoch, base_offset)? {
            // Written before the batch: a crash in between leaves an epoch that
            // appended nothing, which the next epoch's start replaces.
            if let Err(err) = state.epochs.persist(&self.dir) {
                if let Some(full) = disk_full(&err) {
                    // The file still holds the old history; forget the new epoch too.
                    state.epochs.truncate(base_offset);
                    return Err(full);
                }
                return Err(self.poison(err));
            }
        }
        if self.should_roll(state.active(), header, now_ms) {
            self.roll(state)?;
        }
        let active = state.active_mut();
        let position = active.size;
        if let Err(err) = self
            .disk
            .write_at(&active.file, &active.path, batch, position)
        {
            // A full disk refuses the write: undo whatever part of it landed, and the
            // log is as it was. Anything else (or an undo that fails) poisons it.
            if let Some(full) = disk_full(&err)
                && active.file.set_len(position).is_ok()
            {
                return Err(full);
            }
            return Err(self.poison(err));
        }
        active.track_batch(header, position, self.config.index_interval_bytes);
        if position == 0 {
            active.roll_clock_ms = Some(now_ms);
        }
        state.producers.record(header);
        self.end_offset
            .store(header.next_offset(), Ordering::Release);
        Ok(AppendOutcome {
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp_ms: header.max_timestamp_ms,
            duplicate: false,
        })
    }

    /// The newest leader epoch that appended to this log, if any.
    pub fn latest_epoch(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.lock_state()?.epochs.latest())
    }

    /// The leader-epoch history, oldest first.
    pub fn epoch_history(&self) -> Result<Vec<EpochStart>, StorageError> {
        Ok(self.lock_state()?.epochs.entries().to_vec())
    }

    /// The newest epoch at or below `epoch` that this log holds, and the offset where
    /// its batches end here: what a replica compares to find where its log diverged.
    pub fn end_offset_for_epoch(&self, epoch: u64) -> Result<(u64, u64), StorageError> {
        let state = self.lock_state()?;
        Ok(state
            .epochs
            .end_offset_for(epoch, state.active().next_offset))
    }

    fn should_roll(&self, active: &Segment, header: &BatchHeader, now_ms: i64) -> bool {
        if active.is_empty() {
            return false;
        }
        let len = header.total_len() as u64;
        let full = active.size + len > self.config.segment_bytes;
        let old = active.roll_clock_ms.is_some_and(|since| {
            i128::from(now_ms) - i128::from(since) >= i128::from(self.config.segment_ms)
        });
        // Index entries hold u32 relative offsets and positions.
        let offsets_exhausted = header.next_offset() - active.base_offset > u64::from(u32::MAX);
        let positions_exhausted = active.size + len > u64::from(u32::MAX);
        full || old || offsets_exhausted || positions_exhausted
    }

    /// Seals the active segment and starts a new one at the end offset.
    fn roll(&self, state: &mut LogState) -> Result<(), StorageError> {
        let synced = self.config.durability != Durability::None;
        let old = state.active_mut();
        if synced && let Err(err) = self.disk.sync(&old.file, &old.path) {
            return Err(self.poison(err));
        }
        let new_base = old.next_offset;
        // Index files and the recovery point are written atomically and the new
        // segment is created last: a full disk fails the roll before anything changes
        // that recovery relies on, so it refuses the write and the next one rolls.
        let refuse = |err: StorageError| disk_full(&err).unwrap_or_else(|| self.poison(err));
        let sealed = old
            .write_index_files(&self.dir)
            .map(|()| (Arc::clone(&old.file), old.path.clone()));
        let sealed = sealed.map_err(refuse)?;
        if synced {
            self.durable_end.fetch_max(new_base, Ordering::AcqRel);
            write_recovery_point(&self.dir, new_base).map_err(refuse)?;
            state.recovery_point = new_base;
        }
        let segment = Segment::create(&self.dir, new_base).map_err(refuse)?;
        if !synced {
            state.unsynced.push(sealed);
        }
        state.segments.push(segment);
        Ok(())
    }

    /// Group commit: returns once everything below `end_offset` is fsynced. One caller
    /// fsyncs while the others wait and then share its result; appends continue meanwhile.
    pub fn wait_durable(&self, end_offset: u64) -> Result<(), StorageError> {
        let mut commit = self.lock_commit()?;
        loop {
            if let Some(reason) = self.poison.get() {
                return Err(StorageError::Poisoned {
                    reason: reason.clone(),
                });
            }
            if self.durable_end.load(Ordering::Acquire) >= end_offset {
                return Ok(());
            }
            let end = self.end_offset.load(Ordering::Acquire);
            if end_offset > end {
                return Err(StorageError::OffsetOutOfRange {
                    requested: end_offset,
                    start: self.start_offset(),
                    end,
                });
            }
            if commit.syncing {
                commit = self
                    .committed
                    .wait(commit)
                    .map_err(|_| StorageError::Poisoned {
                        reason: "a thread panicked during group commit".into(),
                    })?;
                continue;
            }
            commit.syncing = true;
            drop(commit);
            let round = self.sync_round();
            commit = self.lock_commit()?;
            commit.syncing = false;
            if let Ok((target, generation)) = round
                && generation == commit.generation
                && self.poison.get().is_none()
            {
                self.durable_end.fetch_max(target, Ordering::AcqRel);
            }
            self.committed.notify_all();
            round?;
        }
    }

    /// One leader round: fsync every file holding unsynced data. Returns the end offset
    /// those files covered and the truncation generation it was taken in.
    ///
    /// Then drops from the page cache what these fsyncs made durable beyond the
    /// configured window (see `page_cache`).
    fn sync_round(&self) -> Result<(u64, u64), StorageError> {
        let (files, target, generation, releases) = {
            let mut state = self.lock_state()?;
            let mut files = std::mem::take(&mut state.unsynced);
            let active = state.active();
            files.push((Arc::clone(&active.file), active.path.clone()));
            let target = active.next_offset;
            let generation = self.lock_commit()?.generation;
            // Every byte below each segment's size is covered by this round's fsyncs
            // (sealed segments were fsynced when they rolled, or are in `files`).
            let releases = match self.config.page_cache_window_bytes {
                Some(window) => page_cache::take_releases(&mut state.segments, window),
                None => Vec::new(),
            };
            (files, target, generation, releases)
        };
        for (file, path) in &files {
            if let Err(err) = self.disk.sync(file, path) {
                return Err(self.poison(err));
            }
        }
        for release in &releases {
            self.disk.release_cache(release);
        }
        Ok((target, generation))
    }

    /// fsyncs everything written so far (for `Interval` mode and shutdown); returns the
    /// durable end offset.
    pub fn flush(&self) -> Result<u64, StorageError> {
        self.check_usable()?;
        self.wait_durable(self.end_offset())?;
        Ok(self.durable_end_offset())
    }

    /// Whole batches from the one holding `offset`: at most `max_bytes` (but at least one
    /// batch if any is available), none whose records reach `max_offset` (exclusive).
    /// Reads from one segment per call; `next_offset` continues in the next one.
    ///
    /// A batch whose CRC fails (damage since recovery last read it) is confined to a
    /// lost range, which the read then returns in its place: readers get past it, and
    /// [`Log::lost_records`] reports it.
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<ReadResult, StorageError> {
        let Some((view, segment_base)) = self.view_for(offset, max_offset)? else {
            return Ok(ReadResult {
                bytes: Vec::new(),
                batches: 0,
                next_offset: offset,
            });
        };
        let mut read = match view.read_from(offset, max_bytes, max_offset) {
            Err(StorageError::DamagedBatch { .. } | StorageError::Corrupt { .. }) => {
                self.confine_damage_in(segment_base)?;
                match self.view_for(offset, max_offset)? {
                    Some((view, _)) => view.read_from(offset, max_bytes, max_offset)?,
                    None => ReadResult {
                        bytes: Vec::new(),
                        batches: 0,
                        next_offset: offset,
                    },
                }
            }
            other => other?,
        };
        self.stamp_epochs(&mut read.bytes)?;
        Ok(read)
    }

    /// Whole batches from the one holding `offset`, as [`Log::read`] would return them,
    /// located by their headers without reading their bodies or checking their CRCs:
    /// for a caller that sends them on unread and whose receiver checks each CRC. An
    /// empty range when nothing is there yet; `None` when [`Log::read`] must serve the
    /// request instead (what looks like damage, which the read confines; a batch whose
    /// stored epoch differs from the history, which the read corrects; many small
    /// batches).
    pub fn locate(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<Option<BatchRange>, StorageError> {
        let Some((view, segment_base)) = self.view_for(offset, max_offset)? else {
            let file = Arc::clone(&self.lock_state()?.active().file);
            return Ok(Some(BatchRange {
                file,
                position: 0,
                len: 0,
                batches: 0,
                next_offset: offset,
            }));
        };
        // Only the tail kept in the page cache: `sendfile` reads what is not cached on
        // the caller's thread, where a copying read runs on a blocking one.
        let window = self
            .config
            .page_cache_window_bytes
            .unwrap_or(PAGE_CACHE_WINDOW_BYTES_DEFAULT)
            .max(MIN_LOCATED_WINDOW_BYTES);
        if view.size.saturating_sub(view.start_position) > window {
            return Ok(None);
        }
        let Ok(Some((range, batches))) = view.locate_from(offset, max_bytes, max_offset) else {
            return Ok(None);
        };
        let state = self.lock_state()?;
        if state.active().base_offset != segment_base {
            return Ok(None);
        }
        let stamped = batches.iter().all(|batch| {
            state
                .epochs
                .epoch_at(batch.base_offset)
                .is_none_or(|epoch| epoch == batch.leader_epoch)
        });
        Ok(stamped.then_some(range))
    }

    /// Stamps each batch read with the epoch the leader-epoch history gives its offset.
    /// The epoch field is outside the CRC (leaders stamp it), so a flipped bit there
    /// passes every check; the history (CRC-protected) is the authority, and a replica
    /// copies the epoch of what it fetches into its own history.
    fn stamp_epochs(&self, bytes: &mut [u8]) -> Result<(), StorageError> {
        let state = self.lock_state()?;
        let mut position = 0;
        while let Some(rest) = bytes.get_mut(position..) {
            let Ok(header) = BatchHeader::parse(rest) else {
                break;
            };
            if let Some(epoch) = state.epochs.epoch_at(header.base_offset)
                && epoch != header.leader_epoch
            {
                warn!(
                    dir = %self.dir.display(),
                    offset = header.base_offset,
                    stored = header.leader_epoch,
                    epoch,
                    "a batch's leader epoch differs from the epoch history (damage outside \
                     the CRC): served with the history's"
                );
                BatchHeader::set_leader_epoch(rest, epoch);
            }
            position += header.total_len();
        }
        Ok(())
    }

    /// Takes what a read of `offset` needs under the lock; `None` when there is nothing
    /// to read below `max_offset` yet.
    fn view_for(
        &self,
        offset: u64,
        max_offset: u64,
    ) -> Result<Option<(SegmentView, u64)>, StorageError> {
        let state = self.lock_state()?;
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let (start, end) = (self.start_offset(), self.end_offset());
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                start,
                end,
            });
        }
        if offset >= end.min(max_offset) {
            return Ok(None);
        }
        let index = state.segment_for(offset);
        let segment = &state.segments[index];
        let relative = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
        let view = state.view(
            index,
            u64::from(segment.index.position_for_offset(relative)),
        );
        Ok(Some((view, segment.base_offset)))
    }

    /// Scans the segment starting at `segment_base` in full, as recovery would, and
    /// confines each damaged place in it to a lost range (a read found one). Appends
    /// wait meanwhile; damage is rare and a segment is bounded by `segment_bytes`.
    fn confine_damage_in(&self, segment_base: u64) -> Result<(), StorageError> {
        let mut state = self.lock_state()?;
        let Ok(index) = state
            .segments
            .binary_search_by_key(&segment_base, |s| s.base_offset)
        else {
            return Ok(());
        };
        let before = match index.checked_sub(1) {
            Some(prev) => {
                let prev = &state.segments[prev];
                (prev.last_epoch, prev.max_timestamp_ms.max(0))
            }
            None => (0, 0),
        };
        let sealed = index + 1 < state.segments.len();
        let limit = match state.segments.get(index + 1) {
            Some(next) => Limit::NextSegment(next.base_offset),
            // Everything in the active segment was written whole under the lock: it
            // holds exactly the offsets up to its end.
            None => Limit::NextSegment(state.segments[index].next_offset),
        };
        let interval = self.config.index_interval_bytes;
        let lost = scan_confining(&mut state.segments[index], limit, before, interval)?;
        if lost.is_empty() {
            return Ok(());
        }
        if sealed {
            state.segments[index].write_index_files(&self.dir)?;
        }
        state
            .lost_ranges
            .extend(lost.iter().map(|l| l.from_offset..l.to_offset));
        persist_lost(&self.dir, &state.lost_ranges)?;
        state.lost.extend(lost);
        Ok(())
    }

    /// The largest idempotent producer id among the producers this log remembers (a
    /// rebuilt metadata store must hand out ids above every one still in use).
    pub fn max_producer_id(&self) -> Result<Option<i64>, StorageError> {
        Ok(self.lock_state()?.producers.max_producer_id())
    }

    /// Every lost range still in the log, oldest first: offsets whose records were lost
    /// to damage on disk (found by this open or an earlier one) and that no truncation or
    /// retention has removed since. A replica with any is not a whole copy.
    pub fn lost_ranges(&self) -> Result<Vec<Range<u64>>, StorageError> {
        Ok(self.lock_state()?.lost_ranges.clone())
    }

    /// The offset where a recovery of this log cut a torn tail (bytes past the recovery
    /// point that did not validate, with nothing intact after them), until
    /// [`Log::forget_torn_tail`]. A torn write after the last fsync and a flipped bit in
    /// a synced last batch look alike, so a replica treats a cut as possible loss of
    /// data it acknowledged.
    pub fn torn_tail(&self) -> Result<Option<u64>, StorageError> {
        crate::repair::load_torn_tail(&self.dir)
    }

    /// Forgets the torn tail once the host has acted on it (left the in-sync sets).
    pub fn forget_torn_tail(&self) -> Result<(), StorageError> {
        crate::repair::forget_torn_tail(&self.dir)
    }

    /// Records lost to damage on disk since the log was opened (found by recovery or by
    /// reads), oldest first. Each is a lost-range batch in the log now.
    pub fn lost_records(&self) -> Result<Vec<LostRecords>, StorageError> {
        Ok(self.lock_state()?.lost.clone())
    }

    /// First offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.start_offset.load(Ordering::Acquire)
    }

    /// Next offset to assign (written, maybe not durable).
    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Everything below this offset is fsynced.
    pub fn durable_end_offset(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// What consumers may read below: the durable end in `Fsync` mode, else the end.
    pub fn visible_end_offset(&self) -> u64 {
        match self.config.durability {
            Durability::Fsync => self.durable_end_offset(),
            Durability::Interval | Durability::None => self.end_offset(),
        }
    }

    /// The first record with timestamp >= `timestamp_ms`, as `(offset, timestamp)`.
    /// Searches everything written, durable or not.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(u64, i64)>, StorageError> {
        let view = {
            let state = self.lock_state()?;
            if self.closed.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            let found = state
                .segments
                .iter()
                .position(|s| !s.is_empty() && s.max_timestamp_ms >= timestamp_ms);
            let Some(index) = found else { return Ok(None) };
            let position = state.segments[index]
                .index
                .position_for_timestamp(timestamp_ms);
            state.view(index, u64::from(position))
        };
        let Some((position, header)) = view.find_batch(|h| h.max_timestamp_ms >= timestamp_ms)?
        else {
            return Ok(None);
        };
        let bytes = view.read_batch(position, &header)?;
        let batch = ferry_records::Batch {
            header,
            bytes: &bytes,
        };
        for record in batch.records() {
            let record = record.map_err(|err| StorageError::Corrupt {
                path: view.path.clone(),
                position,
                reason: format!("undecodable record: {err}"),
            })?;
            if record.timestamp_ms >= timestamp_ms {
                return Ok(Some((record.offset, record.timestamp_ms)));
            }
        }
        Ok(None)
    }

    /// Deletes whole sealed segments, oldest first, while the log stays at least
    /// `retention_bytes` big without them or their newest record is older than
    /// `retention_ms` (age = `now_ms` - the segment's max timestamp).
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome, StorageError> {
        self.delete_oldest(|state| {
            if self.closed.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            let mut total: u64 = state.segments.iter().map(|s| s.size).sum();
            let sealed = state.segments.len() - 1;
            let mut count = 0;
            for segment in &state.segments[..sealed] {
                let by_size = self
                    .config
                    .retention_bytes
                    .is_some_and(|limit| total - segment.size >= limit);
                let by_age = self.config.retention_ms.is_some_and(|limit| {
                    i128::from(now_ms) - i128::from(segment.max_timestamp_ms) > i128::from(limit)
                });
                if !(by_size || by_age) {
                    break;
                }
                total -= segment.size;
                count += 1;
            }
            Ok(count)
        })
    }

    /// Deletes whole sealed segments whose every record is below `offset` (their next
    /// offset <= offset), oldest first; never the active segment. Returns what was removed.
    ///
    /// The start offset becomes the first remaining segment's base offset (at most
    /// `offset`, unless nothing was deleted), so it survives a reopen, and reads below it
    /// fail with [`StorageError::OffsetOutOfRange`] as after retention. Like retention,
    /// it leaves the recovery point and the producer table alone. Refuses a closed or
    /// poisoned log.
    pub fn delete_before(&self, offset: u64) -> Result<RetentionOutcome, StorageError> {
        self.delete_oldest(|state| {
            self.check_usable()?;
            let sealed = &state.segments[..state.segments.len() - 1];
            Ok(sealed
                .iter()
                .take_while(|s| s.next_offset <= offset)
                .count())
        })
    }

    /// Under the state lock, asks `choose` how many of the oldest segments to delete
    /// (clamped to the sealed ones), takes them out of the log and moves the start offset;
    /// then, outside it, removes their files oldest first, fsyncing the directory after
    /// each. One fsync per segment keeps the files on disk a contiguous run whatever the
    /// file system persists before a crash. If a removal fails, that segment and the
    /// later ones stay queued, and the next call removes them before anything newer.
    fn delete_oldest(
        &self,
        choose: impl FnOnce(&LogState) -> Result<usize, StorageError>,
    ) -> Result<RetentionOutcome, StorageError> {
        let mut removing = self.lock_removing()?;
        {
            let mut state = self.lock_state()?;
            let count = choose(&state)?.min(state.segments.len() - 1);
            removing.extend(state.segments.drain(..count));
            let start = state.segments[0].base_offset;
            self.start_offset.store(start, Ordering::Release);
            state.clip_lost_ranges(&self.dir, start, self.end_offset())?;
        }
        // Readers may still hold these files open; unlinking does not disturb them.
        let mut outcome = RetentionOutcome::default();
        while let Some(segment) = removing.front() {
            segment.remove_files()?;
            sync_dir(&self.dir)?;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.size;
            outcome.records_deleted += segment.next_offset - segment.base_offset;
            removing.pop_front();
        }
        Ok(outcome)
    }

    /// Removes the batches at and above `offset` (rounded down to a batch boundary;
    /// raised to the start offset) and returns the new end offset.
    pub fn truncate_to(&self, offset: u64) -> Result<u64, StorageError> {
        match self.truncate_once(offset) {
            // Finding the cut read a damaged batch (damage since recovery): confine it
            // like a read does, then cut.
            Err(StorageError::DamagedBatch { .. } | StorageError::Corrupt { .. }) => {
                let segment_base = {
                    let state = self.lock_state()?;
                    let target = offset.max(self.start_offset());
                    state.segments[state.segment_for(target)].base_offset
                };
                self.confine_damage_in(segment_base)?;
                self.truncate_once(offset)
            }
            other => other,
        }
    }

    /// One attempt of [`Log::truncate_to`].
    fn truncate_once(&self, offset: u64) -> Result<u64, StorageError> {
        let mut state = self.lock_state()?;
        self.check_usable()?;
        let end = self.end_offset();
        if offset >= end {
            return Ok(end);
        }
        let target = offset.max(self.start_offset());
        let index = state.segment_for(target);
        let segment = &state.segments[index];
        let relative = u32::try_from(target - segment.base_offset).unwrap_or(u32::MAX);
        let view = state.view(
            index,
            u64::from(segment.index.position_for_offset(relative)),
        );
        let (cut, cut_offset) = match view.find_batch(|h| crate::read::next_offset(h) > target)? {
            Some((position, header)) if header.base_offset <= target => {
                (position, header.base_offset)
            }
            found => {
                // The segment holds `target`, so a batch holding it must be found: a
                // damaged length or offset field (outside the CRC) skipped it. Nothing
                // is cut until the damage is confined (see `truncate_to`).
                let position = found.map_or(segment.size, |(position, _)| position);
                return Err(StorageError::Corrupt {
                    path: segment.path.clone(),
                    position,
                    reason: format!("no batch holds offset {target}"),
                });
            }
        };
        // Lowered before anything is removed: recovery marks offsets below the recovery
        // point that are missing as lost, and these are removed on purpose.
        if state.recovery_point > cut_offset {
            write_recovery_point(&self.dir, cut_offset).map_err(|err| self.poison(err))?;
            state.recovery_point = cut_offset;
        }
        let new_end = self
            .cut_segments(&mut state, index, cut, cut_offset)
            .map_err(|err| self.poison(err))?;
        if state.epochs.truncate(new_end)
            && let Err(err) = state.epochs.persist(&self.dir)
        {
            return Err(self.poison(err));
        }
        let start = self.start_offset();
        state
            .clip_lost_ranges(&self.dir, start, new_end)
            .map_err(|err| self.poison(err))?;
        let affected = state.producers.truncate(new_end);
        let LogState {
            segments,
            producers,
            ..
        } = &mut *state;
        reload_producers(segments, &affected, producers).map_err(|err| self.poison(err))?;
        self.end_offset.store(new_end, Ordering::Release);
        {
            let mut commit = self.lock_commit()?;
            commit.generation += 1;
            self.durable_end.fetch_min(new_end, Ordering::AcqRel);
        }
        if state.recovery_point > new_end {
            write_recovery_point(&self.dir, new_end).map_err(|err| self.poison(err))?;
            state.recovery_point = new_end;
        }
        Ok(new_end)
    }

    /// Removes every batch and restarts the log, empty, at `offset` (above its end):
    /// a replica too far behind its leader to fetch what it lacks (the leader no
    /// longer holds it) starts over at the leader's log start.
    ///
    /// The recovery point drops to 0 first and the old segments go newest first, each
    /// removal durable, before the new segment exists: recovery marks missing offsets
    /// below the recovery point, and gaps between segments, as lost, so a crash part-way
    /// must leave a shorter contiguous prefix (or nothing), which the replica simply
    /// fetches or resets again. Appends and reads wait meanwhile; this is rare.
    pub fn reset_to(&self, offset: u64) -> Result<(), StorageError> {
        let mut removing = self.lock_removing()?;
        let mut state = self.lock_state()?;
        self.check_usable()?;
        let end = self.end_offset();
        if offset <= end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                start: self.start_offset(),
                end,
            });
        }
        write_recovery_point(&self.dir, 0).map_err(|err| self.poison(err))?;
        state.recovery_point = 0;
        // Segments an earlier deletion left queued are older than every kept one.
        while let Some(segment) = removing.front() {
            segment.remove_files()?;
            sync_dir(&self.dir)?;
            removing.pop_front();
        }
        while let Some(newest) = state.segments.last() {
            let removed = newest.remove_files().and_then(|()| sync_dir(&self.dir));
            if let Err(err) = removed {
                // What is left is a contiguous prefix, still on disk: the log stays whole.
                return Err(self.poison(err));
            }
            if state.segments.len() == 1 {
                break;
            }
            state.segments.pop();
        }
        let segment = Segment::create(&self.dir, offset).map_err(|err| self.poison(err))?;
        // Readers may still hold the old file open; unlinking did not disturb them.
        state.segments = vec![segment];
        state.unsynced.clear();
        state.epochs.clear();
        state
            .epochs
            .persist(&self.dir)
            .map_err(|err| self.poison(err))?;
        state.producers = ProducerTable::new(self.config.max_producers);
        state.lost_ranges.clear();
        persist_lost(&self.dir, &[]).map_err(|err| self.poison(err))?;
        write_recovery_point(&self.dir, offset).map_err(|err| self.poison(err))?;
        state.recovery_point = offset;
        self.start_offset.store(offset, Ordering::Release);
        self.end_offset.store(offset, Ordering::Release);
        let mut commit = self.lock_commit()?;
        commit.generation += 1;
        self.durable_end.store(offset, Ordering::Release);
        Ok(())
    }

    /// Deletes the segments after `index`, cuts segment `index` at byte `cut`, and
    /// rescans it as the new active segment. Newest first, each deletion made durable
    /// before the next: recovery fills a gap between segments with a lost range (it
    /// keeps every intact segment), so a crash part-way must leave a shorter but
    /// contiguous log, which the caller simply truncates again.
    fn cut_segments(
        &self,
        state: &mut LogState,
        index: usize,
        cut: u64,
        cut_offset: u64,
    ) -> Result<u64, StorageError> {
        for later in state.segments.drain(index + 1..).rev() {
            later.remove_files()?;
            sync_dir(&self.dir)?;
        }
        let segment = &state.segments[index];
        segment.cut_file(cut)?;
        segment.remove_index_files()?;
        sync_dir(&self.dir)?;
        let interval = self.config.index_interval_bytes;
        let end = state
            .active_mut()
            .load_by_scan(ScanMode::HeadersOnly, interval)?;
        if end.problem.is_some() {
            // Damage below the cut since recovery last read this segment: confine it
            // (the segment held every offset below the cut) rather than refuse the cut.
            let before = match index.checked_sub(1) {
                Some(prev) => {
                    let prev = &state.segments[prev];
                    (prev.last_epoch, prev.max_timestamp_ms.max(0))
                }
                None => (0, 0),
            };
            let limit = Limit::NextSegment(cut_offset);
            let lost = scan_confining(state.active_mut(), limit, before, interval)?;
            state
                .lost_ranges
                .extend(lost.iter().map(|l| l.from_offset..l.to_offset));
            persist_lost(&self.dir, &state.lost_ranges)?;
            state.lost.extend(lost);
        }
        Ok(state.active().next_offset)
    }

    /// Bytes of segment data stored.
    pub fn size_bytes(&self) -> u64 {
        self.lock_state()
            .map(|state| state.segments.iter().map(|s| s.size).sum())
            .unwrap_or(0)
    }

    /// Segments stored, the active one included.
    pub fn segment_count(&self) -> usize {
        self.lock_state()
            .map(|state| state.segments.len())
            .unwrap_or(0)
    }

    /// Bytes of segment files dropped from the OS page cache since open (see
    /// [`LogConfig::page_cache_window_bytes`]).
    pub fn cache_released_bytes(&self) -> u64 {
        self.disk.cache_released_bytes()
    }

    /// Segment fsyncs attempted since open (for metrics and tests).
    pub fn fsync_count(&self) -> u64 {
        self.disk.fsync_count()
    }

    /// Why the log is poisoned, once it is.
    pub fn failure(&self) -> Option<String> {
        self.poison.get().cloned()
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Flushes, then writes the active segment's index files, the producer snapshot and
    /// the recovery point, so the next open trusts everything without scanning. After
    /// this every call but the getters returns [`StorageError::Closed`]. Idempotent.
    pub fn close(&self) -> Result<(), StorageError> {
        {
            let _state = self.lock_state()?;
            if self.closed.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
        }
        // Appends stopped when `closed` was set; this fsyncs all they wrote.
        self.wait_durable(self.end_offset())?;
        let mut state = self.lock_state()?;
        let end = state.active().next_offset;
        state.active_mut().write_index_files(&self.dir)?;
        let snapshot = state.producers.encode(end);
        disk::write_atomically(&self.dir, PRODUCER_SNAPSHOT_FILE, &snapshot)?;
        write_recovery_point(&self.dir, end)?;
        state.recovery_point = end;
        Ok(())
    }
}

/// The disk-full refusal for an I/O error that says the disk (or quota) is full; `None`
/// for any other error.
fn disk_full(err: &StorageError) -> Option<StorageError> {
    let StorageError::Io { context, source } = err else {
        return None;
    };
    let full = matches!(
        source.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    );
    full.then(|| StorageError::DiskFull {
        context: context.clone(),
        reason: source.to_string(),
    })
}

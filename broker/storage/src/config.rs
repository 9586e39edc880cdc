//! Per-log configuration with documented defaults and named bounds.

use ferry_records::HEADER_LEN;

use crate::StorageError;

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after fsync; concurrent appends share one fsync (group commit).
    Fsync,
    /// The caller calls [`crate::Log::flush`] every N ms; acknowledged data younger than
    /// that may be lost on a power failure (not on a process crash).
    Interval,
    /// Never fsync except on [`crate::Log::flush`] and [`crate::Log::close`]; the OS decides.
    None,
}

/// Smallest allowed `segment_bytes`: one batch header. Tiny segments are only useful in tests.
pub const SEGMENT_BYTES_MIN: u64 = HEADER_LEN as u64;
/// Largest allowed `segment_bytes`: positions in the index are u32, and a segment may
/// overshoot by one batch, so this plus `MAX_BATCH_BYTES_MAX` stays below 4 GiB.
pub const SEGMENT_BYTES_MAX: u64 = 2 << 30;
/// Largest allowed `max_batch_bytes`.
pub const MAX_BATCH_BYTES_MAX: usize = 256 << 20;
/// Largest allowed `index_interval_bytes`.
pub const INDEX_INTERVAL_BYTES_MAX: u32 = 64 << 20;
/// Largest allowed `max_producers`.
pub const MAX_PRODUCERS_MAX: usize = 1_000_000;

/// Configuration of one log. See the field docs for defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// When writes are fsynced. Default [`Durability::Fsync`].
    pub durability: Durability,
    /// Roll when the active segment would grow past this. Default 128 MiB.
    pub segment_bytes: u64,
    /// Roll when the active segment's first append is this old. Default 7 days.
    pub segment_ms: u64,
    /// Delete old segments while the log would stay at least this big without them. Default unlimited.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this. Default forever.
    pub retention_ms: Option<u64>,
    /// Add a sparse index entry after at least this many bytes. Default 4096.
    pub index_interval_bytes: u32,
    /// Largest encoded record. Default 1 MiB.
    pub max_record_bytes: usize,
    /// Largest encoded batch. Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Idempotent producers remembered per log (least recently used evicted). Default 10 000.
    pub max_producers: usize,
    /// Bytes at the log's end left in the OS page cache once fsynced; older fsynced
    /// bytes are dropped from it (`posix_fadvise(DONTNEED)`), so reads near the end stay
    /// in memory and a long run recycles pages instead of filling memory. `None` leaves
    /// caching to the OS. Default 64 MiB. `Durability::None` logs are only released
    /// when flushed.
    pub page_cache_window_bytes: Option<u64>,
}

/// Default [`LogConfig::page_cache_window_bytes`].
pub const PAGE_CACHE_WINDOW_BYTES_DEFAULT: u64 = 64 << 20;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_bytes: 128 << 20,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: None,
            retention_ms: None,
            index_interval_bytes: 4096,
            max_record_bytes: 1 << 20,
            max_batch_bytes: 16 << 20,
            max_producers: 10_000,
            page_cache_window_bytes: Some(PAGE_CACHE_WINDOW_BYTES_DEFAULT),
        }
    }
}

impl LogConfig {
    /// Checks every field against its named bound.
    pub fn validate(&self) -> Result<(), StorageError> {
        let fail = |msg: String| Err(StorageError::InvalidConfig(msg));
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return fail(format!(
                "segment_bytes {} must be in [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 {
            return fail("segment_ms must be at least 1".into());
        }
        if self.index_interval_bytes == 0 || self.index_interval_bytes > INDEX_INTERVAL_BYTES_MAX {
            return fail(format!(
                "index_interval_bytes {} must be in [1, {INDEX_INTERVAL_BYTES_MAX}]",
                self.index_interval_bytes
            ));
        }
        if self.max_batch_bytes <= HEADER_LEN || self.max_batch_bytes > MAX_BATCH_BYTES_MAX {
            return fail(format!(
                "max_batch_bytes {} must be in [{}, {MAX_BATCH_BYTES_MAX}]",
                self.max_batch_bytes,
                HEADER_LEN + 1
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > self.max_batch_bytes {
            return fail(format!(
                "max_record_bytes {} must be in [1, max_batch_bytes = {}]",
                self.max_record_bytes, self.max_batch_bytes
            ));
        }
        if self.max_producers == 0 || self.max_producers > MAX_PRODUCERS_MAX {
            return fail(format!(
                "max_producers {} must be in [1, {MAX_PRODUCERS_MAX}]",
                self.max_producers
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        LogConfig::default().validate().expect("default config");
    }

    #[test]
    fn bounds_are_enforced() {
        let bad = [
            LogConfig {
                segment_bytes: 1,
                ..LogConfig::default()
            },
            LogConfig {
                segment_ms: 0,
                ..LogConfig::default()
            },
            LogConfig {
                index_interval_bytes: 0,
                ..LogConfig::default()
            },
            LogConfig {
                max_batch_bytes: 10,
                ..LogConfig::default()
            },
            LogConfig {
                max_record_bytes: 32 << 20,
                ..LogConfig::default()
            },
            LogConfig {
                max_producers: 0,
                ..LogConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(StorageError::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }
}

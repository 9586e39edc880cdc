//! How much freed memory the C allocator keeps for reuse (glibc's `mallopt`).
//!
//! Every produce request and replica fetch is one gRPC message of up to several
//! MiB, decoded into (and encoded from) a buffer allocated for it and freed soon
//! after. glibc serves allocations above its mmap threshold with a fresh `mmap` and
//! unmaps them on free, and gives the free top of each heap back to the OS above
//! its trim threshold. It raises both as it sees large blocks freed, yet with
//! messages of varying sizes freed on several threads (each with its own heap) it
//! still often unmaps or trims them, so message after message lands on fresh pages
//! that the kernel must fault in and zero. On the three-host benchmark that was
//! about a tenth of the brokers' CPU (page faults, zeroing, unmapping); with freed
//! memory kept, the same pages serve message after message (`docs/performance.md`).
//!
//! The thresholds are process-wide and set once, before the runtime starts threads.
//! Other C libraries (musl) have no such knobs: there the settings are ignored.

use thiserror::Error;

/// glibc's largest mmap threshold on 64-bit targets (half its per-thread heap size).
pub const MMAP_THRESHOLD_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Default mmap threshold: blocks up to this size come from the allocator's heaps.
pub const MMAP_THRESHOLD_BYTES_DEFAULT: usize = MMAP_THRESHOLD_BYTES_MAX;
/// Default trim threshold: free memory at a heap's top kept for reuse, per heap.
pub const TRIM_THRESHOLD_BYTES_DEFAULT: usize = 256 * 1024 * 1024;

/// The allocator's thresholds; 0 in both leaves glibc's own adaptive ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorSettings {
    /// Allocations larger than this are mapped on their own and unmapped on free.
    pub mmap_threshold_bytes: usize,
    /// Free bytes at the top of a heap beyond which the heap shrinks.
    pub trim_threshold_bytes: usize,
}

impl Default for AllocatorSettings {
    fn default() -> Self {
        Self {
            mmap_threshold_bytes: MMAP_THRESHOLD_BYTES_DEFAULT,
            trim_threshold_bytes: TRIM_THRESHOLD_BYTES_DEFAULT,
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The thresholds are set.
    Set(AllocatorSettings),
    /// Both were 0: glibc keeps its adaptive thresholds.
    Adaptive,
    /// This C library has no such setting.
    Unsupported,
}

/// A threshold the allocator refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AllocatorError {
    /// Outside what the setting accepts.
    #[error("--{flag} {value} is out of range: {reason}")]
    OutOfRange {
        /// The flag that carries it.
        flag: &'static str,
        /// The value given.
        value: usize,
        /// What the allocator accepts.
        reason: String,
    },
}

impl AllocatorSettings {
    /// Checks the values before anything is set, so a bad one changes nothing.
    pub fn validate(&self) -> Result<(), AllocatorError> {
        let adaptive = self.mmap_threshold_bytes == 0 && self.trim_threshold_bytes == 0;
        if adaptive {
            return Ok(());
        }
        if !(1..=MMAP_THRESHOLD_BYTES_MAX).contains(&self.mmap_threshold_bytes) {
            return Err(AllocatorError::OutOfRange {
                flag: "malloc-mmap-threshold-bytes",
                value: self.mmap_threshold_bytes,
                reason: format!(
                    "between 1 and {MMAP_THRESHOLD_BYTES_MAX} (0 only together with \
                     --malloc-trim-threshold-bytes 0)"
                ),
            });
        }
        if self.trim_threshold_bytes == 0 || i32::try_from(self.trim_threshold_bytes).is_err() {
            return Err(AllocatorError::OutOfRange {
                flag: "malloc-trim-threshold-bytes",
                value: self.trim_threshold_bytes,
                reason: format!(
                    "between 1 and {} (0 only together with --malloc-mmap-threshold-bytes 0)",
                    i32::MAX
                ),
            });
        }
        Ok(())
    }
}

/// Sets the thresholds for the whole process. Call it once, first thing in `main`.
pub fn apply(settings: AllocatorSettings) -> Result<Applied, AllocatorError> {
    settings.validate()?;
    if settings.mmap_threshold_bytes == 0 {
        return Ok(Applied::Adaptive);
    }
    set(settings)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(settings: AllocatorSettings) -> Result<Applied, AllocatorError> {
    // Both values were checked to fit an i32 (mmap's against a 32 MiB maximum).
    let to_int = |value: usize| i32::try_from(value).unwrap_or(i32::MAX);
    for (flag, option, value) in [
        (
            "malloc-mmap-threshold-bytes",
            libc::M_MMAP_THRESHOLD,
            settings.mmap_threshold_bytes,
        ),
        (
            "malloc-trim-threshold-bytes",
            libc::M_TRIM_THRESHOLD,
            settings.trim_threshold_bytes,
        ),
    ] {
        // SAFETY: `mallopt` takes plain integers and only changes the allocator's
        // parameters under its own locks; it touches no memory of ours.
        #[allow(unsafe_code)]
        let accepted = unsafe { libc::mallopt(option, to_int(value)) };
        if accepted != 1 {
            return Err(AllocatorError::OutOfRange {
                flag,
                value,
                reason: "refused by the C library's mallopt".to_owned(),
            });
        }
    }
    Ok(Applied::Set(settings))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_settings: AllocatorSettings) -> Result<Applied, AllocatorError> {
    Ok(Applied::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_refused_before_anything_is_set() {
        let too_big = AllocatorSettings {
            mmap_threshold_bytes: MMAP_THRESHOLD_BYTES_MAX + 1,
            ..AllocatorSettings::default()
        };
        assert!(matches!(
            apply(too_big),
            Err(AllocatorError::OutOfRange {
                flag: "malloc-mmap-threshold-bytes",
                ..
            })
        ));
        let half_adaptive = AllocatorSettings {
            trim_threshold_bytes: 0,
            ..AllocatorSettings::default()
        };
        assert!(matches!(
            half_adaptive.validate(),
            Err(AllocatorError::OutOfRange {
                flag: "malloc-trim-threshold-bytes",
                ..
            })
        ));
        let trim_too_big = AllocatorSettings {
            trim_threshold_bytes: usize::MAX,
            ..AllocatorSettings::default()
        };
        assert!(trim_too_big.validate().is_err());
    }

    #[test]
    fn zero_in_both_leaves_the_adaptive_thresholds() {
        let adaptive = AllocatorSettings {
            mmap_threshold_bytes: 0,
            trim_threshold_bytes: 0,
        };
        assert_eq!(apply(adaptive), Ok(Applied::Adaptive));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_defaults() {
        let defaults = AllocatorSettings::default();
        assert_eq!(apply(defaults), Ok(Applied::Set(defaults)));
    }
}

//! The disk-pressure event (docs/operations.md): a warning once the data
//! directory's file system has less than `--disk-warn-free-percent` free, and a note
//! once it has room again: logged when the threshold is crossed, not at every check.

/// A crossing of the free-space threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// Free space fell below the threshold.
    Low,
    /// Free space is at or above the threshold again.
    Relieved,
}

/// Whether the data directory was short of space at the last check.
#[derive(Debug, Clone)]
pub struct DiskPressure {
    threshold_percent: u8,
    low: bool,
}

impl DiskPressure {
    /// Watches for less than `threshold_percent` free; 0 never warns.
    pub fn new(threshold_percent: u8) -> Self {
        Self {
            threshold_percent,
            low: false,
        }
    }

    /// Takes one reading of `free` out of `total` bytes; the crossing, if any.
    pub fn observe(&mut self, free: u64, total: u64) -> Option<Crossing> {
        if self.threshold_percent == 0 || total == 0 {
            return None;
        }
        // free / total < threshold / 100, in integers.
        let low = u128::from(free) * 100 < u128::from(total) * u128::from(self.threshold_percent);
        match (self.low, low) {
            (false, true) => {
                self.low = true;
                Some(Crossing::Low)
            }
            (true, false) => {
                self.low = false;
                Some(Crossing::Relieved)
            }
            _ => None,
        }
    }

    /// Reads the file system holding `data_dir` and logs a crossing.
    pub fn check(&mut self, data_dir: &std::path::Path) {
        let fs = match rustix::fs::statvfs(data_dir) {
            Ok(fs) => fs,
            Err(err) => {
                tracing::debug!(%err, "cannot read the data directory's free space");
                return;
            }
        };
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        let total = fs.f_blocks.saturating_mul(fs.f_frsize);
        match self.observe(free, total) {
            Some(Crossing::Low) => tracing::warn!(
                data_dir = %data_dir.display(),
                free_bytes = free,
                size_bytes = total,
                threshold_percent = self.threshold_percent,
                "data directory nearly full: writes are refused once it is full"
            ),
            Some(Crossing::Relieved) => tracing::info!(
                data_dir = %data_dir.display(),
                free_bytes = free,
                size_bytes = total,
                "data directory has room again"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crossing_is_reported_once_each_way() {
        let mut pressure = DiskPressure::new(10);
        assert_eq!(pressure.observe(50, 100), None);
        assert_eq!(pressure.observe(9, 100), Some(Crossing::Low));
        assert_eq!(pressure.observe(5, 100), None, "still low: said already");
        assert_eq!(pressure.observe(10, 100), Some(Crossing::Relieved));
        assert_eq!(pressure.observe(90, 100), None);
        assert_eq!(DiskPressure::new(0).observe(0, 100), None, "0 turns it off");
    }
}

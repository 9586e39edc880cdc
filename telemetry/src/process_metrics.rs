//! The standard `process_*` metrics (CPU seconds, resident and virtual memory, open
//! and maximum file descriptors, start time), read from `/proc` at each scrape, as
//! every Prometheus client library exports them. Elsewhere than Linux they are
//! absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The process's own figures, for a scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: i64,
    /// Virtual memory, in bytes.
    pub virtual_memory_bytes: i64,
    /// Open file descriptors.
    pub open_fds: i64,
    /// The soft limit on file descriptors.
    pub max_fds: i64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Parses `/proc/self/stat` (`stat`), given the clock ticks per second, the page
/// size and the boot time (seconds since the epoch, from `/proc/stat`'s `btime`).
fn from_stat(stat: &str, ticks: f64, page: i64, boot_time: f64) -> Option<(f64, i64, i64, f64)> {
    // The command name (field 2) is in parentheses and may hold spaces; the fields
    // after the last ')' start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = (field(14)? + field(15)?) / ticks;
    let start = boot_time + field(22)? / ticks;
    let virtual_bytes = field(23)? as i64;
    let resident = field(24)? as i64 * page;
    Some((cpu, resident, virtual_bytes, start))
}

/// `btime` from `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads this process's figures now; `None` where `/proc` is not there.
pub fn read() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page = i64::try_from(rustix::param::page_size()).ok()?;
    let (cpu_seconds, resident_memory_bytes, virtual_memory_bytes, start_time_seconds) =
        from_stat(&stat, ticks, page, boot)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
    Some(ProcessFigures {
        cpu_seconds,
        resident_memory_bytes,
        virtual_memory_bytes,
        open_fds,
        max_fds,
        start_time_seconds,
    })
}

/// Exports [`read`] at each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(figures) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(figures.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                figures.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                figures.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                figures.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                figures.max_fds,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let start = ConstGauge::new(figures.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            None,
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // pid (comm with ) and spaces) state ppid … utime=250 stime=50 … starttime=1000
        // vsize=4096000 rss=300
        let mut fields = vec!["0"; 50];
        fields[14 - 3] = "250";
        fields[15 - 3] = "50";
        fields[22 - 3] = "1000";
        fields[23 - 3] = "4096000";
        fields[24 - 3] = "300";
        let stat = format!("42 (a (b) c) {}", fields.join(" "));
        let (cpu, resident, virtual_bytes, start) =
            from_stat(&stat, 100.0, 4096, 1_700_000_000.0).expect("parsed");
        assert_eq!(cpu, 3.0);
        assert_eq!(resident, 300 * 4096);
        assert_eq!(virtual_bytes, 4_096_000);
        assert_eq!(start, 1_700_000_010.0);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn this_process_reports_itself() {
        let figures = read().expect("/proc is there");
        assert!(figures.resident_memory_bytes > 0 && figures.open_fds > 0);
        assert!(figures.max_fds >= figures.open_fds);
    }
}

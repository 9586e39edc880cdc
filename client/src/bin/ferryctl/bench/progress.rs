//! A progress line on stderr for long bench runs, only when stderr is a terminal:
//! messages sent and received so far and the rate over the last second, redrawn in
//! place each second and erased at the end (reports and pipes never see it).
//!
//! The counters are process-wide: ferryctl runs one bench per process, and the
//! workers that bump them are spread over tasks that share nothing else.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

static SENT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_secs(1);

/// Counts `messages` as sent (acknowledged or not).
pub fn sent(messages: u64) {
    SENT.fetch_add(messages, Ordering::Relaxed);
}

/// Counts `messages` as received.
pub fn received(messages: u64) {
    RECEIVED.fetch_add(messages, Ordering::Relaxed);
}

/// The progress line while it is shown; erased when dropped.
pub struct Progress {
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts redrawing the line, when stderr is a terminal.
    pub fn start() -> Self {
        let ticker = std::io::stderr()
            .is_terminal()
            .then(|| tokio::spawn(redraw()));
        Self { ticker }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

async fn redraw() {
    let start = Instant::now();
    let mut before = (0, 0);
    let mut interval = tokio::time::interval(REDRAW);
    interval.tick().await;
    loop {
        interval.tick().await;
        let now = (
            SENT.load(Ordering::Relaxed),
            RECEIVED.load(Ordering::Relaxed),
        );
        let line = line(now, before, start.elapsed());
        before = now;
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }
}

/// The text of the line for counts `now` (sent, received), `before` one redraw ago.
fn line(now: (u64, u64), before: (u64, u64), elapsed: Duration) -> String {
    let mut parts = Vec::new();
    if now.0 > 0 {
        parts.push(format!("sent {} ({}/s)", now.0, now.0 - before.0));
    }
    if now.1 > 0 {
        parts.push(format!("received {} ({}/s)", now.1, now.1 - before.1));
    }
    if parts.is_empty() {
        parts.push("starting".to_owned());
    }
    format!("{}s: {}", elapsed.as_secs(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_totals_and_the_last_seconds_rate() {
        let shown = line((3_000, 0), (1_000, 0), Duration::from_secs(2));
        assert_eq!(shown, "2s: sent 3000 (2000/s)");
        let shown = line((10, 4), (10, 1), Duration::from_secs(7));
        assert_eq!(shown, "7s: sent 10 (0/s), received 4 (3/s)");
        assert_eq!(line((0, 0), (0, 0), Duration::ZERO), "0s: starting");
    }
}

//! Bench results: counts, a latency histogram, and how they are printed.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::output::{self, OutputFormat};

/// Highest latency the histograms track: one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
}

/// Records `count` samples of `latency`, clamped into the tracked range.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration, count: u64) {
    let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
    // Within bounds by the clamp above, so this cannot fail.
    let _ = histogram.record_n(us, count);
}

/// What one bench run measured.
#[derive(Debug)]
pub struct Report {
    /// `produce`, `consume` or `e2e`.
    pub mode: &'static str,
    /// Messages acknowledged (produce) or received (consume, e2e).
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Messages that failed.
    pub failed: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latency samples in microseconds.
    pub latency: Histogram<u64>,
    /// What the latency measures, for text output.
    pub latency_label: &'static str,
    /// The settings of the run.
    pub config: serde_json::Value,
    /// Produce only: per leading host, its partitions and the messages it
    /// acknowledged (one host on a standalone broker).
    pub by_leader: Option<serde_json::Value>,
    /// Produce only: how long each quarter of the messages took to be acknowledged.
    pub quarters: Option<Vec<Duration>>,
}

impl Report {
    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The single JSON document printed with `--output json`.
    pub fn to_json(&self) -> serde_json::Value {
        let seconds = self.seconds();
        let mut value = json!({
            "mode": self.mode,
            "messages": self.messages,
            "bytes": self.bytes,
            "failed": self.failed,
            "seconds": round(seconds, 3),
            "msgs_per_sec": round(self.messages as f64 / seconds, 1),
            "mb_per_sec": round(self.bytes as f64 / 1e6 / seconds, 2),
            "latency_ms": latency_json(&self.latency),
            "config": self.config,
        });
        if let (Some(by_leader), Some(object)) = (&self.by_leader, value.as_object_mut()) {
            object.insert("by_leader".to_owned(), by_leader.clone());
        }
        if let (Some(quarters), Some(object)) = (&self.quarters, value.as_object_mut()) {
            object.insert("quarters".to_owned(), self.quarters_json(quarters));
        }
        value
    }

    /// Each quarter's rate: a quarter of the messages (and bytes) over its time.
    fn quarters_json(&self, quarters: &[Duration]) -> serde_json::Value {
        quarters
            .iter()
            .map(|length| {
                let seconds = length.as_secs_f64().max(1e-9);
                json!({
                    "seconds": round(seconds, 3),
                    "msgs_per_sec": round(self.messages as f64 / 4.0 / seconds, 1),
                    "mb_per_sec": round(self.bytes as f64 / 4.0 / 1e6 / seconds, 2),
                })
            })
            .collect()
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let seconds = self.seconds();
        let mut text = format!(
            "{}: {} messages, {} in {:.2} s\n",
            self.mode,
            self.messages,
            output::bytes(self.bytes),
            seconds
        );
        text.push_str(&format!(
            "throughput: {:.0} msgs/s, {:.1} MB/s\n",
            self.messages as f64 / seconds,
            self.bytes as f64 / 1e6 / seconds
        ));
        text.push_str(&format!(
            "{} latency (ms): {}\n",
            self.latency_label,
            latency_text(&self.latency)
        ));
        if let Some(hosts) = self.by_leader.as_ref().and_then(|v| v.as_object()) {
            let summary: Vec<String> = hosts
                .iter()
                .map(|(host, led)| {
                    format!("{host} {} (partitions {})", led["acked"], led["partitions"])
                })
                .collect();
            text.push_str(&format!("acked by leader: {}\n", summary.join(", ")));
        }
        if let Some(quarters) = self.quarters.as_ref().filter(|q| !q.is_empty()) {
            let rates: Vec<String> = quarters
                .iter()
                .map(|length| {
                    let rate = self.messages as f64 / 4.0 / length.as_secs_f64().max(1e-9);
                    format!("{rate:.0}")
                })
                .collect();
            text.push_str(&format!("by quarter (msgs/s): {}\n", rates.join(", ")));
        }
        if self.failed > 0 {
            text.push_str(&format!("failed: {} messages\n", self.failed));
        }
        text
    }

    /// Prints the report in the chosen format.
    pub fn print(&self, format: OutputFormat) -> anyhow::Result<()> {
        match format {
            OutputFormat::Text => print!("{}", self.to_text()),
            OutputFormat::Json => output::print_json(&self.to_json())?,
        }
        Ok(())
    }
}

/// A latency quantile in milliseconds (0 when there are no samples).
pub fn percentile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// The largest latency in milliseconds (0 when there are no samples).
pub fn max_ms(histogram: &Histogram<u64>) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.max() as f64 / 1000.0
}

/// The `latency_ms` object of JSON reports: p50, p99, p99.9 and max in milliseconds.
pub fn latency_json(histogram: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": round(percentile_ms(histogram, 0.50), 3),
        "p99": round(percentile_ms(histogram, 0.99), 3),
        "p999": round(percentile_ms(histogram, 0.999), 3),
        "max": round(max_ms(histogram), 3),
    })
}

/// The same quantiles as one line of text.
pub fn latency_text(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        percentile_ms(histogram, 0.50),
        percentile_ms(histogram, 0.99),
        percentile_ms(histogram, 0.999),
        max_ms(histogram)
    )
}

/// Rounds to `digits` decimals so reports do not print float noise.
pub fn round(value: f64, digits: i32) -> f64 {
    let factor = 10f64.powi(digits);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report_has_the_documented_shape() -> anyhow::Result<()> {
        let mut latency = histogram()?;
        record(&mut latency, Duration::from_millis(2), 99);
        record(&mut latency, Duration::from_millis(40), 1);
        let report = Report {
            mode: "produce",
            messages: 1_000,
            bytes: 100_000,
            failed: 0,
            elapsed: Duration::from_millis(500),
            latency,
            latency_label: "send→ack",
            config: json!({ "partitions": 4 }),
            by_leader: Some(json!({ "h0": { "partitions": [0, 1], "acked": 1_000 } })),
            quarters: Some(vec![Duration::from_millis(250); 4]),
        };
        let value = report.to_json();
        assert_eq!(value["mode"], "produce");
        assert_eq!(value["msgs_per_sec"], 2000.0);
        assert_eq!(value["mb_per_sec"], 0.2);
        assert_eq!(value["latency_ms"]["p50"], 2.0);
        assert!(value["latency_ms"]["max"].as_f64().unwrap_or(0.0) >= 40.0);
        assert_eq!(value["config"]["partitions"], 4);
        assert_eq!(value["by_leader"]["h0"]["acked"], 1_000);
        // 250 messages in each 0.25 s quarter.
        assert_eq!(value["quarters"][3]["msgs_per_sec"], 1000.0);
        assert!(
            report
                .to_text()
                .contains("throughput: 2000 msgs/s, 0.2 MB/s")
        );
        Ok(())
    }
}

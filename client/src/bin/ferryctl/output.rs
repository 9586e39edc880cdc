//! How results are shown: text tables for people, JSON for scripts.

use std::io::Write;

use clap::ValueEnum;

/// The `--output` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text and tables.
    Text,
    /// JSON (one document, or one object per line for streams of records).
    Json,
}

/// Prints a JSON value as one line on stdout.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// Renders rows under headers with columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_cells: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let width = widths.get(i).copied().unwrap_or(0);
                format!("{cell:<width$}")
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Formats a byte count with a binary unit (`1.5 MiB`).
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats milliseconds with the largest unit that divides them (`7d`, `90s`).
pub fn duration_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    if ms == 0 {
        return "0".to_owned();
    }
    UNITS
        .iter()
        .find(|(size, _)| ms.is_multiple_of(*size))
        .map_or_else(
            || format!("{ms}ms"),
            |(size, unit)| format!("{}{unit}", ms / size),
        )
}

/// Bytes as text for display: UTF-8 when valid, otherwise with invalid sequences
/// replaced by U+FFFD (lossy; there is no base64 here).
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns() {
        let rows = vec![
            vec!["orders".to_owned(), "12".to_owned()],
            vec!["x".to_owned(), "3".to_owned()],
        ];
        let text = table(&["NAME", "PARTITIONS"], &rows);
        assert_eq!(text, "NAME    PARTITIONS\norders  12\nx       3\n");
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(604_800_000), "7d");
        assert_eq!(duration_ms(5_400_000), "90m");
        assert_eq!(duration_ms(1_500), "1500ms");
        assert_eq!(duration_ms(0), "0");
    }

    #[test]
    fn lossy_text() {
        assert_eq!(lossy(b"hi"), "hi");
        assert_eq!(lossy(&[b'a', 0xff]), "a\u{fffd}");
    }
}

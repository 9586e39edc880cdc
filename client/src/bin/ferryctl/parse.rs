//! Parsing of human-friendly flag values: durations (`7d`, `24h`, `30m`, `15s`,
//! `250ms`, or plain milliseconds), seconds (`0.5`, `30`, or a duration with a unit)
//! and sizes (`1GiB`, `512MiB`, `64KB`, or bytes).

/// Parses a duration into milliseconds. A bare number is milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration '{text}' (try 7d, 24h, 30m, 15s, 250ms)"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => return Err(format!("unknown duration unit '{other}' in '{text}'")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("duration '{text}' is too large"))
}

/// Parses a size into bytes. Binary (`KiB`, `MiB`, `GiB`, `TiB`) and decimal (`KB`,
/// `MB`, `GB`, `TB`) units; `K`/`M`/`G`/`T` alone are binary.
pub fn size_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size '{text}' (try 1GiB, 512MiB, 64KB, 1000)"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit '{other}' in '{text}'")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("size '{text}' is too large"))
}

/// Parses seconds into milliseconds: a plain number is seconds and may have up to
/// three decimals (`0.5`, `30`); with a unit it is read like [`duration_ms`] (`250ms`).
pub fn seconds_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let plain = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if !plain(whole) || !plain(fraction) || (whole.is_empty() && fraction.is_empty()) {
        // Not a plain number: a duration with a unit, or an error naming the forms.
        if text.chars().any(|c| c.is_ascii_alphabetic()) {
            return duration_ms(text);
        }
        return Err(format!("invalid seconds '{text}' (try 30, 0.5 or 250ms)"));
    }
    if fraction.len() > 3 {
        return Err(format!(
            "'{text}': at most millisecond precision (3 decimals)"
        ));
    }
    let too_large = || format!("'{text}' seconds is too large");
    let seconds: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    // "5" → 500 ms, "05" → 50 ms, "005" → 5 ms.
    let millis: u64 = format!("{fraction:0<3}").parse().map_err(|_| too_large())?;
    seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(millis))
        .ok_or_else(too_large)
}

fn split_number(text: &str) -> (&str, &str) {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    (number, unit.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("7d"), Ok(604_800_000));
        assert_eq!(duration_ms("24h"), Ok(86_400_000));
        assert_eq!(duration_ms("30m"), Ok(1_800_000));
        assert_eq!(duration_ms("15s"), Ok(15_000));
        assert_eq!(duration_ms("250ms"), Ok(250));
        assert_eq!(duration_ms("1234"), Ok(1234));
        assert_eq!(duration_ms(" 2 h "), Ok(7_200_000));
        assert!(duration_ms("7y").is_err());
        assert!(duration_ms("d").is_err());
        assert!(duration_ms("-5s").is_err());
        assert!(duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(seconds_ms("30"), Ok(30_000));
        assert_eq!(seconds_ms("0.5"), Ok(500));
        assert_eq!(seconds_ms(".25"), Ok(250));
        assert_eq!(seconds_ms("1.005"), Ok(1_005));
        assert_eq!(seconds_ms("2."), Ok(2_000));
        assert_eq!(seconds_ms("0"), Ok(0));
        assert_eq!(seconds_ms("250ms"), Ok(250));
        assert_eq!(seconds_ms("2m"), Ok(120_000));
        assert!(seconds_ms("0.0005").is_err());
        assert!(seconds_ms("-1").is_err());
        assert!(seconds_ms("1.2.3").is_err());
        assert!(seconds_ms(".").is_err());
        assert!(seconds_ms("").is_err());
        assert!(seconds_ms("99999999999999999999").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(size_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(size_bytes("64KB"), Ok(64_000));
        assert_eq!(size_bytes("1g"), Ok(1 << 30));
        assert_eq!(size_bytes("4096"), Ok(4096));
        assert_eq!(size_bytes("10 MB"), Ok(10_000_000));
        assert!(size_bytes("1.5GiB").is_err());
        assert!(size_bytes("12 parsecs").is_err());
    }
}

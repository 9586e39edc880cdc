//! Parsing of human-friendly flag values: durations (`7d`, `24h`, `30m`, `15s`,
//! `0.5s`, `250ms`: a unit is always given, so `--retention 60` cannot mean one
//! thing for a topic and another for a queue) and sizes (`1GiB`, `512MiB`, `64KB`,
//! or bytes).

/// Parses a duration into milliseconds: a number (with up to millisecond
/// precision) and a unit, `ms`, `s`, `m`/`min`, `h`, `d` or `w`. A bare number is
/// refused, except `0`.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim();
    let forms = "try 7d, 24h, 30m, 15s, 0.5s or 250ms";
    if unit.is_empty() {
        if number.chars().all(|c| c == '0') && !number.is_empty() {
            return Ok(0);
        }
        return Err(format!(
            "'{text}' needs a unit ({forms}): a bare number would be ambiguous"
        ));
    }
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{text}' ({forms})"
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(format!("invalid duration '{text}' ({forms})"));
    }
    let too_large = || format!("duration '{text}' is too large");
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    // The fraction in thousandths of the unit, then scaled: "0.5s" is 500 ms.
    if fraction.len() > 3 {
        return Err(format!("'{text}': at most 3 decimals"));
    }
    let thousandths: u64 = format!("{fraction:0<3}").parse().map_err(|_| too_large())?;
    let fractional = thousandths * factor;
    if !fractional.is_multiple_of(1_000) {
        return Err(format!("'{text}' is finer than a millisecond"));
    }
    whole
        .checked_mul(factor)
        .and_then(|ms| ms.checked_add(fractional / 1_000))
        .ok_or_else(too_large)
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
        assert_eq!(duration_ms(" 2 h "), Ok(7_200_000));
        assert_eq!(duration_ms("0.5s"), Ok(500));
        assert_eq!(duration_ms(".25s"), Ok(250));
        assert_eq!(duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(duration_ms("0"), Ok(0));
        assert!(
            duration_ms("1234")
                .expect_err("a bare number")
                .contains("needs a unit")
        );
        assert!(duration_ms("0.5").is_err());
        assert!(duration_ms("1.5ms").is_err());
        assert!(duration_ms("0.0005s").is_err());
        assert!(duration_ms("7y").is_err());
        assert!(duration_ms("d").is_err());
        assert!(duration_ms("-5s").is_err());
        assert!(duration_ms("1.2.3s").is_err());
        assert!(duration_ms("99999999999999999999d").is_err());
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

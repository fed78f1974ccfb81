//! Human durations: `5s`, `500ms`, `1.5s`, `1m30s`, `2h`.

use std::time::Duration;

/// Units accepted, longest first so `ms` wins over `m`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses a duration made of one or more `<number><unit>` terms, e.g. `5s`,
/// `500ms`, `1.5s`, `1m30s`. Units: `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`,
/// `d`. A unit is always required.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration (use e.g. 5s or 500ms)".into());
    }
    let mut rest = s;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits_end];
        if number.is_empty() {
            return Err(format!("invalid duration {input:?}: expected a number at {:?}", rest));
        }
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        if unit.is_empty() {
            return Err(format!(
                "invalid duration {input:?}: missing unit after {number} (use e.g. {number}s or {number}ms)"
            ));
        }
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| format!("invalid duration {input:?}: unknown unit {unit:?} (use ms, s, m or h)"))?;
        let ns = scaled(number, scale).ok_or_else(|| format!("invalid duration {input:?}: bad number {number:?}"))?;
        total_ns = total_ns
            .checked_add(ns)
            .ok_or_else(|| format!("invalid duration {input:?}: too large"))?;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| format!("invalid duration {input:?}: too large"))?;
    // The remainder is below 10^9 and fits in u32.
    let nanos = (total_ns % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `number` (digits with at most one `.`) times `scale` nanoseconds,
/// truncated to whole nanoseconds.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.contains('.') {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(scale)?;
    if !frac.is_empty() {
        // Digits past the 18th cannot matter at nanosecond resolution.
        let frac = &frac[..frac.len().min(18)];
        let frac_value: u128 = frac.parse().ok()?;
        let denominator = 10u128.pow(frac.len() as u32);
        value = value.checked_add(frac_value.checked_mul(scale)? / denominator)?;
    }
    Some(value)
}

/// A duration that must be positive (for `--timeout`).
pub fn parse_timeout(input: &str) -> Result<Duration, String> {
    let d = parse_duration(input)?;
    if d < Duration::from_millis(10) {
        return Err(format!("timeout {input:?} is too short (minimum 10ms)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn simple_units() {
        assert_eq!(parse_duration("5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(" 5s "), Ok(ms(5000)));
    }

    #[test]
    fn fractions_and_compounds() {
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("0.25m"), Ok(ms(15_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = parse_duration("5").unwrap_err();
        assert!(e.contains("missing unit"), "{e}");
        let e = parse_duration("5sec").unwrap_err();
        assert!(e.contains("unknown unit \"sec\""), "{e}");
        let e = parse_duration("").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse_duration("s").unwrap_err();
        assert!(e.contains("expected a number"), "{e}");
        assert!(parse_duration("1..5s").is_err());
        assert!(parse_duration(".s").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration("99999999999999999999999999999999999999d").is_err());
    }

    #[test]
    fn timeout_must_be_usable() {
        assert_eq!(parse_timeout("5s"), Ok(ms(5000)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("1ms").is_err());
        assert_eq!(parse_timeout("10ms"), Ok(ms(10)));
    }
}

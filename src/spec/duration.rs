//! Durations as written in job files: `250ms`, `10s`, `5m`, `1h30m`.

use std::time::Duration;

/// The longest duration a job file may give: 3650 days (about 10 years).
/// Anything longer is a typo, and a cap keeps every deadline the runtime
/// computes (`now + timeout`) far from the limits of the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 60 * 60);

/// Parses a duration; the error says what is wrong in words.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the duration is empty".into());
    }
    if trimmed.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{trimmed}` has no unit"));
    }
    // humantime does checked arithmetic and reports an overflow as an error.
    match humantime::parse_duration(trimmed) {
        Ok(d) if d > MAX_DURATION => Err(format!(
            "`{trimmed}` is longer than the maximum, 3650d (about 10 years)"
        )),
        Ok(d) => Ok(d),
        // humantime says "overflow" for a fraction finer than a nanosecond too.
        Err(humantime::DurationError::NumberOverflow) if finer_than_ns(trimmed) => Err(format!(
            "`{trimmed}` is finer than a nanosecond; round it (e.g. \"2ns\" or \"1s\")"
        )),
        Err(humantime::DurationError::NumberOverflow) => Err(format!(
            "`{trimmed}` is too large; the maximum is 3650d (about 10 years)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// A fraction with only short numbers: its overflow is one of precision.
fn finer_than_ns(text: &str) -> bool {
    text.contains('.')
        && !text
            .split(|c: char| !c.is_ascii_digit())
            .any(|digits| digits.len() > 15)
}

/// Formats a duration the way a user would write it (`1h30m`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_examples() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
        for fine in ["1.5ns", "0.5ns", "1.0000000001s"] {
            let err = parse_duration(fine).unwrap_err();
            assert!(err.contains("finer than a nanosecond"), "{fine}: {err}");
        }
        assert!(parse_duration("99999999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for s in [
            "300000000000y",
            "18446744073709551615s",
            "3651d",
            "99999999999999999999999h",
        ] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
    }

    #[test]
    fn formats_round_trip() {
        for s in ["250ms", "10s", "5m", "1h30m"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}

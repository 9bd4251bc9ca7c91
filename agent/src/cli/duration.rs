//! Durations on the command line: `30s`, `10m`, `2h`, `1.5s`, or plain seconds.

use std::time::Duration;

/// A positive duration: intervals and windows cannot be zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(text)?;
    if duration.is_zero() {
        return Err(format!("`{}` must be a positive duration", text.trim()));
    }
    Ok(duration)
}

/// A duration that may be zero (`--grace 0s`: compare at once).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 30s, 10m, 2h)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("`{text}` is not a duration of zero or more (examples: 0s, 30s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plain_seconds() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn nonsense_is_an_error_not_a_panic() {
        for bad in ["", "abc", "10x", "-5s", "0", "0s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_is_a_duration_where_allowed() {
        for zero in ["0", "0s", "0ms", "0.0m"] {
            assert_eq!(parse_duration_or_zero(zero), Ok(Duration::ZERO), "{zero}");
        }
        for bad in ["", "-1s", "abc", "1e400s"] {
            assert!(parse_duration_or_zero(bad).is_err(), "{bad}");
        }
    }
}

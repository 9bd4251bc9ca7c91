//! Number and duration formatting shared by the report page and `meshdrift report`, so
//! both show the same figures the same way.

use crate::observation::{BypassReason, Unit};

/// A share in 0..1 as a percentage with one decimal (`80.0%`).
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A share in 0..1 as verdicts write it in a sentence (`80.0 %`).
pub fn share_in_words(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// The plural ending of a count: `1 connection`, `2 connections`.
pub fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A difference of shares in percentage points, signed (`+30.0 pp`).
pub fn points(delta: f64) -> String {
    format!("{:+.1} pp", delta * 100.0)
}

/// A p-value: fixed point while readable, scientific when tiny, `—` when untested.
pub fn p_value(p: Option<f64>) -> String {
    match p {
        None => "—".to_owned(),
        // An underflowed p-value: smaller than any f64 can hold.
        Some(p) if p <= 0.0 => "< 1e-300".to_owned(),
        Some(p) if p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
    }
}

/// A p-value as a verdict's sentence writes it (`p = 0.042`, `p = 3.1e-5`,
/// `p < 1e-12`).
pub fn p_in_words(p: f64) -> String {
    if p < 1e-12 {
        "p < 1e-12".to_owned()
    } else if p < 0.001 {
        format!("p = {p:.1e}")
    } else {
        format!("p = {p:.3}")
    }
}

/// Seconds as the largest two units (`10m`, `1h 05m`, `45s`).
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

/// The unit of a split as a reader should take it: `requests (estimated)`
/// when they are.
pub fn split_unit(unit: Unit, estimated: bool) -> String {
    if estimated {
        format!("{} (estimated)", self::unit(unit))
    } else {
        self::unit(unit).to_owned()
    }
}

/// A bypass reason in words.
pub fn bypass_reason(reason: BypassReason) -> &'static str {
    match reason {
        BypassReason::NoSidecar => "no sidecar",
        BypassReason::SidecarBypassed => "around its sidecar",
        BypassReason::HostNetwork => "host network",
    }
}

/// The plural noun for a route's unit (`requests`, `connections`).
pub fn unit(unit: Unit) -> &'static str {
    match unit {
        Unit::Request => "requests",
        Unit::Connection => "connections",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_points() {
        assert_eq!(percent(0.8), "80.0%");
        assert_eq!(percent(0.0), "0.0%");
        assert_eq!(points(0.3), "+30.0 pp");
        assert_eq!(points(-0.05), "-5.0 pp");
    }

    #[test]
    fn p_values_switch_to_scientific_when_tiny() {
        assert_eq!(p_value(None), "—");
        assert_eq!(p_value(Some(0.4213)), "0.4213");
        assert_eq!(p_value(Some(3.2e-41)), "3.2e-41");
        assert_eq!(p_value(Some(0.0)), "< 1e-300");
    }

    #[test]
    fn durations_use_two_units_at_most() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(600), "10m");
        assert_eq!(duration(630), "10m 30s");
        assert_eq!(duration(3_900), "1h 05m");
        assert_eq!(duration(90_000), "1d 01h");
    }
}

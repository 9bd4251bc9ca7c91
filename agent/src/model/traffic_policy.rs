//! The parts of a DestinationRule `trafficPolicy` beyond TLS that meshdrift
//! verifies: load balancing, connection pools and outlier detection, with
//! the protobuf durations Istio writes them in (`30s`, `1h`, `1.5s`, `100ms`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `LoadBalancerSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHashLb>,
}

/// `LoadBalancerSettings.SimpleLB`; a value a newer Istio adds still loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
    #[serde(other)]
    Other,
}

impl SimpleLb {
    pub fn as_str(self) -> &'static str {
        match self {
            SimpleLb::Unspecified => "UNSPECIFIED",
            SimpleLb::LeastConn => "LEAST_CONN",
            SimpleLb::Random => "RANDOM",
            SimpleLb::Passthrough => "PASSTHROUGH",
            SimpleLb::RoundRobin => "ROUND_ROBIN",
            SimpleLb::LeastRequest => "LEAST_REQUEST",
            SimpleLb::Other => "(unknown)",
        }
    }
}

/// `LoadBalancerSettings.ConsistentHashLB`: what the hash is taken over.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHashLb {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<serde_json::Value>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
}

impl ConsistentHashLb {
    /// What the hash key is, in the field's own name.
    pub fn key(&self) -> &'static str {
        if self.use_source_ip == Some(true) {
            "useSourceIp"
        } else if self.http_header_name.is_some() {
            "httpHeaderName"
        } else if self.http_cookie.is_some() {
            "httpCookie"
        } else if self.http_query_parameter_name.is_some() {
            "httpQueryParameterName"
        } else {
            "(none)"
        }
    }
}

/// `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConnectionPoolSettings {
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    /// 0 or unset: unlimited (2³²−1).
    #[serde(default)]
    pub max_connections: Option<i64>,
    #[serde(default)]
    pub idle_timeout: Option<IstioDuration>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    /// 0 or unset: unlimited.
    #[serde(default)]
    pub max_requests_per_connection: Option<i64>,
    /// Unset: one hour.
    #[serde(default)]
    pub idle_timeout: Option<IstioDuration>,
}

/// `OutlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    /// Deprecated spelling of `consecutive5xxErrors`.
    #[serde(default)]
    pub consecutive_errors: Option<u32>,
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default)]
    pub base_ejection_time: Option<IstioDuration>,
    #[serde(default)]
    pub max_ejection_percent: Option<i64>,
    #[serde(default)]
    pub min_health_percent: Option<i64>,
}

/// A protobuf `Duration` as Istio's YAML writes it: a sequence of decimal
/// numbers with units (`h`, `m`, `s`, `ms`, `us`, `ns`), e.g. `1h30m`, `2.5s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioDuration(pub Duration);

impl<'de> Deserialize<'de> for IstioDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(IstioDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for IstioDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format_duration(self.0))
    }
}

/// `90s` → "1m30s", `0.25s` → "250ms": the shortest exact spelling.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 || out.is_empty() {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

/// Parses `1h30m`, `2.5s`, `100ms`, `3600s`. Negative, empty and unitless
/// values are errors that say what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration (examples: 30s, 1h, 1.5s, 100ms)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(invalid()),
        };
        total += value * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_istio_writes_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration(" 3600s "), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn nonsense_durations_are_errors() {
        for bad in ["", "30", "s", "-1s", "1x", "1e400s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_in_their_shortest_spelling() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn a_traffic_policy_loads_from_yaml() {
        let yaml = "
tcp: {maxConnections: 2, idleTimeout: 1h}
http: {maxRequestsPerConnection: 10, idleTimeout: 2s}
";
        let pool: ConnectionPoolSettings = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(pool.tcp.as_ref().unwrap().max_connections, Some(2));
        assert_eq!(
            pool.http.as_ref().unwrap().idle_timeout,
            Some(IstioDuration(Duration::from_secs(2)))
        );
        let outlier: OutlierDetection =
            serde_yaml_ng::from_str("{consecutive5xxErrors: 3, baseEjectionTime: 60s}").unwrap();
        assert_eq!(outlier.consecutive_5xx_errors, Some(3));
        let lb: LoadBalancerSettings = serde_yaml_ng::from_str("{simple: SOMETHING_NEW}").unwrap();
        assert_eq!(lb.simple, Some(SimpleLb::Other));
        assert!(serde_yaml_ng::from_str::<HttpSettings>("{idleTimeout: soon}").is_err());
    }
}

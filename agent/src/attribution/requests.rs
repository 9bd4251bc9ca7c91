//! How many requests an increment of a flow carried. HTTP/1 sends one request
//! at a time on a connection, so request turns (client data that follows
//! server data) count them exactly. HTTP/2 multiplexes concurrent requests
//! on one connection, so turns undercount them, and more so the more
//! concurrent the streams. On h2c the kernel counts the client's HEADERS
//! frames, one per request: exact again. Encrypted HTTP/2 can only be
//! estimated from what the kernel sees without decrypting: the client's TLS
//! application-data records, else its write bursts. The measured error of
//! each estimator is in BENCHMARKS.md.

use crate::{
    pipeline::FlowDelta,
    wire::{Classification, Transport},
};

/// ALPN protocols that mean HTTP/2 on the connection.
const HTTP2_ALPN: [&str; 2] = ["h2", "istio-h2"];
/// ALPN protocols that mean HTTP/1 could be spoken instead.
const HTTP1_ALPN: [&str; 4] = ["http/1.1", "http/1.0", "istio-http/1.1", "istio-http/1.0"];

/// Requests in one increment, and whether the number is an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCount {
    pub requests: u64,
    pub estimated: bool,
}

/// Whether the client's first bytes commit the connection to HTTP/2: the h2c
/// preface, or a ClientHello that offers HTTP/2 and no HTTP/1.
pub fn is_http2(classification: &Classification) -> bool {
    if classification.transport == Transport::Http2 {
        return true;
    }
    let offers = |names: &[&str]| {
        classification
            .alpn
            .iter()
            .any(|alpn| names.contains(&alpn.as_str()))
    };
    offers(&HTTP2_ALPN) && !offers(&HTTP1_ALPN)
}

pub fn count(classification: &Classification, delta: &FlowDelta) -> RequestCount {
    if !is_http2(classification) {
        return RequestCount {
            requests: delta.counters.requests,
            estimated: false,
        };
    }
    let h2c = classification.transport == Transport::Http2;
    match delta.counters.client_records {
        Some(frames) if h2c => RequestCount {
            requests: frames,
            estimated: false,
        },
        records => RequestCount {
            requests: records.unwrap_or(delta.counters.client_pushes),
            estimated: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::FlowCounters;

    fn hello(alpn: &[&str]) -> Classification {
        Classification {
            alpn: alpn.iter().map(|a| (*a).to_owned()).collect(),
            ..Classification::plain(Transport::IstioMtls)
        }
    }

    fn delta(requests: u64, pushes: u64, records: Option<u64>) -> FlowDelta {
        FlowDelta {
            counters: FlowCounters {
                requests,
                client_pushes: pushes,
                client_records: records,
                ..FlowCounters::default()
            },
            first: false,
        }
    }

    #[test]
    fn http1_counts_turns_exactly() {
        let count = count(
            &hello(&["istio-http/1.1", "istio", "http/1.1"]),
            &delta(7, 9, Some(11)),
        );
        assert_eq!(
            count,
            RequestCount {
                requests: 7,
                estimated: false
            }
        );
    }

    #[test]
    fn http2_is_estimated_from_records_else_pushes() {
        let h2 = hello(&["istio-h2", "istio", "h2"]);
        assert_eq!(
            count(&h2, &delta(2, 9, Some(11))),
            RequestCount {
                requests: 11,
                estimated: true
            }
        );
        assert_eq!(
            count(&h2, &delta(2, 9, None)),
            RequestCount {
                requests: 9,
                estimated: true
            }
        );
    }

    #[test]
    fn h2c_counts_headers_frames_exactly_unless_the_walker_lost_them() {
        let h2c = Classification::plain(Transport::Http2);
        assert_eq!(
            count(&h2c, &delta(2, 9, Some(11))),
            RequestCount {
                requests: 11,
                estimated: false
            }
        );
        assert_eq!(
            count(&h2c, &delta(2, 9, None)),
            RequestCount {
                requests: 9,
                estimated: true
            }
        );
    }

    #[test]
    fn offering_http1_too_keeps_the_exact_count() {
        assert!(!is_http2(&hello(&["h2", "http/1.1"])));
        assert!(is_http2(&hello(&["h2"])));
    }
}

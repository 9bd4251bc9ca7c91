//! Whether an observed transport honours the expected one. Shared by the metrics
//! and the HTML page so a highlighted cell and a counted violation always agree.

use crate::observation::ExpectedTransport;
use crate::wire::Transport;

/// The outcome of comparing one observed transport with the expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportCheck {
    /// What the policy expects, or nothing can be told (the client sent no bytes).
    Ok,
    /// Plaintext where mesh mTLS is expected: traffic bypassed the sidecar's
    /// encryption. The security-relevant case, the one alerts fire on.
    Violation,
    /// Any other disagreement: TLS where plaintext (DISABLE) is expected, non-Istio
    /// TLS where mTLS is expected, Istio mTLS where originated TLS is expected, or
    /// plaintext where originated TLS is expected.
    Mismatch,
}

impl TransportCheck {
    /// Classifies one observed transport against the expectation.
    ///
    /// The split between violation and mismatch follows the report's definition
    /// (`TransportVerdict::violation` is plaintext where mTLS is expected) so the
    /// metric and the report never disagree about what a violation is.
    pub fn of(expected: ExpectedTransport, observed: Transport) -> Self {
        // No client bytes: nothing on the wire to judge.
        if observed == Transport::None {
            return TransportCheck::Ok;
        }
        match expected {
            ExpectedTransport::Mtls => match observed {
                Transport::IstioMtls => TransportCheck::Ok,
                Transport::Http | Transport::Http2 | Transport::Other => TransportCheck::Violation,
                Transport::Tls | Transport::None => TransportCheck::Mismatch,
            },
            ExpectedTransport::Plaintext => {
                if observed.is_tls() {
                    TransportCheck::Mismatch
                } else {
                    TransportCheck::Ok
                }
            }
            ExpectedTransport::Tls => {
                if observed == Transport::Tls {
                    TransportCheck::Ok
                } else {
                    TransportCheck::Mismatch
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_where_mtls_is_expected_is_a_violation() {
        for observed in [Transport::Http, Transport::Http2, Transport::Other] {
            assert_eq!(
                TransportCheck::of(ExpectedTransport::Mtls, observed),
                TransportCheck::Violation,
                "{observed}"
            );
        }
    }

    #[test]
    fn matching_transports_and_silent_clients_are_ok() {
        let ok = [
            (ExpectedTransport::Mtls, Transport::IstioMtls),
            (ExpectedTransport::Plaintext, Transport::Http),
            (ExpectedTransport::Plaintext, Transport::Other),
            (ExpectedTransport::Tls, Transport::Tls),
            (ExpectedTransport::Mtls, Transport::None),
            (ExpectedTransport::Plaintext, Transport::None),
        ];
        for (expected, observed) in ok {
            assert_eq!(
                TransportCheck::of(expected, observed),
                TransportCheck::Ok,
                "{expected:?} {observed}"
            );
        }
    }

    #[test]
    fn other_disagreements_are_mismatches_not_violations() {
        let mismatches = [
            (ExpectedTransport::Plaintext, Transport::IstioMtls),
            (ExpectedTransport::Plaintext, Transport::Tls),
            (ExpectedTransport::Mtls, Transport::Tls),
            (ExpectedTransport::Tls, Transport::IstioMtls),
            (ExpectedTransport::Tls, Transport::Http),
        ];
        for (expected, observed) in mismatches {
            assert_eq!(
                TransportCheck::of(expected, observed),
                TransportCheck::Mismatch,
                "{expected:?} {observed}"
            );
        }
    }
}

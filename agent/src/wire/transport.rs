//! The transport a flow's first client bytes reveal, as the word every report and metric uses.

use std::fmt;
use std::str::FromStr;

/// What the first client bytes of a TCP flow show about how it is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A TLS ClientHello offering one of Istio's ALPN protocols: a sidecar (or gateway)
    /// originating mesh mTLS.
    IstioMtls,
    /// Any other TLS: a ClientHello without an Istio ALPN, or another TLS record.
    Tls,
    /// A plaintext HTTP/1.x request line.
    Http,
    /// The plaintext HTTP/2 connection preface (h2c with prior knowledge).
    Http2,
    /// Client bytes that are none of the above.
    Other,
    /// TLS records on a connection whose handshake was not seen (it was open
    /// before the agent started): encrypted, but whether it is Istio mTLS is
    /// not known.
    Encrypted,
    /// The client sent no bytes before the flow was classified, or bytes
    /// taken mid-stream that say nothing certain.
    None,
}

impl Transport {
    /// Every transport, in the order reports list them.
    pub const ALL: [Transport; 7] = [
        Transport::IstioMtls,
        Transport::Tls,
        Transport::Http,
        Transport::Http2,
        Transport::Other,
        Transport::Encrypted,
        Transport::None,
    ];

    /// The snake_case name used in metrics labels, JSON and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::IstioMtls => "istio_mtls",
            Transport::Tls => "tls",
            Transport::Http => "http",
            Transport::Http2 => "http2",
            Transport::Other => "other",
            Transport::Encrypted => "encrypted",
            Transport::None => "none",
        }
    }

    /// Whether the bytes on the wire were encrypted (any TLS).
    pub const fn is_tls(self) -> bool {
        matches!(
            self,
            Transport::IstioMtls | Transport::Tls | Transport::Encrypted
        )
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport name that is not one of [`Transport::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown transport {0:?}: expected one of istio_mtls, tls, http, http2, other, encrypted, none"
)]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .into_iter()
            .find(|transport| transport.as_str() == s)
            .ok_or_else(|| UnknownTransport(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_from_str_round_trip_every_transport() {
        for transport in Transport::ALL {
            let name = transport.to_string();
            assert_eq!(name.parse::<Transport>(), Ok(transport));
        }
    }

    #[test]
    fn display_matches_serde_names() {
        for transport in Transport::ALL {
            let json = serde_json::to_string(&transport).expect("serialize");
            assert_eq!(json, format!("\"{transport}\""));
            let back: Transport = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, transport);
        }
    }

    #[test]
    fn from_str_rejects_unknown_and_differently_cased_names() {
        assert!("mtls".parse::<Transport>().is_err());
        assert!("TLS".parse::<Transport>().is_err());
        assert!("".parse::<Transport>().is_err());
        let err = "h3".parse::<Transport>().unwrap_err();
        assert!(err.to_string().contains("\"h3\""), "{err}");
    }

    #[test]
    fn only_tls_transports_are_encrypted() {
        let encrypted: Vec<_> = Transport::ALL.into_iter().filter(|t| t.is_tls()).collect();
        assert_eq!(
            encrypted,
            [Transport::IstioMtls, Transport::Tls, Transport::Encrypted]
        );
    }
}

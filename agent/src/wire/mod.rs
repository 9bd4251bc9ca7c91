//! Classifies the first client bytes of a TCP flow: Istio mTLS, other TLS, HTTP/1,
//! HTTP/2 (h2c), something else, or nothing.
//!
//! The module is pure — bytes in, classification out — and never panics, whatever the
//! bytes: they come from any process on the node, cut at an arbitrary length by the
//! kernel side.

mod http;
mod istio_sni;
mod tls;
mod transport;

#[cfg(test)]
mod test_hello;
#[cfg(test)]
mod tests;

pub use istio_sni::{IstioSni, parse_istio_sni};
pub use transport::{Transport, UnknownTransport};

/// ALPN protocols only Istio proxies offer; a server in PERMISSIVE mode treats TLS
/// with one of them as mesh mTLS, and so do we.
pub const ISTIO_ALPN_PROTOCOLS: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// What the first client bytes of a flow show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Classification {
    pub transport: Transport,
    /// The server name of a TLS ClientHello.
    pub sni: Option<String>,
    /// The ALPN protocols a TLS ClientHello offers, in the client's order (those wholly
    /// captured when the capture ends inside the list).
    pub alpn: Vec<String>,
    /// Versions a TLS ClientHello offers, e.g. `TLS1.3`, `TLS1.2`: its
    /// `supported_versions` when present, else its legacy version.
    pub tls_versions: Vec<String>,
    /// The service, port and subset named by an Istio outbound SNI.
    pub istio: Option<IstioSni>,
}

impl Classification {
    /// A classification that carries no TLS details.
    pub fn plain(transport: Transport) -> Self {
        Classification {
            transport,
            sni: None,
            alpn: Vec::new(),
            tls_versions: Vec::new(),
            istio: None,
        }
    }
}

/// Classifies the first client bytes of a TCP flow (a bounded prefix, possibly cut
/// mid-record).
pub fn classify(first_client_bytes: &[u8]) -> Classification {
    if first_client_bytes.is_empty() {
        return Classification::plain(Transport::None);
    }
    if let Some(hello) = tls::read_client_hello(first_client_bytes) {
        let transport = if hello.alpn.iter().any(|p| is_istio_alpn(p)) {
            Transport::IstioMtls
        } else {
            Transport::Tls
        };
        let istio = hello.sni.as_deref().and_then(parse_istio_sni);
        return Classification {
            transport,
            sni: hello.sni,
            alpn: hello.alpn,
            tls_versions: hello.versions,
            istio,
        };
    }
    let transport = if http::is_h2c_preface(first_client_bytes) {
        Transport::Http2
    } else if http::is_http1_request(first_client_bytes) {
        Transport::Http
    } else {
        Transport::Other
    };
    Classification::plain(transport)
}

/// Classifies client bytes taken mid-stream from a connection that was open
/// before the agent started. Only what is certain counts: TLS records (whose
/// handshake was not seen) and an HTTP/1 request line; anything else may be
/// the middle of a record and says nothing.
pub fn classify_mid_stream(client_bytes: &[u8]) -> Classification {
    let transport = if tls::starts_with_record_header(client_bytes) {
        Transport::Encrypted
    } else if http::is_http1_request(client_bytes) {
        Transport::Http
    } else {
        Transport::None
    };
    Classification::plain(transport)
}

/// Plaintext or not, without reading a ClientHello: what a server socket's
/// first bytes need to say for the agent (a plaintext connection into a
/// sidecar that expects mTLS). TLS shows as [`Transport::Encrypted`]: its
/// handshake is not parsed, so whether it is Istio's stays open.
pub fn classify_transport_only(first_client_bytes: &[u8]) -> Classification {
    if first_client_bytes.is_empty() {
        Classification::plain(Transport::None)
    } else if tls::starts_with_record_header(first_client_bytes) {
        Classification::plain(Transport::Encrypted)
    } else if http::is_h2c_preface(first_client_bytes) {
        Classification::plain(Transport::Http2)
    } else if http::is_http1_request(first_client_bytes) {
        Classification::plain(Transport::Http)
    } else {
        Classification::plain(Transport::Other)
    }
}

/// Whether an ALPN protocol is one only Istio proxies offer.
pub fn is_istio_alpn(protocol: &str) -> bool {
    ISTIO_ALPN_PROTOCOLS.contains(&protocol)
}

//! Plaintext HTTP: the HTTP/1.x request line and the HTTP/2 (h2c) connection preface.
//!
//! The kernel hands over a bounded prefix of the first client bytes, so a long request
//! target can be cut before its version; a request line is still recognised then, as
//! long as its method is a standard one (a truncated custom token is too weak a sign).

/// The client connection preface of HTTP/2 over cleartext (RFC 9113 §3.4).
pub(super) const H2C_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The part of the preface that cannot be anything but HTTP/2.
const H2C_PREFACE_MIN: usize = b"PRI * HTTP/2.0".len();

/// RFC 9110 methods plus PATCH (RFC 5789).
const STANDARD_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// Longest method token looked at; real extension methods (WebDAV and the like) are
/// well under this, and a bound keeps random bytes from scanning far.
const MAX_METHOD_LEN: usize = 24;

/// Whether the bytes start with the h2c preface, or are a prefix of it long enough
/// to be unambiguous.
pub(super) fn is_h2c_preface(bytes: &[u8]) -> bool {
    bytes.starts_with(H2C_PREFACE)
        || (bytes.len() >= H2C_PREFACE_MIN && H2C_PREFACE.starts_with(bytes))
}

/// Whether the bytes start with an HTTP/1.x request line: `method SP target SP HTTP/1.x`.
///
/// Any token is accepted as the method when the line is complete up to its version;
/// a line cut short by the capture needs a standard method.
pub(super) fn is_http1_request(bytes: &[u8]) -> bool {
    let Some(method_end) = bytes
        .iter()
        .take(MAX_METHOD_LEN + 1)
        .position(|&b| b == b' ')
    else {
        return false;
    };
    let (method, rest) = bytes.split_at(method_end);
    if method.is_empty() || !method.iter().all(|&b| is_token_char(b)) {
        return false;
    }
    let standard = STANDARD_METHODS.contains(&method);
    let rest = rest.get(1..).unwrap_or_default();

    let target_len = rest.iter().take_while(|&&b| is_target_char(b)).count();
    let (target, rest) = rest.split_at(target_len);
    if rest.is_empty() {
        // The capture ended inside the target.
        return standard;
    }
    if target.is_empty() || rest.first() != Some(&b' ') {
        return false;
    }
    match version_line(rest.get(1..).unwrap_or_default()) {
        VersionLine::Http1 => true,
        VersionLine::Truncated => standard,
        VersionLine::Invalid => false,
    }
}

enum VersionLine {
    /// `HTTP/1.<digit>` followed by the end of the line.
    Http1,
    /// A proper prefix of `HTTP/1.<digit>\r\n`: the capture ended inside the version.
    Truncated,
    Invalid,
}

fn version_line(bytes: &[u8]) -> VersionLine {
    const VERSION: &[u8] = b"HTTP/1.";
    if bytes.len() <= VERSION.len() {
        return if VERSION.starts_with(bytes) {
            VersionLine::Truncated
        } else {
            VersionLine::Invalid
        };
    }
    if !bytes.starts_with(VERSION) {
        return VersionLine::Invalid;
    }
    match bytes.get(VERSION.len()..) {
        Some([minor, b'\r', b'\n', ..] | [minor, b'\n', ..]) if minor.is_ascii_digit() => {
            VersionLine::Http1
        }
        Some([minor] | [minor, b'\r']) if minor.is_ascii_digit() => VersionLine::Truncated,
        _ => VersionLine::Invalid,
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes a request target may hold on the wire: visible ASCII, plus raw non-ASCII
/// bytes that lenient clients send unencoded. Controls, space and DEL end it.
fn is_target_char(b: u8) -> bool {
    b.is_ascii_graphic() || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_request_lines_are_http() {
        for line in [
            &b"GET / HTTP/1.1\r\nHost: reviews:9080\r\n\r\n"[..],
            b"HEAD /healthz HTTP/1.0\r\n\r\n",
            b"POST /api/v1/orders?id=7 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"PUT /x HTTP/1.1\r\n",
            b"DELETE /x HTTP/1.1\r\n",
            b"CONNECT reviews.default.svc.cluster.local:9080 HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"TRACE / HTTP/1.1\r\n",
            b"PATCH /x HTTP/1.1\r\n",
            b"GET http://reviews.default:9080/ HTTP/1.1\r\n",
            b"GET / HTTP/1.1\n",
        ] {
            assert!(
                is_http1_request(line),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn complete_line_with_extension_method_is_http() {
        assert!(is_http1_request(
            b"PROPFIND /dav/ HTTP/1.1\r\nDepth: 1\r\n\r\n"
        ));
        assert!(is_http1_request(b"PURGE /cache HTTP/1.1\r\n"));
        // Methods are case-sensitive: this is an unknown method, but still HTTP.
        assert!(is_http1_request(b"get / HTTP/1.1\r\n"));
    }

    #[test]
    fn line_cut_by_the_capture_is_http_for_standard_methods_only() {
        let line = b"GET /a/very/long/path?with=query HTTP/1.1\r\nHost: x\r\n\r\n";
        for len in b"GET ".len()..line.len() {
            assert!(is_http1_request(&line[..len]), "prefix of {len} bytes");
        }
        assert!(!is_http1_request(b"PROPFIND /dav/ HTTP/1."));
        assert!(!is_http1_request(b"PROPFIND /dav/"));
    }

    #[test]
    fn not_http1() {
        for bytes in [
            &b""[..],
            b"GET",
            b"GET  / HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET / HTTP/1.x\r\n",
            b"GET / HTTP/1.11\r\n",
            b"GET / SPDY/1.1\r\n",
            b"GET /\x00 HTTP/1.1\r\n",
            b"GET /\r\n",
            b" GET / HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH_9.2p1\r\n",
            b"A VERY LONG METHOD NAME THAT IS NOT HTTP / HTTP/1.1\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03",
            H2C_PREFACE,
        ] {
            assert!(
                !is_http1_request(bytes),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn h2c_preface_and_its_unambiguous_prefixes() {
        assert!(is_h2c_preface(H2C_PREFACE));
        let mut with_settings = H2C_PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(is_h2c_preface(&with_settings));
        for len in H2C_PREFACE_MIN..H2C_PREFACE.len() {
            assert!(is_h2c_preface(&H2C_PREFACE[..len]), "prefix of {len} bytes");
        }
        for len in 0..H2C_PREFACE_MIN {
            assert!(
                !is_h2c_preface(&H2C_PREFACE[..len]),
                "prefix of {len} bytes"
            );
        }
        assert!(!is_h2c_preface(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"));
        assert!(!is_h2c_preface(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"));
    }
}

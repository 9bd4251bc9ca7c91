//! TLS: recognise a TLS record and read what a (possibly truncated) ClientHello offers.
//!
//! The kernel captures a bounded prefix of the first client bytes, and TLS 1.3
//! ClientHellos (250–600 bytes, more with post-quantum key shares) are often longer
//! than that prefix. `tls-parser` refuses an incomplete message as a whole, so the
//! record and handshake framing is walked here, `tls-parser` parses the fixed part of
//! the hello, and every extension that lies wholly inside the prefix is handed to its
//! extension parser on its own. What is cut off is simply not reported.

use std::borrow::Cow;

use tls_parser::{SNIType, TlsExtension};

const CONTENT_TYPE_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_TYPE_APPLICATION_DATA: u8 = 23;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Largest TLSCiphertext fragment (RFC 5246 §6.2.3); a plaintext ClientHello record is
/// smaller still, but a client may open with any record type.
const MAX_RECORD_LEN: usize = (1 << 14) + 2048;
const EXTENSION_ALPN: u16 = 16;

/// What the first client bytes show of a TLS ClientHello. Fields the capture cut off
/// stay empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ClientHello {
    pub sni: Option<String>,
    /// Offered ALPN protocols in the client's order. When the capture ends inside the
    /// ALPN extension this holds the protocol names that were wholly captured.
    pub alpn: Vec<String>,
    /// `supported_versions` when offered, else the hello's legacy version.
    pub versions: Vec<String>,
}

/// Reads the first client bytes as TLS. `None` means they do not start with a TLS
/// record; a TLS record that is not a readable ClientHello gives an empty [`ClientHello`].
pub(super) fn read_client_hello(bytes: &[u8]) -> Option<ClientHello> {
    if !starts_with_record_header(bytes) {
        return None;
    }
    if bytes.first() != Some(&CONTENT_TYPE_HANDSHAKE) {
        return Some(ClientHello::default());
    }
    let handshake = handshake_stream(bytes);
    Some(read_handshake(&handshake))
}

/// A TLS record header: a content type a client can open with, protocol version 3.x
/// (SSL 3.0 up to the TLS 1.3 wire value) and, when the length is captured, a length
/// a record may have. Three bytes are enough to decide when the capture is that short.
pub(super) fn starts_with_record_header(bytes: &[u8]) -> bool {
    let [content_type, major, minor, rest @ ..] = bytes else {
        return false;
    };
    let plausible_type =
        (CONTENT_TYPE_CHANGE_CIPHER_SPEC..=CONTENT_TYPE_APPLICATION_DATA).contains(content_type);
    let plausible_version = *major == 3 && *minor <= 4;
    let plausible_length = match rest {
        [high, low, ..] => {
            (1..=MAX_RECORD_LEN).contains(&usize::from(u16::from_be_bytes([*high, *low])))
        }
        _ => true,
    };
    plausible_type && plausible_version && plausible_length
}

/// The handshake bytes carried by the leading handshake records. A ClientHello may be
/// fragmented over several records; only then is a copy made.
fn handshake_stream(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut stream = Cow::Borrowed(&[][..]);
    let mut rest = bytes;
    while let [CONTENT_TYPE_HANDSHAKE, 3, _, high, low, after_header @ ..] = rest {
        let declared = usize::from(u16::from_be_bytes([*high, *low]));
        let (fragment, after_record) = after_header.split_at(declared.min(after_header.len()));
        if stream.is_empty() {
            stream = Cow::Borrowed(fragment);
        } else {
            stream.to_mut().extend_from_slice(fragment);
        }
        if fragment.len() < declared || declared == 0 {
            break;
        }
        rest = after_record;
    }
    stream
}

fn read_handshake(handshake: &[u8]) -> ClientHello {
    let mut hello = ClientHello::default();
    let [HANDSHAKE_CLIENT_HELLO, b1, b2, b3, after_header @ ..] = handshake else {
        return hello;
    };
    let declared = usize::from(*b1) << 16 | usize::from(*b2) << 8 | usize::from(*b3);
    let body = after_header.get(..declared).unwrap_or(after_header);

    let legacy_version = match body {
        [high, low, ..] => Some(u16::from_be_bytes([*high, *low])),
        _ => None,
    };
    let extensions = match tls_parser::parse_tls_handshake_client_hello(body) {
        Ok((_, contents)) if contents.ext.is_some() => contents.ext,
        // tls-parser accepts a hello whose extensions block is cut short and reports
        // it as absent: read what there is of it from the bytes after the fixed part.
        Ok((after_compression, _)) => truncated_extensions_block(after_compression),
        // Cut off before the extensions (or malformed): only the version is known.
        Err(_) => None,
    };

    let mut offered_versions = Vec::new();
    if let Some(extensions) = extensions {
        for_each_extension(extensions, |extension| match extension {
            // A hello may not repeat an extension; should one anyway, the first counts.
            TlsExtension::SNI(names) if hello.sni.is_none() => hello.sni = host_name(&names),
            TlsExtension::ALPN(protocols) if hello.alpn.is_empty() => {
                hello.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            TlsExtension::SupportedVersions(versions) if offered_versions.is_empty() => {
                offered_versions = versions.iter().map(|v| v.0).collect();
            }
            _ => {}
        });
        if hello.alpn.is_empty() {
            hello.alpn = truncated_alpn(extensions);
        }
    }

    hello.versions = offered_versions
        .into_iter()
        .filter_map(version_name)
        .collect();
    if hello.versions.is_empty() {
        hello.versions = legacy_version.and_then(version_name).into_iter().collect();
    }
    hello
}

/// The captured part of an extensions block whose declared length runs past the capture.
fn truncated_extensions_block(bytes: &[u8]) -> Option<&[u8]> {
    let [high, low, block @ ..] = bytes else {
        return None;
    };
    let declared = usize::from(u16::from_be_bytes([*high, *low]));
    block.get(..declared).or(Some(block))
}

/// Calls `visit` with every extension that lies wholly inside `block` and parses.
/// A malformed extension is skipped rather than ending the walk, so one odd extension
/// does not hide the SNI or ALPN after it.
fn for_each_extension<'a>(block: &'a [u8], mut visit: impl FnMut(TlsExtension<'a>)) {
    let mut rest = block;
    while let Some((raw, after)) = next_raw_extension(rest) {
        if let Ok((_, extension)) = tls_parser::parse_tls_client_hello_extension(raw) {
            visit(extension);
        }
        rest = after;
    }
}

/// Splits off one extension (type, length and data) if it is wholly present.
fn next_raw_extension(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let [_, _, high, low, ..] = bytes else {
        return None;
    };
    let len = 4 + usize::from(u16::from_be_bytes([*high, *low]));
    (len <= bytes.len()).then(|| bytes.split_at(len))
}

/// The protocol names wholly captured from an ALPN extension the capture cut off: an
/// Istio ALPN comes first in a sidecar's list, so it is often readable even then.
fn truncated_alpn(block: &[u8]) -> Vec<String> {
    let mut rest = block;
    while let Some((_, after)) = next_raw_extension(rest) {
        rest = after;
    }
    let [type_high, type_low, _, _, list_high, list_low, list @ ..] = rest else {
        return Vec::new();
    };
    if u16::from_be_bytes([*type_high, *type_low]) != EXTENSION_ALPN {
        return Vec::new();
    }
    let declared = usize::from(u16::from_be_bytes([*list_high, *list_low]));
    let mut names = list.get(..declared).unwrap_or(list);
    let mut protocols = Vec::new();
    while let [len, after_len @ ..] = names {
        let Some(name) = after_len.get(..usize::from(*len)) else {
            break;
        };
        protocols.push(String::from_utf8_lossy(name).into_owned());
        names = after_len.get(name.len()..).unwrap_or_default();
    }
    protocols
}

/// The first DNS host name of a server_name extension, if it is text.
fn host_name(names: &[(SNIType, &[u8])]) -> Option<String> {
    names
        .iter()
        .find(|(kind, _)| *kind == SNIType::HostName)
        .and_then(|(_, name)| std::str::from_utf8(name).ok())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// A protocol version as reports show it. GREASE values (RFC 8701) are noise a client
/// adds on purpose and are left out.
fn version_name(version: u16) -> Option<String> {
    if version & 0x0f0f == 0x0a0a {
        return None;
    }
    Some(match version {
        0x0300 => "SSL3.0".to_owned(),
        0x0301 => "TLS1.0".to_owned(),
        0x0302 => "TLS1.1".to_owned(),
        0x0303 => "TLS1.2".to_owned(),
        0x0304 => "TLS1.3".to_owned(),
        0x7f00..=0x7fff => format!("TLS1.3-draft{}", version & 0xff),
        other => format!("0x{other:04x}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_hello::{GREASE, HelloBuilder};
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn complete_tls13_hello_gives_sni_alpn_and_supported_versions() {
        let hello = HelloBuilder::tls13(
            Some("reviews.default.svc.cluster.local"),
            &["h2", "http/1.1"],
        )
        .build();
        assert_eq!(
            read_client_hello(&hello.bytes),
            Some(ClientHello {
                sni: Some("reviews.default.svc.cluster.local".into()),
                alpn: strings(&["h2", "http/1.1"]),
                versions: strings(&["TLS1.3", "TLS1.2"]),
            })
        );
    }

    #[test]
    fn hello_without_supported_versions_reports_its_legacy_version() {
        let mut builder = HelloBuilder::tls12(Some("a.example"), &[]);
        builder.legacy_version = 0x0301;
        let hello = read_client_hello(&builder.build().bytes).expect("TLS");
        assert_eq!(hello.versions, strings(&["TLS1.0"]));
        assert!(hello.alpn.is_empty());
    }

    #[test]
    fn grease_is_left_out_of_versions_and_extensions() {
        let mut builder = HelloBuilder::tls13(Some("a.example"), &["h2"]);
        builder.grease = true;
        let hello = read_client_hello(&builder.build().bytes).expect("TLS");
        assert_eq!(hello.versions, strings(&["TLS1.3", "TLS1.2"]));
        assert_eq!(hello.sni.as_deref(), Some("a.example"));
        assert_eq!(hello.alpn, strings(&["h2"]));
        assert_eq!(version_name(GREASE), None);
    }

    #[test]
    fn hello_fragmented_over_several_records_is_reassembled() {
        let mut builder = HelloBuilder::tls13(
            Some("outbound_.80_.v2_.frontend.default.svc.cluster.local"),
            &["istio"],
        );
        builder.record_size = Some(37);
        let built = builder.build();
        let hello = read_client_hello(&built.bytes).expect("TLS");
        assert_eq!(
            hello.sni.as_deref(),
            Some("outbound_.80_.v2_.frontend.default.svc.cluster.local")
        );
        assert_eq!(hello.alpn, strings(&["istio"]));
        assert_eq!(hello.versions, strings(&["TLS1.3", "TLS1.2"]));
    }

    #[test]
    fn malformed_extension_does_not_hide_the_ones_after_it() {
        let mut builder = HelloBuilder::tls13(Some("a.example"), &["istio-h2"]);
        // signature_algorithms announcing 3 bytes of list but carrying 1.
        builder.leading_extensions.push((13, vec![0, 3, 4]));
        let hello = read_client_hello(&builder.build().bytes).expect("TLS");
        assert_eq!(hello.sni.as_deref(), Some("a.example"));
        assert_eq!(hello.alpn, strings(&["istio-h2"]));
    }

    #[test]
    fn capture_ending_inside_alpn_keeps_the_wholly_captured_protocols() {
        let alpn = ["istio-http/1.1", "istio", "http/1.1"];
        let built = HelloBuilder::tls13(Some("a.example"), &alpn).build();
        let alpn_end = built.alpn_end.expect("has ALPN");
        // The list ends with "\x08http/1.1": cut inside it, then inside "\x05istio".
        let cut_in_last = &built.bytes[..alpn_end - 3];
        assert_eq!(
            read_client_hello(cut_in_last).expect("TLS").alpn,
            strings(&alpn[..2])
        );
        let cut_in_second = &built.bytes[..alpn_end - 9 - 2];
        assert_eq!(
            read_client_hello(cut_in_second).expect("TLS").alpn,
            strings(&alpn[..1])
        );
        let whole = &built.bytes[..alpn_end];
        assert_eq!(read_client_hello(whole).expect("TLS").alpn, strings(&alpn));
    }

    #[test]
    fn sni_cut_by_the_capture_is_not_reported() {
        let built = HelloBuilder::tls13(Some("reviews.default.svc.cluster.local"), &[]).build();
        let sni_end = built.sni_end.expect("has SNI");
        assert_eq!(
            read_client_hello(&built.bytes[..sni_end - 1])
                .expect("TLS")
                .sni,
            None
        );
        assert_eq!(
            read_client_hello(&built.bytes[..sni_end])
                .expect("TLS")
                .sni
                .as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
    }

    #[test]
    fn sni_that_is_not_text_is_dropped() {
        let mut builder = HelloBuilder::tls13(None, &["h2"]);
        builder
            .leading_extensions
            .push((0, vec![0, 5, 0, 0, 2, 0xff, 0xfe]));
        let hello = read_client_hello(&builder.build().bytes).expect("TLS");
        assert_eq!(hello.sni, None);
        assert_eq!(hello.alpn, strings(&["h2"]));
    }

    #[test]
    fn other_tls_records_are_tls_without_details() {
        for record in [
            &[23u8, 3, 3, 0, 4, 1, 2, 3, 4][..],
            &[21, 3, 3, 0, 2, 2, 40],
            &[20, 3, 3, 0, 1, 1],
            // A ServerHello is a handshake record, but not a ClientHello.
            &[22, 3, 3, 0, 6, 2, 0, 0, 2, 3, 3],
            // Record header alone, and a header cut before its length.
            &[22, 3, 1, 2, 0],
            &[22, 3, 1],
        ] {
            assert_eq!(
                read_client_hello(record),
                Some(ClientHello::default()),
                "{record:?}"
            );
        }
    }

    #[test]
    fn implausible_record_headers_are_not_tls() {
        for bytes in [
            &[][..],
            &[22],
            &[22, 3],
            &[22, 2, 0, 0, 5],
            &[22, 3, 5, 0, 5],
            &[24, 3, 3, 0, 5],
            &[19, 3, 3, 0, 5],
            &[22, 3, 1, 0, 0],
            &[22, 3, 1, 0xff, 0xff],
            // An SSLv2-framed hello: no longer sent by anything the mesh runs.
            &[0x80, 0x2e, 1, 3, 1, 0, 0x15],
            b"GET / HTTP/1.1\r\n",
        ] {
            assert_eq!(read_client_hello(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn hello_cut_before_extensions_still_reports_its_legacy_version() {
        let built = HelloBuilder::tls12(Some("a.example"), &["h2"]).build();
        let hello = read_client_hello(&built.bytes[..built.legacy_version_end]).expect("TLS");
        assert_eq!(hello.versions, strings(&["TLS1.2"]));
        let hello = read_client_hello(&built.bytes[..built.legacy_version_end - 1]).expect("TLS");
        assert!(hello.versions.is_empty());
    }

    #[test]
    fn version_names() {
        assert_eq!(version_name(0x0300).as_deref(), Some("SSL3.0"));
        assert_eq!(version_name(0x0301).as_deref(), Some("TLS1.0"));
        assert_eq!(version_name(0x0302).as_deref(), Some("TLS1.1"));
        assert_eq!(version_name(0x0303).as_deref(), Some("TLS1.2"));
        assert_eq!(version_name(0x0304).as_deref(), Some("TLS1.3"));
        assert_eq!(version_name(0x7f17).as_deref(), Some("TLS1.3-draft23"));
        assert_eq!(version_name(0xfefd).as_deref(), Some("0xfefd"));
        assert_eq!(version_name(0x1a1a), None);
    }
}

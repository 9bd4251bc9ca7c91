//! Classification of whole captures: real ClientHellos, every truncation of them,
//! plaintext protocols, and property tests over arbitrary bytes.

use proptest::prelude::*;

use super::test_hello::{
    BuiltHello, CURL_TLS13_PLAIN, HelloBuilder, OPENSSL_TLS12_ISTIO_TCP, OPENSSL_TLS13_ISTIO_HTTP,
    hex_fixture,
};
use super::*;

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// The offset just past the first occurrence of `needle` in `haystack`.
fn end_of(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|start| start + needle.len())
        .expect("fixture holds the needle")
}

#[test]
fn real_openssl_istio_http_hello_is_istio_mtls_with_decoded_sni() {
    let bytes = hex_fixture(OPENSSL_TLS13_ISTIO_HTTP);
    assert_eq!(
        classify(&bytes),
        Classification {
            transport: Transport::IstioMtls,
            sni: Some("outbound_.80_.v1_.frontend.default.svc.cluster.local".into()),
            alpn: strings(&["istio-http/1.1", "istio", "http/1.1"]),
            tls_versions: strings(&["TLS1.3", "TLS1.2", "TLS1.1", "TLS1.0"]),
            istio: Some(IstioSni {
                port: 80,
                subset: Some("v1".into()),
                host: "frontend.default.svc.cluster.local".into(),
            }),
        }
    );
}

#[test]
fn real_openssl_tls12_istio_tcp_hello_is_istio_mtls_without_subset() {
    let bytes = hex_fixture(OPENSSL_TLS12_ISTIO_TCP);
    let classification = classify(&bytes);
    assert_eq!(classification.transport, Transport::IstioMtls);
    assert_eq!(
        classification.alpn,
        strings(&["istio-peer-exchange", "istio"])
    );
    assert_eq!(classification.tls_versions, strings(&["TLS1.2"]));
    assert_eq!(
        classification.istio,
        Some(IstioSni {
            port: 9080,
            subset: None,
            host: "reviews.default.svc.cluster.local".into(),
        })
    );
}

#[test]
fn real_curl_hello_is_plain_tls_without_sni() {
    let bytes = hex_fixture(CURL_TLS13_PLAIN);
    assert_eq!(
        classify(&bytes),
        Classification {
            transport: Transport::Tls,
            sni: None,
            alpn: strings(&["h2", "http/1.1"]),
            tls_versions: strings(&["TLS1.3", "TLS1.2", "TLS1.1", "TLS1.0"]),
            istio: None,
        }
    );
}

/// Every prefix of a real hello: TLS from the third byte on, SNI and the full ALPN list
/// exactly when wholly captured, and `istio_mtls` exactly when an Istio ALPN is.
fn check_every_prefix(bytes: &[u8], sni: Option<&str>, alpn: &[&str]) {
    let full = classify(bytes);
    let sni_end = sni.map(|sni| end_of(bytes, sni.as_bytes()));
    // With its length byte, so that "http/1.1" is not found inside "istio-http/1.1".
    let alpn_end = alpn.last().map(|last| {
        let mut needle = vec![u8::try_from(last.len()).expect("short protocol name")];
        needle.extend_from_slice(last.as_bytes());
        end_of(bytes, &needle)
    });
    for len in 0..=bytes.len() {
        let prefix = &bytes[..len];
        let classification = classify(prefix);
        match len {
            0 => assert_eq!(classification, Classification::plain(Transport::None)),
            1 | 2 => assert_eq!(
                classification,
                Classification::plain(Transport::Other),
                "{len}"
            ),
            _ => {
                assert!(
                    classification.transport.is_tls(),
                    "prefix of {len} bytes: {classification:?}"
                );
                let istio_alpn_seen = classification.alpn.iter().any(|p| is_istio_alpn(p));
                assert_eq!(
                    classification.transport == Transport::IstioMtls,
                    istio_alpn_seen,
                    "{len}"
                );
                assert!(
                    full.alpn.starts_with(&classification.alpn),
                    "prefix of {len} bytes"
                );
                if let Some(sni_end) = sni_end {
                    assert_eq!(
                        classification.sni.is_some(),
                        len >= sni_end,
                        "prefix of {len} bytes"
                    );
                    assert_eq!(
                        classification.istio.is_some(),
                        len >= sni_end && full.istio.is_some()
                    );
                }
                if let Some(alpn_end) = alpn_end {
                    assert_eq!(
                        classification.alpn == strings(alpn),
                        len >= alpn_end,
                        "prefix of {len} bytes"
                    );
                }
            }
        }
    }
}

#[test]
fn every_prefix_of_real_hellos_is_tls_and_keeps_what_it_holds() {
    check_every_prefix(
        &hex_fixture(OPENSSL_TLS13_ISTIO_HTTP),
        Some("outbound_.80_.v1_.frontend.default.svc.cluster.local"),
        &["istio-http/1.1", "istio", "http/1.1"],
    );
    check_every_prefix(
        &hex_fixture(OPENSSL_TLS12_ISTIO_TCP),
        Some("outbound_.9080_._.reviews.default.svc.cluster.local"),
        &["istio-peer-exchange", "istio"],
    );
    check_every_prefix(&hex_fixture(CURL_TLS13_PLAIN), None, &["h2", "http/1.1"]);
}

#[test]
fn a_256_byte_capture_of_a_sidecar_hello_still_names_the_subset() {
    let bytes = hex_fixture(OPENSSL_TLS13_ISTIO_HTTP);
    let classification = classify(&bytes[..256]);
    assert_eq!(
        classification.transport,
        Transport::Tls,
        "the first ALPN name ends past byte 256"
    );
    assert_eq!(
        classification
            .istio
            .and_then(|istio| istio.subset)
            .as_deref(),
        Some("v1")
    );
    let classification = classify(&bytes[..280]);
    assert_eq!(classification.transport, Transport::IstioMtls);
}

#[test]
fn tls_without_istio_alpn_is_tls_even_with_an_istio_sni() {
    let built = HelloBuilder::tls13(
        Some("outbound_.9080_._.reviews.default.svc.cluster.local"),
        &["h2"],
    )
    .build();
    let classification = classify(&built.bytes);
    assert_eq!(classification.transport, Transport::Tls);
    assert_eq!(classification.istio.map(|istio| istio.port), Some(9080));
}

#[test]
fn each_istio_alpn_alone_makes_istio_mtls() {
    for protocol in ISTIO_ALPN_PROTOCOLS {
        let built = HelloBuilder::tls13(None, &["h2", protocol]).build();
        assert_eq!(
            classify(&built.bytes).transport,
            Transport::IstioMtls,
            "{protocol}"
        );
    }
    for protocol in ["h2", "http/1.1", "istio-http/2", "Istio", "istio-"] {
        let built = HelloBuilder::tls13(None, &[protocol]).build();
        assert_eq!(
            classify(&built.bytes).transport,
            Transport::Tls,
            "{protocol}"
        );
    }
}

#[test]
fn ambient_hbone_hello_is_plain_tls() {
    // ztunnel: TLS 1.3, ALPN h2, no SNI.
    let built = HelloBuilder::tls13(None, &["h2"]).build();
    let classification = classify(&built.bytes);
    assert_eq!(classification.transport, Transport::Tls);
    assert_eq!((classification.sni, classification.istio), (None, None));
}

#[test]
fn http1_request_is_http() {
    let classification = classify(b"GET /productpage HTTP/1.1\r\nHost: productpage:9080\r\n\r\n");
    assert_eq!(classification, Classification::plain(Transport::Http));
    assert_eq!(
        classify(b"POST /v1/reviews HTTP/1.0\r\n").transport,
        Transport::Http
    );
}

#[test]
fn h2c_preface_is_http2() {
    let mut bytes = http::H2C_PREFACE.to_vec();
    // The client's SETTINGS frame follows the preface in the same segment.
    bytes.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
    assert_eq!(classify(&bytes), Classification::plain(Transport::Http2));
}

#[test]
fn http1_upgrade_to_h2c_is_http() {
    let request =
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n";
    assert_eq!(classify(request).transport, Transport::Http);
}

#[test]
fn other_protocols_and_noise_are_other() {
    for bytes in [
        &b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"[..],
        b"*1\r\n$4\r\nPING\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x16",
        b"\x16\x03",
        b"\x80\x2e\x01\x03\x01",
        &[
            0x5a, 0x13, 0xc4, 0x7e, 0x99, 0x01, 0xfe, 0x33, 0x20, 0x47, 0x45, 0x54,
        ],
        b"HELO mail.example\r\n",
    ] {
        assert_eq!(
            classify(bytes),
            Classification::plain(Transport::Other),
            "{bytes:?}"
        );
    }
}

#[test]
fn no_bytes_is_none() {
    assert_eq!(classify(&[]), Classification::plain(Transport::None));
}

#[test]
fn classification_serializes_with_snake_case_transport() {
    let classification = classify(&hex_fixture(OPENSSL_TLS12_ISTIO_TCP));
    let json = serde_json::to_value(&classification).expect("serialize");
    assert_eq!(json["transport"], "istio_mtls");
    assert_eq!(json["istio"]["port"], 9080);
    let back: Classification = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, classification);
}

fn protocol_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(ISTIO_ALPN_PROTOCOLS.to_vec()).prop_map(str::to_owned),
        proptest::sample::select(vec!["h2", "http/1.1", "http/1.0"]).prop_map(str::to_owned),
        "[a-z0-9/.-]{1,20}",
    ]
}

fn server_name() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            1u16..,
            "[a-z0-9-]{0,8}",
            "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,4}"
        )
            .prop_map(|(port, subset, host)| format!("outbound_.{port}_.{subset}_.{host}")),
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,4}",
    ]
}

/// Extension types whose content tls-parser parses specially, plus any other.
fn extension() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let kinds = vec![
        0u16, 1, 5, 10, 11, 13, 15, 16, 18, 21, 22, 23, 28, 35, 40, 41, 42, 43, 44, 45, 48, 49, 51,
        13172, 0xff01, 0xffce, 0x0a0a,
    ];
    (
        prop_oneof![proptest::sample::select(kinds), any::<u16>()],
        proptest::collection::vec(any::<u8>(), 0..48),
    )
}

prop_compose! {
    fn hello()(
        sni in proptest::option::of(server_name()),
        alpn in proptest::collection::vec(protocol_name(), 0..5),
        tls13 in any::<bool>(),
        grease in any::<bool>(),
        leading_extensions in proptest::collection::vec(extension(), 0..3),
        pad_to in proptest::option::of(0usize..600),
        record_size in proptest::option::of(1usize..300),
    ) -> (HelloBuilder, BuiltHello) {
        let alpn: Vec<&str> = alpn.iter().map(String::as_str).collect();
        let mut builder = if tls13 {
            HelloBuilder::tls13(sni.as_deref(), &alpn)
        } else {
            HelloBuilder::tls12(sni.as_deref(), &alpn)
        };
        builder.grease = grease;
        builder.leading_extensions = leading_extensions;
        builder.pad_to = pad_to;
        builder.record_size = record_size;
        let built = builder.build();
        (builder, built)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_details_come_only_with_tls(
        bytes in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        let classification = classify(&bytes);
        if !classification.transport.is_tls() {
            prop_assert_eq!(&classification, &Classification::plain(classification.transport));
        }
        prop_assert_eq!(classification.transport == Transport::None, bytes.is_empty());
    }

    #[test]
    fn arbitrary_bytes_behind_a_client_hello_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        record_len in 1u16..=18432,
        handshake_len in any::<u16>(),
    ) {
        let mut bytes = vec![22, 3, 1];
        bytes.extend_from_slice(&record_len.to_be_bytes());
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&handshake_len.to_be_bytes());
        bytes.extend_from_slice(&body);
        prop_assert!(classify(&bytes).transport.is_tls());
    }

    #[test]
    fn truncated_hellos_keep_every_wholly_captured_field(
        (builder, built) in hello(),
        cut in any::<prop::sample::Index>(),
    ) {
        let len = cut.index(built.bytes.len() + 1);
        let classification = classify(&built.bytes[..len]);
        match len {
            0 => prop_assert_eq!(classification.transport, Transport::None),
            1 | 2 => prop_assert_eq!(classification.transport, Transport::Other),
            _ => {
                prop_assert!(classification.transport.is_tls());
                let istio_alpn_seen = classification.alpn.iter().any(|p| is_istio_alpn(p));
                prop_assert_eq!(classification.transport == Transport::IstioMtls, istio_alpn_seen);
                // A random leading extension may itself be a server_name, ALPN or
                // supported_versions; the builder's own fields are only checked without one.
                let leading = |kind: u16| builder.leading_extensions.iter().any(|(k, _)| *k == kind);
                if !leading(16) {
                    prop_assert!(builder.alpn.starts_with(&classification.alpn));
                    if built.alpn_end.is_some_and(|end| len >= end) {
                        prop_assert_eq!(&classification.alpn, &builder.alpn);
                    }
                }
                if !leading(0) {
                    let sni_captured = built.sni_end.is_some_and(|end| len >= end);
                    prop_assert_eq!(classification.sni.is_some(), sni_captured);
                    if sni_captured {
                        prop_assert_eq!(&classification.sni, &builder.sni);
                        prop_assert_eq!(classification.istio, builder.sni.as_deref().and_then(parse_istio_sni));
                    }
                }
                if !leading(43) {
                    if built.supported_versions_end.is_some_and(|end| len >= end) {
                        prop_assert_eq!(&classification.tls_versions, &strings(&["TLS1.3", "TLS1.2"]));
                    }
                    if builder.supported_versions.is_empty() && len >= built.legacy_version_end {
                        prop_assert_eq!(&classification.tls_versions, &strings(&["TLS1.2"]));
                    }
                }
            }
        }
    }
}

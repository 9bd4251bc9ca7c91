//! The `wire` classifier as the rest of the agent uses it: first client bytes in,
//! a serializable classification out.

use meshdrift::wire::{
    Classification, IstioSni, Transport, classify, classify_mid_stream, parse_istio_sni,
};

use meshdrift_testkit::hex_fixture;

const SIDECAR_HELLO: &str = include_str!("../fixtures/wire/openssl_tls13_istio_http.hex");
const CURL_HELLO: &str = include_str!("../fixtures/wire/curl_tls13_plain.hex");

#[test]
fn sidecar_style_hello_names_host_port_and_subset() {
    let classification = classify(&hex_fixture(SIDECAR_HELLO));
    assert_eq!(classification.transport, Transport::IstioMtls);
    assert_eq!(
        classification.istio,
        Some(IstioSni {
            port: 80,
            subset: Some("v1".to_owned()),
            host: "frontend.default.svc.cluster.local".to_owned(),
        })
    );
    assert_eq!(
        classification.tls_versions.first().map(String::as_str),
        Some("TLS1.3")
    );
}

#[test]
fn report_json_shape() {
    let classification = classify(&hex_fixture(SIDECAR_HELLO));
    let json = serde_json::to_value(&classification).expect("serialize");
    assert_eq!(
        json,
        serde_json::json!({
            "transport": "istio_mtls",
            "sni": "outbound_.80_.v1_.frontend.default.svc.cluster.local",
            "alpn": ["istio-http/1.1", "istio", "http/1.1"],
            "tls_versions": ["TLS1.3", "TLS1.2", "TLS1.1", "TLS1.0"],
            "istio": {
                "port": 80,
                "subset": "v1",
                "host": "frontend.default.svc.cluster.local",
            },
        })
    );
}

#[test]
fn every_transport_is_reachable_from_bytes() {
    let cases: [(&[u8], Transport); 6] = [
        (&hex_fixture(SIDECAR_HELLO), Transport::IstioMtls),
        (&hex_fixture(CURL_HELLO), Transport::Tls),
        (
            b"GET /reviews/0 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n",
            Transport::Http,
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Transport::Http2),
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", Transport::Other),
        (b"", Transport::None),
    ];
    for (bytes, transport) in cases {
        assert_eq!(classify(bytes).transport, transport, "{transport}");
    }
    // Mid-stream bytes of a connection open before the agent started.
    let app_data = [0x17, 0x03, 0x03, 0x00, 0x20, 0xaa];
    assert_eq!(
        classify_mid_stream(&app_data).transport,
        Transport::Encrypted
    );
    assert_eq!(
        classify_mid_stream(b"GET / HTTP/1.1\r\n").transport,
        Transport::Http
    );
    assert_eq!(
        classify_mid_stream(&[0x9c, 0x41, 0x07, 0xfe]).transport,
        Transport::None,
        "the middle of a record says nothing"
    );
}

#[test]
fn plaintext_classifications_carry_no_tls_details() {
    let classification = classify(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(classification, Classification::plain(Transport::Http));
}

#[test]
fn transport_names_round_trip_through_strings() {
    for name in [
        "istio_mtls",
        "tls",
        "http",
        "http2",
        "other",
        "encrypted",
        "none",
    ] {
        let transport: Transport = name.parse().expect("known transport");
        assert_eq!(transport.to_string(), name);
    }
    assert!("mtls".parse::<Transport>().is_err());
}

#[test]
fn istio_sni_decoding_is_public() {
    let sni =
        parse_istio_sni("outbound_.9080_._.reviews.default.svc.cluster.local").expect("Istio SNI");
    assert_eq!(
        (sni.port, sni.subset, sni.host.as_str()),
        (9080, None, "reviews.default.svc.cluster.local")
    );
    assert_eq!(parse_istio_sni("reviews.default.svc.cluster.local"), None);
}

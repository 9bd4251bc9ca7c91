//! The wire classifier on arbitrary first client bytes: whatever a client
//! sends, classifying it never panics and always yields a transport.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|first_client_bytes: &[u8]| {
    let classification = meshdrift::wire::classify(first_client_bytes);
    // An Istio SNI is only ever read from a TLS ClientHello.
    if classification.istio.is_some() {
        assert!(classification.sni.is_some());
    }
});

//! Multiplexed HTTP/2 through the client's proxy (HAProxy), ground truth from
//! HAProxy's per-server request counts: on h2c the kernel counts the client's
//! HEADERS frames exactly; over TLS it estimates requests from the client's
//! TLS records, whose share stays within the documented error, and the
//! agent says the split is estimated and does not call the estimator's bias
//! drift. The full error table is `cargo xtask bench`'s (BENCHMARKS.md).

use std::time::Duration;

use meshdrift::observation::ESTIMATED_SHARE_ERROR;
use meshdrift_e2e::privileged;
use meshdrift_lab::{
    H2load,
    h2_error::{Cell, SLOW_V2, measure},
    meshdrift_bin,
    scenario::{Frontend, FrontendConfig, HOST, Protocol},
};

const REQUESTS: u64 = 20_000;

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/frontend")
}

#[test]
fn h2c_headers_frames_count_every_request_also_with_a_slow_subset() {
    let _slot = privileged();
    for (clients, streams) in [(4, 1), (8, 8)] {
        let cell = Cell {
            protocol: Protocol::H2c,
            clients,
            streams,
            slow_v2: true,
        };
        let measured = measure(example(), meshdrift_bin(), cell, REQUESTS).expect("measuring");
        eprintln!(
            "{cell:?}: truth {:?}, estimates {:?}",
            measured.truth, measured.estimates
        );
        assert_eq!(
            measured.estimates.get("client_records"),
            Some(&measured.truth),
            "{cell:?}: HEADERS frames differ from HAProxy's requests"
        );
    }
}

#[test]
fn encrypted_http2_records_keep_the_share_within_the_documented_error() {
    let _slot = privileged();
    for (clients, streams, slow_v2) in [(8, 8, true), (16, 32, true), (16, 32, false)] {
        let cell = Cell {
            protocol: Protocol::Http2,
            clients,
            streams,
            slow_v2,
        };
        let measured = measure(example(), meshdrift_bin(), cell, REQUESTS).expect("measuring");
        let error = measured.share_error("client_records");
        eprintln!(
            "{cell:?}: truth {:?}, records {:?}, share error {error:.4}",
            measured.truth,
            measured.estimates.get("client_records")
        );
        assert!(
            error <= ESTIMATED_SHARE_ERROR,
            "{cell:?}: the records' share is {error:.4} off, beyond the documented {ESTIMATED_SHARE_ERROR}"
        );
    }
}

#[test]
fn an_estimated_split_is_marked_and_its_bias_is_not_drift() {
    let _slot = privileged();
    let frontend = Frontend::start(FrontendConfig {
        declared_weights: Some((50, 50)),
        protocol: Protocol::Http2,
        slow_v2: Some(SLOW_V2),
        ..FrontendConfig::new(example(), meshdrift_bin(), (50, 50))
    })
    .expect("starting the frontend scenario");
    let run = H2load::new(&frontend.service_url())
        .requests(REQUESTS)
        .clients(16)
        .streams(32)
        .timeout(Duration::from_secs(110))
        .run(&frontend.client)
        .expect("h2load");
    assert_eq!(run.failed, 0, "{run:?}");
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(15), |report| {
            client_split(report).is_some_and(|split| split["p_value"].is_number())
        })
        .expect("the agent's report");
    let split =
        client_split(&report).unwrap_or_else(|| panic!("no split for the client: {report:#}"));
    assert!(settled, "the split was never tested: {split:#}");
    assert_eq!(split["estimated"], true, "{split:#}");
    assert_eq!(split["drift"], false, "{split:#}");
    assert!(
        split["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("estimated")),
        "{split:#}"
    );
}

fn client_split(report: &serde_json::Value) -> Option<&serde_json::Value> {
    report["splits"]
        .as_array()?
        .iter()
        .find(|split| split["source"]["name"] == "client" && split["host"] == HOST)
}

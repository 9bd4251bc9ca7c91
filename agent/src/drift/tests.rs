//! Rule-by-rule tests of the engine through its public surface.

use super::*;
use crate::observation::{
    DeclaredSplit, DeclaredSubset, Destination, ExpectedTransport, Observation, SplitKey, Unit,
    Workload,
};
use crate::wire::Transport;

fn key() -> SplitKey {
    SplitKey {
        source: Workload {
            namespace: "default".into(),
            name: "client".into(),
        },
        host: "frontend.default.svc.cluster.local".into(),
        port: 80,
    }
}

fn split(unit: Unit, weights: &[(&str, f64)]) -> DeclaredSplit {
    DeclaredSplit {
        unit,
        determinable: true,
        reason: None,
        subsets: weights
            .iter()
            .map(|(name, weight)| DeclaredSubset {
                subset: Some((*name).to_owned()),
                weight: *weight,
            })
            .collect(),
    }
}

fn to(subset: &str) -> Destination {
    Destination::Subset {
        subset: Some(subset.to_owned()),
    }
}

fn requests(destination: Destination, requests: u64, at: f64) -> Observation {
    Observation {
        key: key(),
        destination,
        transport: Transport::IstioMtls,
        expected_transport: Some(ExpectedTransport::Mtls),
        requests,
        estimated: false,
        connections: 1,
        bytes: requests * 1_000,
        at_seconds: at,
        bypass: None,
        ambient: false,
        endpoint: None,
        source_pod: None,
    }
}

fn engine() -> DriftEngine {
    DriftEngine::new(DriftConfig::default()).unwrap()
}

/// `v1` and `v2` counts at time `at`, one observation each.
fn traffic(engine: &mut DriftEngine, v1: u64, v2: u64, at: f64) {
    engine.observe(&requests(to("v1"), v1, at));
    engine.observe(&requests(to("v2"), v2, at));
}

fn only_split(snapshot: &DriftSnapshot) -> &crate::report::SplitVerdict {
    assert_eq!(snapshot.splits.len(), 1, "{snapshot:#?}");
    &snapshot.splits[0]
}

#[test]
fn invalid_config_is_an_error_not_a_panic() {
    let config = DriftConfig {
        alpha: 2.0,
        ..DriftConfig::default()
    };
    assert_eq!(
        DriftEngine::new(config).unwrap_err(),
        DriftConfigError::Alpha(2.0)
    );
}

#[test]
fn clear_drift_is_flagged_with_a_readable_reason() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 480, 120, 10.0);
    let snapshot = engine.snapshot(20.0);
    let verdict = only_split(&snapshot);
    assert!(verdict.drift);
    assert_eq!(verdict.samples, 600);
    assert!(verdict.p_value.unwrap() < 1e-12);
    assert!(
        verdict
            .reason
            .starts_with("observed v1 80.0 % vs declared 50.0 % (p < 1e-12, n = 600); drift by the sequential test"),
        "{}",
        verdict.reason
    );
    let evidence = verdict.evidence.as_ref().expect("tested sequentially");
    assert!(evidence.p_value < 1e-6, "{evidence:?}");
    // The buckets from the declaration to the snapshot: [0, 10) and [10, 20).
    assert_eq!(evidence.batches, 2);
    let v1 = &verdict.subsets[0];
    assert_eq!(v1.subset.as_deref(), Some("v1"));
    assert_eq!((v1.count, v1.declared), (480, 0.5));
    assert!((v1.observed - 0.8).abs() < 1e-12);
    assert!(v1.ci_low < 0.8 && 0.8 < v1.ci_high && v1.ci_low > 0.5);
}

#[test]
fn estimated_requests_are_flagged_only_beyond_the_estimators_share_error() {
    let estimated_traffic = |v1: u64, v2: u64| {
        let mut engine = engine();
        engine.declare(
            &key(),
            &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
            0.0,
        );
        for (subset, count) in [("v1", v1), ("v2", v2)] {
            let mut observation = requests(to(subset), count, 10.0);
            observation.estimated = true;
            engine.observe(&observation);
        }
        only_split(&engine.snapshot(20.0)).clone()
    };
    // 58/42 on 10 000: drift when counted, within the estimator's error when estimated.
    let mut exact = engine();
    exact.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut exact, 5_800, 4_200, 10.0);
    assert!(only_split(&exact.snapshot(20.0)).drift);
    let near = estimated_traffic(5_800, 4_200);
    assert!(near.estimated && !near.drift, "{near:#?}");
    assert!(near.reason.contains("estimated"), "{}", near.reason);
    // 70/30 is beyond tolerance and error together.
    let far = estimated_traffic(7_000, 3_000);
    assert!(far.estimated && far.drift, "{far:#?}");
}

#[test]
fn matching_traffic_is_not_flagged() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 305, 295, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(!verdict.drift);
    assert!(verdict.p_value.unwrap() > 0.5);
    assert!(
        verdict
            .reason
            .starts_with("consistent with the declared split"),
        "{}",
        verdict.reason
    );
    // Wilson intervals cover the declared weight when the test does not reject.
    for share in &verdict.subsets {
        assert!(share.ci_low <= 0.5 && 0.5 <= share.ci_high, "{share:?}");
    }
}

#[test]
fn significant_but_within_tolerance_is_not_flagged() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 52_000, 48_000, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(verdict.p_value.unwrap() < 1e-12);
    assert!(!verdict.drift, "{}", verdict.reason);
    assert!(
        verdict.reason.starts_with("within tolerance"),
        "{}",
        verdict.reason
    );
}

#[test]
fn beyond_tolerance_but_not_significant_is_not_flagged() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 58, 42, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(verdict.p_value.unwrap() > 0.001);
    assert!(!verdict.drift);
    assert!(
        verdict.reason.starts_with("not significant"),
        "{}",
        verdict.reason
    );
}

#[test]
fn below_min_samples_nothing_is_tested() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 50, 49, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert_eq!(verdict.p_value, None);
    assert!(!verdict.drift);
    assert_eq!(
        verdict.reason,
        "too few requests to test: n = 99 of 100 needed"
    );
    // One more request and the window's test runs.
    engine.observe(&requests(to("v1"), 1, 11.0));
    assert!(only_split(&engine.snapshot(20.0)).p_value.is_some());
}

#[test]
fn a_small_sample_that_leaves_no_doubt_is_drift_at_once() {
    // Too few for the window's chi-square, but 60 requests of 60 to one half
    // of a 50/50 split happen with probability 2^-60: the exact sequential
    // test needs no minimum sample.
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 60, 0, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert_eq!(verdict.p_value, None);
    assert!(verdict.drift, "{verdict:#?}");
    assert!(
        verdict.reason.starts_with(
            "observed v2 0.0 % vs declared 50.0 % (n = 60); drift by the sequential test"
        ),
        "{}",
        verdict.reason
    );
    // Forty, even all to one subset, are not enough against the threshold
    // of a false alarm a year.
    let mut engine = engine_with_split();
    traffic(&mut engine, 40, 0, 10.0);
    assert!(!only_split(&engine.snapshot(20.0)).drift);
}

fn engine_with_split() -> DriftEngine {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    engine
}

#[test]
fn zero_weight_subset_with_traffic_is_flagged_at_once() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5), ("v3", 0.0)]),
        0.0,
    );
    engine.observe(&requests(to("v3"), 1, 10.0));
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(verdict.drift);
    assert_eq!(verdict.p_value, None);
    assert_eq!(
        verdict.reason,
        "subset v3 has declared weight 0 but received 1 request on 1 connection"
    );
    let v3 = verdict
        .subsets
        .iter()
        .find(|s| s.subset.as_deref() == Some("v3"))
        .unwrap();
    assert_eq!((v3.declared, v3.count), (0.0, 1));
}

#[test]
fn zero_weight_subsets_are_left_out_of_the_test() {
    // Expected count 0 must not reach the chi-square; the rest is tested as usual.
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5), ("v3", 0.0)]),
        0.0,
    );
    traffic(&mut engine, 300, 300, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(!verdict.drift, "{}", verdict.reason);
    let p = verdict.p_value.unwrap();
    assert!(p.is_finite() && (p - 1.0).abs() < 1e-9);
}

#[test]
fn undeclared_subset_with_traffic_is_flagged_at_once() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    engine.observe(&requests(to("canary"), 2, 10.0));
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(verdict.drift);
    assert!(
        verdict
            .reason
            .contains("subset canary is not in the declared split"),
        "{}",
        verdict.reason
    );
}

#[test]
fn unexpected_destination_is_flagged_at_once_and_listed() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    let mut stray = requests(
        Destination::Unexpected {
            destination: "default/legacy-0".into(),
            reason: "pod matches no declared subset".into(),
        },
        3,
        10.0,
    );
    stray.transport = Transport::Http;
    engine.observe(&stray);
    let snapshot = engine.snapshot(20.0);
    let verdict = only_split(&snapshot);
    assert!(verdict.drift);
    assert_eq!(
        verdict.reason,
        "3 requests on 1 connection went to 1 unexpected destination (default/legacy-0)"
    );
    assert_eq!(snapshot.unexpected.len(), 1);
    let listed = &snapshot.unexpected[0];
    assert_eq!(listed.destination, "default/legacy-0");
    assert_eq!(listed.reason, "pod matches no declared subset");
    assert_eq!(
        (listed.connections, listed.requests, listed.port),
        (1, 3, 80)
    );
    // Plaintext to it where mTLS is expected is still a violation (subset None).
    let transport = &snapshot.transport[0];
    assert_eq!(transport.subset, None);
    assert!(transport.violation);
    assert_eq!(transport.violations, 1);
}

#[test]
fn statistical_and_immediate_reasons_are_joined() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 480, 120, 10.0);
    engine.observe(&requests(to("v9"), 5, 10.0));
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(verdict.drift);
    assert!(
        verdict
            .reason
            .starts_with("observed v1 80.0 % vs declared 50.0 %"),
        "{}",
        verdict.reason
    );
    assert!(
        verdict
            .reason
            .contains("; subset v9 is not in the declared split"),
        "{}",
        verdict.reason
    );
    assert_eq!(verdict.samples, 605);
}

#[test]
fn not_determinable_split_is_reported_without_drift() {
    let mut engine = engine();
    let mut declared = split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]);
    declared.determinable = false;
    declared.reason = Some("a header match decides between v1 and v2".into());
    engine.declare(&key(), &declared, 0.0);
    traffic(&mut engine, 900, 100, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(!verdict.drift);
    assert_eq!(verdict.p_value, None);
    assert_eq!(
        verdict.reason,
        "split not compared: a header match decides between v1 and v2"
    );
    assert_eq!(verdict.samples, 1000);
}

#[test]
fn single_subset_has_no_test_but_flags_strays() {
    let mut engine = engine();
    engine.declare(&key(), &split(Unit::Request, &[("v1", 1.0)]), 0.0);
    engine.observe(&requests(to("v1"), 500, 10.0));
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert_eq!(verdict.p_value, None);
    assert!(!verdict.drift);
    assert_eq!(verdict.reason, "one destination subset: no split to test");
    engine.observe(&requests(to("v2"), 1, 11.0));
    assert!(only_split(&engine.snapshot(20.0)).drift);
}

#[test]
fn weights_on_another_scale_are_compared_as_fractions() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 80.0), ("v2", 20.0)]),
        0.0,
    );
    traffic(&mut engine, 480, 120, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(!verdict.drift, "{}", verdict.reason);
    assert!((verdict.subsets[0].declared - 0.8).abs() < 1e-12);
}

#[test]
fn three_way_split_drift_names_the_subset_furthest_off() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.3), ("v3", 0.2)]),
        0.0,
    );
    engine.observe(&requests(to("v1"), 480, 10.0));
    engine.observe(&requests(to("v2"), 170, 10.0));
    engine.observe(&requests(to("v3"), 350, 10.0));
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(verdict.drift);
    assert!(
        verdict
            .reason
            .starts_with("observed v3 35.0 % vs declared 20.0 %"),
        "{}",
        verdict.reason
    );
}

#[test]
fn host_without_subsets_is_one_destination() {
    let mut engine = engine();
    let declared = DeclaredSplit {
        unit: Unit::Connection,
        determinable: true,
        reason: None,
        subsets: vec![DeclaredSubset {
            subset: None,
            weight: 1.0,
        }],
    };
    engine.declare(&key(), &declared, 0.0);
    engine.observe(&requests(Destination::Subset { subset: None }, 1, 10.0));
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(!verdict.drift);
    assert_eq!(verdict.subsets[0].subset, None);
    assert_eq!(verdict.subsets[0].observed, 1.0);
}

#[test]
fn unusable_weights_are_not_compared() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", f64::NAN), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 900, 100, 10.0);
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert!(!verdict.drift);
    assert!(verdict.reason.contains("not usable"), "{}", verdict.reason);
}

#[test]
fn old_buckets_leave_the_window_and_expire() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 480, 120, 5.0);
    traffic(&mut engine, 50, 50, 400.0);
    // At 604 s the window starts at 4 s: the bucket [0, 10) straddles it and is out.
    let verdict = only_split(&engine.snapshot(604.0)).clone();
    assert_eq!(verdict.samples, 100);
    // The drift of the first bucket left the window, but the sequential
    // test's alarm holds for half an hour after it was raised.
    assert!(verdict.drift, "{verdict:#?}");
    assert!(
        verdict.reason.contains("sequential test"),
        "{}",
        verdict.reason
    );
    // Before it leaves, it counts.
    assert_eq!(only_split(&engine.snapshot(600.0)).samples, 700);

    engine.expire(604.0);
    assert_eq!(only_split(&engine.snapshot(604.0)).samples, 100);
    // Late observations older than the window are dropped, not resurrected.
    traffic(&mut engine, 10, 10, 1.0);
    assert_eq!(engine.late_dropped(), 2);
    // Once traffic and the declaration are both older than the window, the key goes.
    engine.expire(1_100.0);
    assert_eq!(engine.key_count(), 0);
    assert!(engine.snapshot(1_100.0).splits.is_empty());
}

#[test]
fn refreshed_declaration_keeps_an_idle_key() {
    let mut engine = engine();
    let declared = split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]);
    engine.declare(&key(), &declared, 0.0);
    engine.declare(&key(), &declared, 900.0);
    engine.expire(1_000.0);
    let verdict = only_split(&engine.snapshot(1_000.0)).clone();
    assert_eq!(verdict.samples, 0);
    assert!(!verdict.drift);
}

#[test]
fn a_new_generation_ignores_earlier_traffic_and_the_grace_period() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.9), ("v2", 0.1)]),
        0.0,
    );
    for t in 0..30 {
        traffic(&mut engine, 90, 10, f64::from(t) * 10.0);
    }
    // The canary step at 300 s; proxies still route 90/10 for a while.
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        300.0,
    );
    traffic(&mut engine, 90, 10, 305.0);
    traffic(&mut engine, 90, 10, 325.0);
    let verdict = only_split(&engine.snapshot(329.0)).clone();
    assert_eq!(verdict.samples, 0);
    assert!(!verdict.drift);
    assert_eq!(
        verdict.reason,
        "too few requests to test: n = 0 of 100 needed; the declared split changed 29 s ago and traffic is compared from the end of the 30 s grace period"
    );
    // After the grace period only new traffic counts, and it follows the new weights.
    traffic(&mut engine, 150, 150, 335.0);
    let verdict = only_split(&engine.snapshot(340.0)).clone();
    assert_eq!(verdict.samples, 300);
    assert!(!verdict.drift, "{}", verdict.reason);
    // The same declaration again is a refresh, not a new generation.
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        341.0,
    );
    assert_eq!(only_split(&engine.snapshot(341.0)).samples, 300);
}

#[test]
fn zero_weight_traffic_during_the_grace_period_is_not_flagged() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.9), ("v2", 0.1)]),
        0.0,
    );
    // Rollback: v2 gets weight 0; in-flight traffic to v2 during grace is expected.
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 1.0), ("v2", 0.0)]),
        105.0,
    );
    engine.observe(&requests(to("v2"), 5, 110.0));
    assert!(!only_split(&engine.snapshot(120.0)).drift);
    // Grace ends at 135 s, inside the bucket [130, 140).
    engine.observe(&requests(to("v2"), 5, 136.0));
    assert!(
        !only_split(&engine.snapshot(135.0)).drift,
        "bucket straddling the grace end is skipped"
    );
    engine.observe(&requests(to("v2"), 5, 141.0));
    assert!(only_split(&engine.snapshot(145.0)).drift);
}

#[test]
fn first_declaration_compares_traffic_already_tallied() {
    let mut engine = engine();
    traffic(&mut engine, 480, 120, 10.0);
    assert!(
        engine.snapshot(20.0).splits.is_empty(),
        "no declared split, no verdict"
    );
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        15.0,
    );
    assert!(only_split(&engine.snapshot(20.0)).drift);
}

#[test]
fn connection_routes_count_connections_and_request_routes_count_requests() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Connection, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    // Few connections carrying many requests on v1: per connection it is 50/50.
    for i in 0..100 {
        let at = 10.0 + f64::from(i) * 0.01;
        engine.observe(&requests(to("v1"), 40, at));
        engine.observe(&requests(to("v2"), 1, at));
    }
    let verdict = only_split(&engine.snapshot(20.0)).clone();
    assert_eq!(verdict.unit, Unit::Connection);
    assert_eq!(verdict.samples, 200);
    assert!(!verdict.drift, "{}", verdict.reason);
    // The same traffic judged per request is a 97.6/2.4 split.
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        20.0,
    );
    engine.observe(&requests(to("v1"), 4_000, 100.0));
    engine.observe(&requests(to("v2"), 100, 100.0));
    let verdict = only_split(&engine.snapshot(110.0)).clone();
    assert_eq!(verdict.unit, Unit::Request);
    assert_eq!(verdict.samples, 4_100);
    assert!(verdict.drift);
}

#[test]
fn tallies_carry_bytes_as_a_secondary_view() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        0.0,
    );
    traffic(&mut engine, 3, 1, 10.0);
    let mut continuation = requests(to("v1"), 2, 12.0);
    continuation.connections = 0;
    continuation.bytes = 500;
    engine.observe(&continuation);
    let snapshot = engine.snapshot(20.0);
    let v1 = snapshot
        .tallies
        .iter()
        .find(|t| t.destination == to("v1"))
        .unwrap();
    assert_eq!((v1.requests, v1.connections, v1.bytes), (5, 1, 3_500));
    assert_eq!(v1.transport, Transport::IstioMtls);
    let v2 = snapshot
        .tallies
        .iter()
        .find(|t| t.destination == to("v2"))
        .unwrap();
    assert_eq!((v2.requests, v2.connections, v2.bytes), (1, 1, 1_000));
}

#[test]
fn transport_violations_and_mismatches_are_counted_per_connection() {
    let mut engine = engine();
    let observe = |engine: &mut DriftEngine,
                   subset: &str,
                   transport: Transport,
                   expected: ExpectedTransport,
                   connections: u64| {
        let mut o = requests(to(subset), 1, 10.0);
        o.transport = transport;
        o.expected_transport = Some(expected);
        o.connections = connections;
        engine.observe(&o);
    };
    observe(
        &mut engine,
        "v1",
        Transport::IstioMtls,
        ExpectedTransport::Mtls,
        1,
    );
    observe(
        &mut engine,
        "v2",
        Transport::Http,
        ExpectedTransport::Mtls,
        1,
    );
    observe(
        &mut engine,
        "v2",
        Transport::Http2,
        ExpectedTransport::Mtls,
        1,
    );
    // A continuation of a flow already counted: no new connection.
    observe(
        &mut engine,
        "v2",
        Transport::Http,
        ExpectedTransport::Mtls,
        0,
    );
    observe(
        &mut engine,
        "v2",
        Transport::None,
        ExpectedTransport::Mtls,
        1,
    );
    observe(
        &mut engine,
        "legacy",
        Transport::Tls,
        ExpectedTransport::Plaintext,
        1,
    );
    observe(
        &mut engine,
        "legacy",
        Transport::Http,
        ExpectedTransport::Plaintext,
        1,
    );

    let snapshot = engine.snapshot(20.0);
    let find = |subset: &str| {
        snapshot
            .transport
            .iter()
            .find(|t| t.subset.as_deref() == Some(subset))
            .unwrap()
            .clone()
    };
    let v1 = find("v1");
    assert!(!v1.violation && !v1.mismatch);
    assert_eq!(v1.observed.get("istio_mtls"), Some(&1));

    let v2 = find("v2");
    assert_eq!(v2.expected, Some(ExpectedTransport::Mtls));
    assert!(v2.violation && !v2.mismatch);
    assert_eq!(v2.violations, 2, "http + http2, the continuation adds none");
    assert_eq!(v2.observed.get("http"), Some(&1));
    assert_eq!(v2.observed.get("none"), Some(&1));

    let legacy = find("legacy");
    assert_eq!(legacy.expected, Some(ExpectedTransport::Plaintext));
    assert!(legacy.mismatch && !legacy.violation);
    assert_eq!((legacy.mismatches, legacy.violations), (1, 0));
}

#[test]
fn a_long_lived_violating_connection_stays_flagged() {
    let mut engine = engine();
    let mut open = requests(to("v2"), 1, 10.0);
    open.transport = Transport::Http;
    engine.observe(&open);
    // Hours later the same pooled connection still carries plaintext.
    let mut later = open.clone();
    later.connections = 0;
    later.at_seconds = 7_200.0;
    engine.expire(7_200.0);
    engine.observe(&later);
    let snapshot = engine.snapshot(7_205.0);
    let verdict = &snapshot.transport[0];
    assert!(verdict.violation);
    assert_eq!(
        verdict.violations, 0,
        "its connection was counted when it opened"
    );
}

#[test]
fn snapshot_is_sorted_deterministically() {
    let mut engine = engine();
    let declared = split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]);
    let mut keys = Vec::new();
    for name in ["zeta", "alpha", "mid"] {
        for port in [8080u16, 80] {
            let mut k = key();
            k.source.name = name.into();
            k.port = port;
            engine.declare(&k, &declared, 0.0);
            let mut o = requests(to("v2"), 1, 10.0);
            o.key = k.clone();
            engine.observe(&o);
            o.destination = to("v1");
            engine.observe(&o);
            keys.push(k);
        }
    }
    let snapshot = engine.snapshot(20.0);
    let order: Vec<(String, u16)> = snapshot
        .splits
        .iter()
        .map(|s| (s.source.name.clone(), s.port))
        .collect();
    assert_eq!(
        order,
        [
            ("alpha".into(), 80),
            ("alpha".into(), 8080),
            ("mid".into(), 80),
            ("mid".into(), 8080),
            ("zeta".into(), 80),
            ("zeta".into(), 8080)
        ]
    );
    // Transport verdicts sum ports per source, host and subset.
    assert_eq!(snapshot.transport.len(), 6);
    assert_eq!(snapshot.transport[0].observed.get("istio_mtls"), Some(&2));
    assert_eq!(snapshot, engine.snapshot(20.0));
}

#[test]
fn non_finite_times_are_ignored() {
    let mut engine = engine();
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]),
        f64::NAN,
    );
    engine.observe(&requests(to("v1"), 1, f64::INFINITY));
    assert_eq!(engine.key_count(), 0);
    assert_eq!(engine.snapshot(f64::NAN), DriftSnapshot::default());
    engine.expire(f64::NAN);
}

fn from_pod(pod: &str, subset: &str, requests: u64, at: f64) -> Observation {
    let mut observation = self::requests(to(subset), requests, at);
    observation.source_pod = Some(format!("default/{pod}"));
    observation
}

#[test]
fn the_pod_whose_own_split_differs_is_named_and_the_others_are_not() {
    // One workload, two pods: A follows the declared 50/50, B's proxy is
    // stale at 90/10. The workload as a whole is at 70/30.
    let mut engine = engine_with_split();
    for second in 0..120 {
        let at = f64::from(second);
        engine.observe(&from_pod("frontend-a", "v1", 5, at));
        engine.observe(&from_pod("frontend-a", "v2", 5, at));
        engine.observe(&from_pod("frontend-b", "v1", 9, at));
        engine.observe(&from_pod("frontend-b", "v2", 1, at));
        engine.expire(at);
    }
    let snapshot = engine.snapshot(120.0);
    assert!(only_split(&snapshot).drift, "{snapshot:#?}");
    let pods: Vec<(&str, bool)> = snapshot
        .pods
        .iter()
        .map(|p| (p.pod.as_str(), p.split.drift))
        .collect();
    assert_eq!(
        pods,
        vec![("default/frontend-a", false), ("default/frontend-b", true)]
    );
    let b = &snapshot.pods[1].split;
    assert_eq!(b.samples, 1_200);
    assert!((b.subsets[0].observed - 0.9).abs() < 1e-9, "{b:#?}");
    assert!(b.evidence.as_ref().is_some_and(|e| e.p_value < 1e-6));
    let a = &snapshot.pods[0].split;
    assert!(
        a.evidence.as_ref().is_some_and(|e| e.p_value > 0.01),
        "{a:#?}"
    );
}

#[test]
fn a_pods_verdict_restarts_with_a_new_policy_generation_and_its_traffic_expires() {
    let mut engine = engine_with_split();
    for second in 0..60 {
        let at = f64::from(second);
        engine.observe(&from_pod("frontend-b", "v1", 9, at));
        engine.observe(&from_pod("frontend-b", "v2", 1, at));
        engine.expire(at);
    }
    assert!(engine.snapshot(60.0).pods[0].split.drift);
    // The route now declares 90/10: what B does is what is declared.
    engine.declare(
        &key(),
        &split(Unit::Request, &[("v1", 0.9), ("v2", 0.1)]),
        60.0,
    );
    for second in 60..200 {
        let at = f64::from(second);
        engine.observe(&from_pod("frontend-b", "v1", 9, at));
        engine.observe(&from_pod("frontend-b", "v2", 1, at));
        engine.expire(at);
    }
    let snapshot = engine.snapshot(200.0);
    assert!(!snapshot.pods[0].split.drift, "{snapshot:#?}");
    // No traffic for longer than the window and no verdict held: gone.
    engine.expire(900.0);
    assert!(engine.snapshot(900.0).pods.is_empty());
}

#[test]
fn a_drifting_pods_verdict_is_held_while_its_key_lives_and_goes_with_it() {
    let declared = split(Unit::Request, &[("v1", 0.5), ("v2", 0.5)]);
    let mut engine = engine_with_split();
    for second in 0..800 {
        let at = f64::from(second);
        // Pod A keeps the key alive; pod B drifts for its first minute only.
        engine.declare(&key(), &declared, at);
        engine.observe(&from_pod("frontend-a", "v1", 1, at));
        engine.observe(&from_pod("frontend-a", "v2", 1, at));
        if second < 60 {
            engine.observe(&from_pod("frontend-b", "v1", 9, at));
            engine.observe(&from_pod("frontend-b", "v2", 1, at));
        }
        engine.expire(at);
    }
    // B's traffic has left the window, but its alarm is held (30 minutes).
    let pods = engine.snapshot(800.0).pods;
    assert_eq!(pods.len(), 2, "{pods:#?}");
    assert!(pods[1].pod.ends_with("frontend-b") && pods[1].split.drift);
    // Once the key goes (no traffic, no declaration within the window),
    // nothing is left to judge B by, and nothing of it is kept.
    engine.expire(1_500.0);
    assert_eq!(engine.key_count(), 0);
    assert!(engine.snapshot(1_500.0).pods.is_empty());
}

#[test]
fn traffic_without_a_client_pod_has_no_pod_verdict() {
    let mut engine = engine_with_split();
    traffic(&mut engine, 480, 120, 10.0);
    assert!(engine.snapshot(20.0).pods.is_empty());
}

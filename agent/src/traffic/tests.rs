use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    observation::{
        Unit, Workload,
        conduct::{Activity, Ejection, Origination},
    },
    wire::Transport,
};

const A: &str = "default/backend-v1-a";
const B: &str = "default/backend-v1-b";
const C: &str = "default/backend-v1-c";

fn declared(change: impl FnOnce(&mut DeclaredTraffic)) -> Arc<DeclaredTraffic> {
    let mut declared = DeclaredTraffic::defaults(Unit::Request);
    declared.endpoints = vec![A.to_owned(), B.to_owned()];
    change(&mut declared);
    Arc::new(declared)
}

fn cluster() -> ClusterKey {
    ClusterKey {
        source: Workload {
            namespace: "default".into(),
            name: "client".into(),
        },
        host: "backend.default.svc.cluster.local".into(),
        port: 80,
        subset: Some("v1".into()),
    }
}

fn judge() -> TrafficJudge {
    TrafficJudge::new(TrafficConfig {
        settle: Duration::from_secs(2),
        ..TrafficConfig::default()
    })
}

struct Conn {
    cookie: u64,
    endpoint: &'static str,
    opened_at: f64,
}

fn activity(
    declared: &Arc<DeclaredTraffic>,
    conn: &Conn,
    seen_at: f64,
    requests: u64,
    bytes: u64,
    closed_at: Option<f64>,
) -> ConnectionSample {
    sample_from(
        declared,
        "default/client-1",
        conn,
        Activity {
            opened_at: conn.opened_at,
            closed_at,
            seen_at,
            requests,
            estimated: false,
            bytes,
            first: false,
            transport: Transport::IstioMtls,
            sni: None,
        },
    )
}

fn sample_from(
    declared: &Arc<DeclaredTraffic>,
    pod: &str,
    conn: &Conn,
    activity: Activity,
) -> ConnectionSample {
    ConnectionSample {
        cluster: cluster(),
        declared: Arc::clone(declared),
        client_pod: pod.to_owned(),
        endpoint: conn.endpoint.to_owned(),
        cookie: conn.cookie,
        event: ConnectionEvent::Activity(activity),
    }
}

fn failed(
    declared: &Arc<DeclaredTraffic>,
    endpoint: &str,
    at: f64,
    timed_out: bool,
) -> ConnectionSample {
    ConnectionSample {
        cluster: cluster(),
        declared: Arc::clone(declared),
        client_pod: "default/client-1".to_owned(),
        endpoint: endpoint.to_owned(),
        cookie: 0,
        event: ConnectionEvent::Failed { at, timed_out },
    }
}

/// One short connection per request to `endpoint`, opened at `at`.
fn request(
    judge: &mut TrafficJudge,
    declared: &Arc<DeclaredTraffic>,
    cookie: u64,
    endpoint: &'static str,
    at: f64,
) {
    let conn = Conn {
        cookie,
        endpoint,
        opened_at: at,
    };
    judge.observe(&activity(
        declared,
        &conn,
        at + 0.01,
        1,
        100,
        Some(at + 0.005),
    ));
}

fn verdict(verdicts: &[PolicyVerdict], check: PolicyCheck) -> &PolicyVerdict {
    verdicts
        .iter()
        .find(|v| v.check == check)
        .unwrap_or_else(|| panic!("no {check:?} verdict in {verdicts:#?}"))
}

#[test]
fn round_robin_is_judged_even_or_uneven_over_every_endpoint() {
    let rr = declared(|d| d.load_balancer = Balance::RoundRobin);
    let mut even = judge();
    let mut skewed = judge();
    for i in 0..400u64 {
        let at = i as f64 * 0.01;
        even.observe_request(&rr, i, if i % 2 == 0 { A } else { B }, at);
        skewed.observe_request(&rr, i, if i % 10 == 0 { B } else { A }, at);
    }
    let ok = even.snapshot(10.0);
    let row = verdict(&ok, PolicyCheck::LoadBalancer);
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    assert_eq!(row.samples, 400);
    let bad = skewed.snapshot(10.0);
    let row = verdict(&bad, PolicyCheck::LoadBalancer);
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
    assert!(row.observed.contains("90.0 %"), "{}", row.observed);

    // An endpoint that got nothing still counts against an even spread.
    let mut one_sided = judge();
    for i in 0..200u64 {
        one_sided.observe_request(&rr, i, A, i as f64 * 0.01);
    }
    let row = verdict(&one_sided.snapshot(10.0), PolicyCheck::LoadBalancer).clone();
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
}

#[test]
fn least_request_and_too_little_traffic_are_untested() {
    let default = declared(|_| {});
    let mut judge = judge();
    for i in 0..400u64 {
        judge.observe_request(&default, i, A, i as f64 * 0.01);
    }
    let row = verdict(&judge.snapshot(10.0), PolicyCheck::LoadBalancer).clone();
    assert_eq!(row.verdict, PolicyOutcome::Untested);
    assert!(row.declared.contains("LEAST_REQUEST"), "{}", row.declared);

    let rr = declared(|d| d.load_balancer = Balance::RoundRobin);
    let mut few = super::tests::judge();
    for i in 0..20u64 {
        few.observe_request(&rr, i, A, i as f64 * 0.01);
    }
    let row = verdict(&few.snapshot(10.0), PolicyCheck::LoadBalancer).clone();
    assert_eq!(row.verdict, PolicyOutcome::Untested, "{row:#?}");
}

#[test]
fn a_source_ip_hash_keeps_one_client_on_one_endpoint() {
    let hash = declared(|d| d.load_balancer = Balance::HashSourceIp);
    let mut sticky = judge();
    let mut spread = judge();
    for i in 0..50u64 {
        sticky.observe_request(&hash, i, B, i as f64 * 0.1);
        spread.observe_request(&hash, i, if i % 2 == 0 { A } else { B }, i as f64 * 0.1);
    }
    let row = verdict(&sticky.snapshot(10.0), PolicyCheck::ConsistentHash).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    let row = verdict(&spread.snapshot(10.0), PolicyCheck::ConsistentHash).clone();
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");

    let by_header = declared(|d| {
        d.load_balancer = Balance::HashL7 {
            key: "httpHeaderName",
        }
    });
    let mut l7 = judge();
    l7.observe_request(&by_header, 1, A, 0.0);
    let row = verdict(&l7.snapshot(10.0), PolicyCheck::ConsistentHash).clone();
    assert_eq!(row.verdict, PolicyOutcome::Untested);
    assert!(row.reason.contains("httpHeaderName"), "{}", row.reason);
}

#[test]
fn more_connections_than_declared_for_longer_than_the_grace_is_a_violation() {
    let limited = declared(|d| d.max_connections = Some(2));
    // Two long connections, and a third overlapping them for 0.2 s: within the grace.
    let mut brief = judge();
    for (cookie, opened, closed) in [(1, 0.0, 10.0), (2, 0.0, 4.0), (3, 3.8, 10.0)] {
        let conn = Conn {
            cookie,
            endpoint: A,
            opened_at: opened,
        };
        brief.observe(&activity(&limited, &conn, opened + 0.5, 1, 10, None));
        brief.observe(&activity(&limited, &conn, closed + 0.5, 0, 0, Some(closed)));
    }
    let row = verdict(&brief.snapshot(20.0), PolicyCheck::MaxConnections).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");

    // Five open at once for three seconds.
    let mut crowded = judge();
    for cookie in 1..=5u64 {
        let conn = Conn {
            cookie,
            endpoint: if cookie % 2 == 0 { A } else { B },
            opened_at: 1.0,
        };
        crowded.observe(&activity(&limited, &conn, 1.5, 1, 10, None));
        crowded.observe(&activity(&limited, &conn, 4.5, 0, 0, Some(4.0)));
    }
    let row = verdict(&crowded.snapshot(20.0), PolicyCheck::MaxConnections).clone();
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
    assert!(row.observed.contains("at most 5"), "{}", row.observed);
}

/// A pool of `size` connections opened `opened_at` (before the agent
/// started: adopted), first updated at 1 s and never closed.
fn open_pool(declared: &Arc<DeclaredTraffic>, size: u64, opened_at: f64) -> TrafficJudge {
    let mut judge = judge();
    for cookie in 1..=size {
        let conn = Conn {
            cookie,
            endpoint: if cookie % 2 == 0 { A } else { B },
            opened_at,
        };
        judge.observe(&activity(declared, &conn, 1.0, 1, 10, None));
    }
    judge
}

#[test]
fn connections_that_stay_open_are_counted_at_every_report() {
    let limited = declared(|d| d.max_connections = Some(2));
    // Opened long before the window (600 s) and still open: only counting
    // what is open at the report can see them.
    for (opened_at, at) in [(-700.0, 30.0), (0.5, 3.0), (0.5, 900.0)] {
        let mut pool = open_pool(&limited, 20, opened_at);
        let row = verdict(&pool.snapshot(at), PolicyCheck::MaxConnections).clone();
        assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
        assert!(
            row.observed.starts_with("at most 20 open at once"),
            "{}",
            row.observed
        );

        let mut obeying = open_pool(&limited, 2, opened_at);
        let row = verdict(&obeying.snapshot(at), PolicyCheck::MaxConnections).clone();
        assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
        assert!(
            row.observed.starts_with("at most 2 open at once"),
            "{}",
            row.observed
        );
    }
}

#[test]
fn a_crowded_pool_within_the_grace_is_not_a_violation_yet() {
    let limited = declared(|d| d.max_connections = Some(2));
    let mut pool = open_pool(&limited, 3, 10.0);
    // Three open since 10 s, reported at 10.5 s: above for 0.5 s only.
    let row = verdict(&pool.snapshot(10.5), PolicyCheck::MaxConnections).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    let row = verdict(&pool.snapshot(12.0), PolicyCheck::MaxConnections).clone();
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
}

#[test]
fn a_connection_whose_close_was_lost_stops_counting_once_the_kernel_lost_it() {
    let limited = declared(|d| d.max_connections = Some(2));
    let mut pool = open_pool(&limited, 3, 0.5);
    // The kernel's flow map no longer has connection 3 at 1.2 s, but no
    // close came.
    pool.retain_open(1.2, |cookie| cookie != 3);
    // Long after the opens left the window, only what is open counts.
    let row = verdict(&pool.snapshot(900.0), PolicyCheck::MaxConnections).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    assert!(
        row.observed.starts_with("at most 2 open at once"),
        "{}",
        row.observed
    );
}

#[test]
fn a_connection_carrying_more_requests_than_declared_is_a_violation() {
    let limited = declared(|d| d.max_requests_per_connection = Some(10));
    let mut obeying = judge();
    let mut breaking = judge();
    for cookie in 1..=3u64 {
        let conn = Conn {
            cookie,
            endpoint: A,
            opened_at: cookie as f64,
        };
        // Ten requests over two updates and a close: exactly the limit.
        obeying.observe(&activity(
            &limited,
            &conn,
            cookie as f64 + 0.5,
            6,
            600,
            None,
        ));
        obeying.observe(&activity(
            &limited,
            &conn,
            cookie as f64 + 0.9,
            4,
            400,
            Some(cookie as f64 + 0.8),
        ));
        breaking.observe(&activity(
            &limited,
            &conn,
            cookie as f64 + 0.5,
            6,
            600,
            None,
        ));
        breaking.observe(&activity(
            &limited,
            &conn,
            cookie as f64 + 0.9,
            5,
            500,
            Some(cookie as f64 + 0.8),
        ));
    }
    let row = verdict(
        &obeying.snapshot(10.0),
        PolicyCheck::MaxRequestsPerConnection,
    )
    .clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    let row = verdict(
        &breaking.snapshot(10.0),
        PolicyCheck::MaxRequestsPerConnection,
    )
    .clone();
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
    assert!(row.reason.starts_with("3 connections"), "{}", row.reason);
}

#[test]
fn idle_connections_kept_past_the_timeout_are_a_violation() {
    let timeout = declared(|d| d.idle_timeout = Some(Duration::from_secs(2)));
    // Closed 1.5 s after its last growth: within the timeout.
    let mut closing = judge();
    let conn = Conn {
        cookie: 1,
        endpoint: A,
        opened_at: 0.0,
    };
    closing.observe(&activity(&timeout, &conn, 1.0, 1, 100, None));
    closing.observe(&activity(&timeout, &conn, 3.0, 0, 0, Some(2.5)));
    let row = verdict(&closing.snapshot(10.0), PolicyCheck::IdleTimeout).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");

    // Still open, nothing since 1 s: at 12 s (settle 2 s) idle for at least 9 s.
    let mut lingering = judge();
    lingering.observe(&activity(&timeout, &conn, 1.0, 1, 100, None));
    let row = verdict(&lingering.snapshot(12.0), PolicyCheck::IdleTimeout).clone();
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");

    // Busy all along: a sweep saw growth every second.
    let mut busy = judge();
    for second in 1..=10 {
        busy.observe(&activity(&timeout, &conn, f64::from(second), 5, 500, None));
    }
    let row = verdict(&busy.snapshot(10.5), PolicyCheck::IdleTimeout).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
}

fn outlier(limit: u32) -> Arc<DeclaredTraffic> {
    let mut d = (*declared(|_| {})).clone();
    d.endpoints.push(C.to_owned());
    d.outlier_detection = Some(Ejection {
        consecutive_errors: Some(limit),
        limit_from: "consecutive5xxErrors".into(),
        base_ejection_time: Duration::from_secs(60),
        max_ejection_percent: 100,
        min_health_percent: 0,
    });
    Arc::new(d)
}

#[test]
fn attempts_to_an_endpoint_after_its_ejection_are_a_violation() {
    let declared = outlier(3);
    // Three refused attempts eject C; the proxy then only uses A and B.
    let mut obeying = judge();
    for (i, at) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        obeying.observe(&failed(&declared, C, at, false));
        obeying.observe_request(&declared, i as u64 + 1, A, at + 0.1);
    }
    for i in 0..20u64 {
        obeying.observe_request(
            &declared,
            100 + i,
            if i % 2 == 0 { A } else { B },
            4.0 + i as f64,
        );
    }
    let row = verdict(&obeying.snapshot(40.0), PolicyCheck::OutlierDetection).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    assert!(
        row.reason.contains("mTLS"),
        "the blind spot is said: {}",
        row.reason
    );

    // The same three failures, then the proxy keeps dialing C.
    let mut breaking = judge();
    for at in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] {
        breaking.observe(&failed(&declared, C, at, false));
    }
    let row = verdict(&breaking.snapshot(40.0), PolicyCheck::OutlierDetection).clone();
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
    assert!(row.reason.starts_with("3 attempts"), "{}", row.reason);
}

#[test]
fn outlier_detection_errs_towards_silence() {
    let declared = outlier(3);
    // Two failures, a success, two failures: never three in a row.
    let mut interrupted = judge();
    for at in [1.0, 2.0] {
        interrupted.observe(&failed(&declared, C, at, false));
    }
    interrupted.observe_request(&declared, 7, C, 2.5);
    for at in [3.0, 4.0] {
        interrupted.observe(&failed(&declared, C, at, false));
    }
    let row = verdict(&interrupted.snapshot(40.0), PolicyCheck::OutlierDetection).clone();
    assert_eq!(row.verdict, PolicyOutcome::Untested, "{row:#?}");

    // Attempts that timed out during the ejection may have started before it.
    let mut timeouts = judge();
    for at in [1.0, 2.0, 3.0] {
        timeouts.observe(&failed(&declared, C, at, false));
    }
    for at in [5.0, 6.0] {
        timeouts.observe(&failed(&declared, C, at, true));
    }
    let row = verdict(&timeouts.snapshot(40.0), PolicyCheck::OutlierDetection).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");

    // An attempt a moment after the ejection began was already under way.
    let mut racing = judge();
    for at in [1.0, 2.0, 3.0, 3.05] {
        racing.observe(&failed(&declared, C, at, false));
    }
    let row = verdict(&racing.snapshot(40.0), PolicyCheck::OutlierDetection).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
}

#[test]
fn events_are_replayed_in_time_order_whatever_order_they_arrive_in() {
    let declared = outlier(3);
    let mut judge = judge();
    // The failures arrive first; the connection that broke the run of
    // failures (opened at 2.5 s) only with the next sweep.
    for at in [1.0, 2.0, 3.0, 4.0] {
        judge.observe(&failed(&declared, C, at, false));
    }
    judge.observe_request(&declared, 9, C, 2.5);
    let row = verdict(&judge.snapshot(40.0), PolicyCheck::OutlierDetection).clone();
    assert_eq!(row.verdict, PolicyOutcome::Untested, "{row:#?}");
}

#[test]
fn tls_origination_needs_tls_with_the_declared_sni() {
    let declared = declared(|d| {
        d.tls_origination = Some(Origination {
            mode: "SIMPLE",
            sni: "api.external.test".into(),
            sni_declared: true,
        });
    });
    let first = |cookie, transport, sni: Option<&str>| {
        sample_from(
            &declared,
            "default/client-1",
            &Conn {
                cookie,
                endpoint: "203.0.113.7",
                opened_at: 1.0,
            },
            Activity {
                opened_at: 1.0,
                closed_at: None,
                seen_at: 1.5,
                requests: 1,
                estimated: false,
                bytes: 300,
                first: true,
                transport,
                sni: sni.map(str::to_owned),
            },
        )
    };
    // A connection met mid-life (its first bytes were before the agent
    // started) is not judged: nothing is known of its handshake.
    let mut midway = judge();
    let mut later = first(9, Transport::Tls, None);
    if let ConnectionEvent::Activity(activity) = &mut later.event {
        activity.first = false;
    }
    midway.observe(&later);
    let row = verdict(&midway.snapshot(10.0), PolicyCheck::TlsOrigination).clone();
    assert_eq!(row.verdict, PolicyOutcome::Untested, "{row:#?}");

    let mut right = judge();
    right.observe(&first(1, Transport::Tls, Some("api.external.test")));
    let row = verdict(&right.snapshot(10.0), PolicyCheck::TlsOrigination).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    for (transport, sni) in [
        (Transport::Tls, Some("wrong.external.test")),
        (Transport::Http, None),
        (
            Transport::IstioMtls,
            Some("outbound_.443_._.api.external.test"),
        ),
    ] {
        let mut wrong = judge();
        wrong.observe(&first(2, transport, sni));
        let row = verdict(&wrong.snapshot(10.0), PolicyCheck::TlsOrigination).clone();
        assert_eq!(
            row.verdict,
            PolicyOutcome::Violation,
            "{transport:?} {row:#?}"
        );
    }
}

#[test]
fn one_violating_pod_makes_the_workload_row_a_violation_and_a_new_policy_starts_over() {
    let limited = declared(|d| d.max_requests_per_connection = Some(10));
    let mut judge = judge();
    for (pod, cookie, requests) in [("default/client-1", 1, 5), ("default/client-2", 2, 50)] {
        let conn = Conn {
            cookie,
            endpoint: A,
            opened_at: 1.0,
        };
        let mut sample = activity(&limited, &conn, 1.5, requests, 100, Some(1.2));
        sample.client_pod = pod.to_owned();
        judge.observe(&sample);
    }
    let rows = judge.snapshot(10.0);
    let row = verdict(&rows, PolicyCheck::MaxRequestsPerConnection);
    assert_eq!(row.verdict, PolicyOutcome::Violation);
    assert!(
        row.observed.starts_with("client pod default/client-2"),
        "{}",
        row.observed
    );
    assert_eq!(row.samples, 2);

    let relaxed = declared(|d| d.max_requests_per_connection = Some(100));
    let conn = Conn {
        cookie: 3,
        endpoint: A,
        opened_at: 11.0,
    };
    judge.observe(&activity(&relaxed, &conn, 11.5, 50, 100, Some(11.2)));
    let row = verdict(&judge.snapshot(20.0), PolicyCheck::MaxRequestsPerConnection).clone();
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
}

#[test]
fn evidence_leaves_with_the_window() {
    let rr = declared(|d| d.load_balancer = Balance::RoundRobin);
    let mut judge = TrafficJudge::new(TrafficConfig {
        window: Duration::from_secs(60),
        settle: Duration::from_secs(2),
        ..TrafficConfig::default()
    });
    for i in 0..200u64 {
        judge.observe_request(&rr, i, A, i as f64 * 0.01);
    }
    assert!(!judge.snapshot(10.0).is_empty());
    assert!(
        judge.snapshot(200.0).is_empty(),
        "nothing seen in the last minute"
    );
}

impl TrafficJudge {
    fn observe_request(
        &mut self,
        declared: &Arc<DeclaredTraffic>,
        cookie: u64,
        endpoint: &'static str,
        at: f64,
    ) {
        request(self, declared, cookie, endpoint, at);
    }
}

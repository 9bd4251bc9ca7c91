//! The HTTP routes, served for real on a local port.

use meshdrift::report::Report;
use meshdrift_testkit::{Server, drift_report, get};

#[test]
fn healthz_is_ok_while_readyz_waits_for_the_inventory_and_probe() {
    let server = Server::start(drift_report());
    assert_eq!(get(&server.url("/healthz"), None).0, 200);
    let (status, _, body) = get(&server.url("/readyz"), None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("inventory"), "{body}");
    server.state.set_ready(true);
    assert_eq!(get(&server.url("/readyz"), None).0, 200);
}

#[test]
fn report_is_the_published_report_as_json() {
    let server = Server::start(drift_report());
    let (status, content_type, body) = get(&server.url("/report"), None);
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let served: Report = serde_json::from_str(&body).expect("report JSON");
    assert_eq!(served, drift_report());

    let mut next = drift_report();
    next.node = "lab-node-2".into();
    server.publisher.publish(next.clone());
    let served: Report = serde_json::from_str(&get(&server.url("/report"), None).2).expect("JSON");
    assert_eq!(served, next);
}

#[test]
fn metrics_are_openmetrics_for_prometheus_and_text_for_plain_clients() {
    let server = Server::start(drift_report());
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, content_type, body) = get(&server.url("/metrics"), Some(prometheus_accept));
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"));
    assert!(
        body.contains("meshdrift_split_drift_detected{"),
        "gauges follow the report: {body}"
    );

    let (_, content_type, body) = get(&server.url("/metrics"), None);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"));

    let (_, content_type, body) = get(&server.url("/metrics"), Some("text/plain"));
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        body.contains("# TYPE meshdrift_lost_events_total counter"),
        "{body}"
    );
    assert!(!body.contains("# EOF"));
}

#[test]
fn publishing_a_report_refreshes_the_gauges() {
    let server = Server::start(drift_report());
    let mut healed = drift_report();
    for split in &mut healed.splits {
        split.drift = false;
    }
    server.publisher.publish(healed);
    let (_, _, body) = get(&server.url("/metrics"), None);
    assert!(
        body.contains(r#"destination_port="80"} 0.0"#)
            && !body.contains(r#"destination_port="80"} 1.0"#),
        "{body}"
    );
}

#[test]
fn page_is_html_and_unknown_paths_say_what_exists() {
    let server = Server::start(drift_report());
    let (status, content_type, body) = get(&server.url("/"), None);
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains("DRIFT"));
    let (status, _, body) = get(&server.url("/nope"), None);
    assert_eq!(status, 404);
    assert!(body.contains("/report"), "{body}");
}

#[test]
fn shutdown_future_ends_serve_cleanly() {
    let server = Server::start(drift_report());
    let addr = server.addr;
    server.stop().expect("serve returned an error");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}

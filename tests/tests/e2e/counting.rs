//! Exact counts under real keep-alive traffic: `meshdrift run` judging
//! HAProxy (70/30 by weight over pooled mTLS connections to both nginx
//! backends) while wrk drives it as hard as the lab allows. Ground truth is
//! HAProxy's per-server request count and the nginx access logs, never the
//! agent itself. The pooled connections stay open and idle after the load:
//! every request must reach the report within one update interval anyway,
//! also when the agent starts after the connections were opened, and when it
//! is restarted in the middle of the load.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use meshdrift_e2e::privileged;
use meshdrift_lab::{
    Wrk, meshdrift_bin,
    scenario::{Frontend, FrontendConfig, HOST},
};
use serde_json::Value;

/// The agent's update interval in these tests (the scenario's `--update-interval`).
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);
/// A 70/30 split by weight, declared and done alike.
const WEIGHTS: (u32, u32) = (70, 30);
/// wrk's concurrency: enough connections to keep both CPUs busy.
const CONNECTIONS: u32 = 16;

fn frontend(agent_at_start: bool) -> Frontend {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Frontend::start(FrontendConfig {
        declared_weights: Some(WEIGHTS),
        agent_at_start,
        ..FrontendConfig::new(
            workspace.join("deploy/examples/frontend"),
            meshdrift_bin(),
            WEIGHTS,
        )
    })
    .expect("starting the frontend scenario")
}

/// wrk from the client's application to the Service (its sidecar takes the
/// connections) for `seconds`, keep-alive.
fn load(frontend: &Frontend, seconds: u64) -> Wrk {
    Wrk::new(&frontend.service_url())
        .threads(2)
        .connections(CONNECTIONS)
        .duration(Duration::from_secs(seconds))
}

/// HAProxy's requests per server so far.
fn haproxy_requests(frontend: &Frontend) -> BTreeMap<String, u64> {
    let stats = frontend
        .proxy()
        .expect("the client's proxy")
        .stats()
        .expect("HAProxy's stats");
    ["v1", "v2"]
        .into_iter()
        .map(|name| {
            let server = stats
                .server(name)
                .unwrap_or_else(|| panic!("HAProxy has no server {name}"));
            (name.to_owned(), server.stot)
        })
        .collect()
}

/// The agent's per-subset counts of the client's split, once they have
/// stopped changing for two report refreshes (bounded by `timeout`).
fn settled_counts(frontend: &Frontend, timeout: Duration) -> (BTreeMap<String, u64>, Value) {
    let deadline = Instant::now() + timeout;
    let mut last = BTreeMap::new();
    let mut stable = 0;
    loop {
        let report = frontend.report().expect("the agent's report");
        let counts = split_counts(&report);
        stable = if counts == last && !counts.is_empty() {
            stable + 1
        } else {
            0
        };
        if stable >= 2 || Instant::now() > deadline {
            return (counts, report);
        }
        last = counts;
        thread::sleep(Duration::from_millis(500));
    }
}

fn split_counts(report: &Value) -> BTreeMap<String, u64> {
    report["splits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|split| split["source"]["name"] == "client" && split["host"] == HOST)
        .flat_map(|split| split["subsets"].as_array().into_iter().flatten())
        .filter_map(|subset| {
            Some((
                subset["subset"].as_str()?.to_owned(),
                subset["count"].as_u64()?,
            ))
        })
        .collect()
}

fn share(counts: &BTreeMap<String, u64>, subset: &str) -> f64 {
    let total: u64 = counts.values().sum();
    counts.get(subset).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

fn difference(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, count)| (name.clone(), count - before.get(name).copied().unwrap_or(0)))
        .collect()
}

/// The counts equal HAProxy's and the share is within half a point of it.
fn assert_matches(observed: &BTreeMap<String, u64>, truth: &BTreeMap<String, u64>, report: &Value) {
    eprintln!("HAProxy sent {truth:?}; meshdrift observed {observed:?}");
    assert_eq!(
        observed, truth,
        "per-subset requests differ from HAProxy's: {report:#}"
    );
    let (seen, sent) = (share(observed, "v1"), share(truth, "v1"));
    assert!(
        (seen - sent).abs() <= 0.005,
        "v1's share {seen:.4} is not within 0.5 points of HAProxy's {sent:.4}"
    );
    let lost: u64 = report["agent"]["lost_events"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, count)| count.as_u64())
        .sum();
    assert_eq!(lost, 0, "the agent lost events: {:#}", report["agent"]);
}

#[test]
fn keep_alive_load_then_idle_counts_every_request_without_a_close() {
    let _slot = privileged();
    let frontend = frontend(true);
    let wrk = load(&frontend, 8).run(&frontend.client).expect("wrk");
    assert_eq!(wrk.socket_errors + wrk.non_2xx_3xx, 0, "{wrk:?}");
    let truth = haproxy_requests(&frontend);
    assert!(
        truth.values().sum::<u64>() > 10_000,
        "too little load: {truth:?}"
    );
    // The pooled connections stay open and idle from here on.
    thread::sleep(UPDATE_INTERVAL + Duration::from_secs(2));
    let (observed, report) = settled_counts(&frontend, Duration::from_secs(5));
    assert_matches(&observed, &truth, &report);
}

#[test]
fn an_agent_started_after_the_connections_counts_from_its_start() {
    let _slot = privileged();
    let mut frontend = frontend(false);
    // Warm up: HAProxy pools its connections to both backends, then idles.
    load(&frontend, 2).run(&frontend.client).expect("warm-up");
    thread::sleep(Duration::from_millis(500));
    let before = haproxy_requests(&frontend);
    frontend.start_agent().expect("starting the agent");
    let wrk = load(&frontend, 6).run(&frontend.client).expect("wrk");
    assert_eq!(wrk.socket_errors + wrk.non_2xx_3xx, 0, "{wrk:?}");
    let truth = difference(&haproxy_requests(&frontend), &before);
    thread::sleep(UPDATE_INTERVAL + Duration::from_secs(2));
    let (observed, report) = settled_counts(&frontend, Duration::from_secs(5));
    assert_matches(&observed, &truth, &report);
    let adopted = report["agent"]["excluded_flows"].clone();
    eprintln!("excluded flows: {adopted}");
}

/// Requests each backend began at or after `since_ms` (Unix milliseconds),
/// from its own access log.
fn served_since(frontend: &Frontend, since_ms: u64) -> BTreeMap<String, u64> {
    frontend
        .servers()
        .iter()
        .map(|nginx| {
            let starts = nginx.request_starts_ms().expect("access log");
            let count = starts.iter().filter(|start| **start >= since_ms).count() as u64;
            (nginx.name().to_owned(), count)
        })
        .collect()
}

fn unix_ms(rfc3339: &str) -> u64 {
    let at = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("counting_since {rfc3339:?}: {err}"));
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).expect("a time after 1970")
}

#[test]
fn an_agent_restarted_mid_load_counts_exactly_what_followed_its_start() {
    let _slot = privileged();
    let mut frontend = frontend(true);
    let running = load(&frontend, 12).spawn(&frontend.client).expect("wrk");
    thread::sleep(Duration::from_secs(4));
    frontend.start_agent().expect("restarting the agent");
    let wrk = running.wait().expect("wrk");
    assert_eq!(wrk.socket_errors + wrk.non_2xx_3xx, 0, "{wrk:?}");
    thread::sleep(UPDATE_INTERVAL + Duration::from_secs(2));
    let (observed, report) = settled_counts(&frontend, Duration::from_secs(5));
    let since = report["agent"]["counting_since"]
        .as_str()
        .map(unix_ms)
        .expect("the report says since when it counts");
    // The programs are attached within a few milliseconds before
    // `counting_since` (printed to the millisecond), and nginx logs request
    // starts to the millisecond, when it reads the request: a request the
    // client sent just before the attach can be read a few milliseconds after
    // it on a busy machine. The agent's counts lie between what nginx began
    // in that window's two ends.
    let most = served_since(&frontend, since.saturating_sub(20));
    let least = served_since(&frontend, since + 10);
    eprintln!(
        "nginx began {least:?} after and {most:?} around {since}; meshdrift observed {observed:?}"
    );
    for subset in ["v1", "v2"] {
        let seen = observed.get(subset).copied().unwrap_or(0);
        assert!(
            (least[subset]..=most[subset]).contains(&seen),
            "{subset}: observed {seen}, nginx began {} to {} requests since the restart",
            least[subset],
            most[subset]
        );
    }
    let (seen, served) = (share(&observed, "v1"), share(&least, "v1"));
    assert!(
        (seen - served).abs() <= 0.005,
        "v1's share {seen:.4} is not within 0.5 points of nginx's {served:.4}"
    );
    assert!(
        least.values().sum::<u64>() > 10_000,
        "too little load after the restart: {least:?}"
    );
}

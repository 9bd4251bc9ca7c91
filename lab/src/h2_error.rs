//! How well the kernel's request estimators count multiplexed HTTP/2: the
//! client's proxy (HAProxy) speaks HTTP/2 to both frontends, h2load drives
//! it at a given concurrency, `meshdrift observe` reports every upstream
//! flow's counters, and HAProxy's per-server request counts are the truth.
//! The benchmark prints the whole table; the end-to-end suite holds the
//! chosen estimator within its bound on a few cells of it.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde_json::Value;

use crate::{
    AgentProcess, H2load,
    error::{LabError, Result},
    nginx::SlowResponses,
    scenario::{Frontend, FrontendConfig, Protocol},
};

/// The estimators the kernel computes for each flow.
pub const ESTIMATORS: [&str; 4] = ["turns", "client_records", "client_pushes", "client_bytes"];

/// One cell of the table: a protocol, a concurrency, and whether v2 is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub protocol: Protocol,
    /// h2load clients (connections to the proxy) and streams per client.
    pub clients: u32,
    pub streams: u32,
    pub slow_v2: bool,
}

/// What one cell measured: per subset, HAProxy's requests and each
/// estimator's count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    pub truth: BTreeMap<String, u64>,
    pub estimates: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

impl Measurement {
    /// The largest relative error of `estimator` over the subsets.
    pub fn count_error(&self, estimator: &str) -> f64 {
        let Some(estimate) = self.estimates.get(estimator) else {
            return f64::INFINITY;
        };
        self.truth
            .iter()
            .map(|(subset, truth)| {
                let seen = estimate.get(subset).copied().unwrap_or(0) as f64;
                (seen - *truth as f64).abs() / (*truth).max(1) as f64
            })
            .fold(0.0, f64::max)
    }

    /// The error of v1's share, in share points (0.01 = 1 point).
    pub fn share_error(&self, estimator: &str) -> f64 {
        let share = |counts: &BTreeMap<String, u64>| {
            let total: u64 = counts.values().sum();
            counts.get("v1").copied().unwrap_or(0) as f64 / total.max(1) as f64
        };
        match self.estimates.get(estimator) {
            Some(estimate) => (share(estimate) - share(&self.truth)).abs(),
            None => f64::INFINITY,
        }
    }
}

/// A v2 that takes about 50 ms per response: 2 kB at 40 kB/s.
pub const SLOW_V2: SlowResponses = SlowResponses {
    bytes: 2_000,
    bytes_per_sec: Some(40_000),
};

/// Runs one cell: `requests` through the proxy at 50/50.
pub fn measure(
    example: PathBuf,
    meshdrift: PathBuf,
    cell: Cell,
    requests: u64,
) -> Result<Measurement> {
    let frontend = Frontend::start(FrontendConfig {
        agent_at_start: false,
        protocol: cell.protocol,
        slow_v2: cell.slow_v2.then_some(SLOW_V2),
        ..FrontendConfig::new(example, meshdrift.clone(), (50, 50))
    })?;
    let observer = AgentProcess::start(
        &meshdrift,
        &["observe", "--output", "json", "--update-interval", "1s"],
        "observing TCP flows",
        Duration::from_secs(30),
    )?;
    let proxy = frontend
        .proxy()
        .ok_or_else(|| LabError::invalid("scenario", "the client's proxy is not running"))?;
    // The client's application dials the Service; its sidecar takes the connections.
    let run = H2load::new(&frontend.service_url())
        .requests(requests)
        .clients(cell.clients)
        .streams(cell.streams)
        .timeout(Duration::from_secs(110))
        .run(&frontend.client)?;
    if run.failed > 0 {
        return Err(LabError::invalid(
            "h2load",
            format!("{} of its requests failed", run.failed),
        ));
    }
    let stats = proxy.stats()?;
    // Let a sweep report the idle pooled flows.
    std::thread::sleep(Duration::from_secs(3));
    let output = observer.stop(Duration::from_secs(30))?;
    let mut truth = BTreeMap::new();
    for subset in ["v1", "v2"] {
        let server = stats
            .server(subset)
            .ok_or_else(|| LabError::parse("HAProxy stats", format!("no server {subset}")))?;
        truth.insert(subset.to_owned(), server.stot);
    }
    let servers: BTreeMap<String, String> = [("v1", &frontend.v1), ("v2", &frontend.v2)]
        .into_iter()
        .map(|(subset, pod)| (pod.ipv4().to_string(), subset.to_owned()))
        .collect();
    Ok(Measurement {
        truth,
        estimates: estimates(&output.stdout, &servers),
    })
}

/// Each estimator summed per subset over the client flows to the servers:
/// the last record of each flow holds its totals.
fn estimates(
    lines: &[String],
    servers: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
    let mut last: BTreeMap<u64, Value> = BTreeMap::new();
    for line in lines {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if record["role"] != "client" {
            continue;
        }
        if let Some(cookie) = record["cookie"].as_u64() {
            last.insert(cookie, record);
        }
    }
    let mut out: BTreeMap<&'static str, BTreeMap<String, u64>> = BTreeMap::new();
    for record in last.values() {
        let dst = record["dst"].as_str().unwrap_or_default();
        let ip = dst.rsplit_once(':').map_or(dst, |(ip, _)| ip);
        let Some(subset) = servers.get(ip) else {
            continue;
        };
        let fields = ["exchanges", "client_records", "client_pushes", "bytes_sent"];
        for (estimator, field) in ESTIMATORS.into_iter().zip(fields) {
            let value = record[field].as_u64().unwrap_or(0);
            *out.entry(estimator)
                .or_default()
                .entry(subset.clone())
                .or_default() += value;
        }
    }
    out
}

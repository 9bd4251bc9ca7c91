//! The cluster's verdict from Prometheus (`meshdrift report --prometheus`):
//! every agent's counters and declared weights, read back through the
//! Prometheus HTTP API, judged with the agent's own sequential detector on
//! the cluster's summed counts.
//!
//! `prometheus` speaks the API, `query` holds the PromQL, `counts` turns
//! counters into increments per step, `judge` turns them into verdicts and
//! `pods` reads the agents' per-pod verdicts.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::drift::{DriftConfig, SequentialError, z_for_alpha};
use crate::observation::Unit;
use crate::report::format;
use crate::report::{AgentHealth, NodeShare, Report};

pub mod counts;
pub mod judge;
pub mod pods;
pub mod prometheus;
pub mod query;

pub use prometheus::Client;

/// What went wrong, naming the Prometheus URL and the query.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error(
        "cannot reach Prometheus at {url} (query `{query}`): check --prometheus, and that \
         Prometheus listens there"
    )]
    Unreachable {
        url: String,
        query: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error(
        "query `{query}` at {url} did not answer within {}; raise --timeout or shorten --range",
        seconds(*timeout)
    )]
    Timeout {
        url: String,
        query: String,
        timeout: Duration,
    },
    #[error("{url} answered HTTP {status} to query `{query}`: {body}")]
    Http {
        url: String,
        query: String,
        status: u16,
        body: String,
    },
    #[error("Prometheus at {url} refused query `{query}`: {error_type}: {error}")]
    Prometheus {
        url: String,
        query: String,
        error_type: String,
        error: String,
    },
    #[error("the answer of {url} to query `{query}` is not a Prometheus API answer: {reason}")]
    Malformed {
        url: String,
        query: String,
        reason: String,
    },
    #[error(
        "no meshdrift series: no series of {selector} in the last {range} at {url}: is \
         Prometheus scraping the agents? Check that the scrape job is named {job:?} (else pass \
         --job), that the agents are up, and --at if given"
    )]
    NoSeries {
        url: String,
        selector: String,
        range: String,
        job: String,
    },
    #[error(
        "no split to judge: the {agents} meshdrift agent(s) Prometheus at {url} scrapes (job \
         {job:?}) declared no weighted split in the last {range}: no client with a sidecar sent \
         traffic to a host whose VirtualService splits it between subsets (or widen --range)"
    )]
    NoSplits {
        url: String,
        agents: usize,
        range: String,
        job: String,
    },
    #[error("judging the split of {split}: {source}")]
    Detector {
        split: String,
        #[source]
        source: SequentialError,
    },
}

/// What the cluster report covers and how it judges.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The scrape job of the agents.
    pub job: String,
    /// The period judged, ending at `end`.
    pub range: Duration,
    /// One batch of the sequential detector, and the query resolution.
    pub step: Duration,
    /// Unix seconds.
    pub end: f64,
    /// The detector's practical tolerance (absolute share).
    pub tolerance: f64,
}

impl Options {
    pub fn new(job: &str, range: Duration, step: Duration, end: f64) -> Self {
        Options {
            job: job.to_owned(),
            range,
            step,
            end,
            tolerance: DriftConfig::default().tolerance,
        }
    }
}

/// The whole cluster's report from the Prometheus behind `client`.
pub fn cluster_report(client: &Client, options: &Options) -> Result<Report, FederationError> {
    let grid = counts::Grid::ending_at(options.end, options.range, options.step);
    let range = |metric: &str| {
        client.query_range(
            &query::selector(metric, &options.job),
            grid.start,
            grid.end(),
            grid.step,
        )
    };
    let declared_series = range(query::DECLARED)?;
    if declared_series.is_empty() {
        // Agents scraped but no split yet is not a scraping problem.
        let agents = client.query(
            &query::selector(query::BUILD_INFO, &options.job),
            grid.end(),
        )?;
        if !agents.is_empty() {
            return Err(FederationError::NoSplits {
                url: client.base().to_owned(),
                agents: agents.len(),
                range: seconds(options.range),
                job: options.job.clone(),
            });
        }
        return Err(FederationError::NoSeries {
            url: client.base().to_owned(),
            selector: query::selector(query::DECLARED, &options.job),
            range: seconds(options.range),
            job: options.job.clone(),
        });
    }
    let requests_series = range(query::REQUESTS)?;
    let connections_series = range(query::CONNECTIONS)?;
    let agents = judge::agents(
        declared_series
            .iter()
            .chain(&requests_series)
            .chain(&connections_series),
    );

    let declared = judge::declared(&declared_series, &grid);
    let requests = counts::tally(&requests_series, &grid);
    let connections = counts::tally(&connections_series, &grid);
    let judging = judge::Judging {
        tolerance: options.tolerance,
        z: z_for_alpha(DriftConfig::default().alpha),
    };

    let mut splits = Vec::new();
    let mut nodes = Vec::new();
    let mut units = BTreeMap::new();
    for (key, weights) in &declared {
        let unit = judge::unit_of(weights, requests.get(key), connections.get(key));
        units.insert(key.clone(), unit);
        let tally = match unit {
            Unit::Request => requests.get(key),
            Unit::Connection => connections.get(key),
        };
        let verdict =
            judge::verdict(key, weights, unit, tally, &grid, &judging).map_err(|source| {
                FederationError::Detector {
                    split: format!("{} → {}:{}", key.source, key.host, key.port),
                    source,
                }
            })?;
        if let Some(tally) = tally {
            nodes.extend(node_rows(key, tally));
        }
        splits.push(verdict);
    }

    let pods = pod_verdicts(client, options, &declared, &units, judging.z)?;
    Ok(Report {
        generated_at: rfc3339(options.end),
        node: format!(
            "cluster ({agents} agent{} via {})",
            format::plural(agents as u64),
            client.base()
        ),
        window_seconds: options.range.as_secs(),
        splits,
        transport: Vec::new(),
        unexpected: Vec::new(),
        bypass: Vec::new(),
        ambient: Vec::new(),
        policies: Vec::new(),
        findings: Vec::new(),
        agent: AgentHealth {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..AgentHealth::default()
        },
        pods,
        nodes,
    })
}

fn pod_verdicts(
    client: &Client,
    options: &Options,
    declared: &BTreeMap<counts::SplitKey, judge::Declared>,
    units: &BTreeMap<counts::SplitKey, Unit>,
    z: f64,
) -> Result<Vec<crate::report::PodSplitVerdict>, FederationError> {
    let drifting = client.query(&query::drifting_pods(&options.job), options.end)?;
    if drifting.is_empty() {
        return Ok(Vec::new());
    }
    let observed = client.query(
        &query::selector(query::POD_OBSERVED, &options.job),
        options.end,
    )?;
    let samples = client.query(
        &query::selector(query::POD_SAMPLES, &options.job),
        options.end,
    )?;
    Ok(pods::verdicts(
        &drifting,
        &observed,
        &samples,
        |key| {
            (
                declared.get(key).and_then(|d| d.last().cloned()),
                units.get(key).copied().unwrap_or(Unit::Request),
            )
        },
        z,
    ))
}

/// Each node's counts of a key's subsets, with its share of the node's traffic.
fn node_rows(key: &counts::SplitKey, tally: &counts::Tally) -> Vec<NodeShare> {
    let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
    for ((node, _), count) in &tally.by_node {
        *per_node.entry(node.as_str()).or_default() += count;
    }
    tally
        .by_node
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|((node, subset), count)| {
            let total = per_node.get(node.as_str()).copied().unwrap_or(0).max(1);
            NodeShare {
                node: node.clone(),
                source: key.source.clone(),
                host: key.host.clone(),
                port: key.port,
                subset: (!subset.is_empty()).then(|| subset.clone()),
                count: *count,
                observed: *count as f64 / total as f64,
            }
        })
        .collect()
}

fn rfc3339(unix: f64) -> String {
    let nanos = (unix * 1e9).round() as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix}"))
}

/// A duration as the command line takes it (`1h`, `30m`, `90s`, `1.5s`).
fn seconds(duration: Duration) -> String {
    let whole = duration.as_secs();
    if duration.subsec_nanos() != 0 {
        format!("{}s", duration.as_secs_f64())
    } else if whole > 0 && whole.is_multiple_of(3600) {
        format!("{}h", whole / 3600)
    } else if whole > 0 && whole.is_multiple_of(60) {
        format!("{}m", whole / 60)
    } else {
        format!("{whole}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_their_flags() {
        assert_eq!(seconds(Duration::from_secs(3600)), "1h");
        assert_eq!(seconds(Duration::from_secs(1800)), "30m");
        assert_eq!(seconds(Duration::from_secs(90)), "90s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
        assert!(rfc3339(60.0).starts_with("1970-01-01T00:01:00"));
    }
}

//! The PromQL the cluster report sends. Every query selects raw series by the
//! scrape job and leaves aggregation to the client: increments need each
//! series' own resets, and the per-node rows need each agent's series.

/// The declared weights, one series per agent and subset.
pub const DECLARED: &str = "meshdrift_declared_weight_ratio";
/// Every agent exports it from its start: the agents Prometheus scrapes.
pub const BUILD_INFO: &str = "meshdrift_build_info";
/// Requests per source workload, host, port, subset and transport (a counter).
pub const REQUESTS: &str = "meshdrift_requests_total";
/// Connections, labelled as [`REQUESTS`] (a counter).
pub const CONNECTIONS: &str = "meshdrift_connections_total";
/// 1 while a client pod's own split drifts; absent otherwise.
pub const POD_DRIFT: &str = "meshdrift_pod_split_drift_detected";
/// A drifting pod's observed share per subset.
pub const POD_OBSERVED: &str = "meshdrift_pod_observed_ratio";
/// The observations behind a drifting pod's verdict.
pub const POD_SAMPLES: &str = "meshdrift_pod_split_samples";

/// `metric{job="…"}`: every series of `metric` the job scraped.
pub fn selector(metric: &str, job: &str) -> String {
    format!("{metric}{{job=\"{}\"}}", escape(job))
}

/// Pods whose split drifts: the gauge is 1 only while they do, so the
/// comparison only guards against a stray value.
pub fn drifting_pods(job: &str) -> String {
    format!("{} == 1", selector(POD_DRIFT, job))
}

/// A PromQL double-quoted string's content.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_is_quoted_so_it_cannot_change_the_query() {
        assert_eq!(
            selector(DECLARED, "meshdrift"),
            "meshdrift_declared_weight_ratio{job=\"meshdrift\"}"
        );
        assert_eq!(
            selector(REQUESTS, "a\"} or up{x=\"\\"),
            "meshdrift_requests_total{job=\"a\\\"} or up{x=\\\"\\\\\"}"
        );
        assert_eq!(
            drifting_pods("mesh"),
            "meshdrift_pod_split_drift_detected{job=\"mesh\"} == 1"
        );
    }
}

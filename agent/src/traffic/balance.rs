//! How a client pod's proxy spread its traffic over a cluster's endpoints:
//! requests (HTTP) or connections (TCP) per endpoint, in time buckets so
//! that evidence leaves the window. Judged against `ROUND_ROBIN`/`RANDOM`
//! (an even spread) and `consistentHash.useSourceIp` (one endpoint).

use std::collections::BTreeMap;

use super::{PodVerdict, TrafficConfig};
use crate::{
    drift::chi_square_gof,
    observation::{
        ESTIMATED_SHARE_ERROR, Unit,
        conduct::{Balance, DeclaredTraffic},
    },
    report::{
        PolicyOutcome,
        format::{share_in_words as percent, unit as unit_name},
    },
};

/// Seconds per bucket: the window forgets evidence this coarsely.
const BUCKET_SECONDS: f64 = 10.0;

/// Traffic a hash must see before one endpoint means anything.
const MIN_HASH_SAMPLES: u64 = 10;

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    connections: u64,
}

#[derive(Debug, Default)]
pub struct EndpointTally {
    buckets: BTreeMap<i64, BTreeMap<String, Counts>>,
    estimated: bool,
}

fn bucket(at: f64) -> i64 {
    (at / BUCKET_SECONDS).floor() as i64
}

impl EndpointTally {
    pub fn connection(&mut self, at: f64, endpoint: &str) {
        self.add(at, endpoint, |counts| counts.connections += 1);
    }

    pub fn requests(&mut self, at: f64, endpoint: &str, requests: u64) {
        if requests > 0 {
            self.add(at, endpoint, |counts| counts.requests += requests);
        }
    }

    /// Marks the requests as estimated (encrypted HTTP/2).
    pub fn estimated(&mut self) {
        self.estimated = true;
    }

    /// Changes `endpoint`'s counts in the bucket of `at`; its name is copied
    /// once per bucket, not per update.
    fn add(&mut self, at: f64, endpoint: &str, change: impl FnOnce(&mut Counts)) {
        let endpoints = self.buckets.entry(bucket(at)).or_default();
        if let Some(counts) = endpoints.get_mut(endpoint) {
            change(counts);
            return;
        }
        let mut counts = Counts::default();
        change(&mut counts);
        endpoints.insert(endpoint.to_owned(), counts);
    }

    pub fn expire(&mut self, oldest: f64) {
        let first_kept = bucket(oldest);
        self.buckets.retain(|&b, _| b >= first_kept);
    }

    /// Samples per endpoint in the window, in the unit of the cluster: the
    /// declared endpoints first (those that got nothing included), then any
    /// other endpoint that got traffic.
    fn per_endpoint(&self, declared: &DeclaredTraffic) -> Vec<(String, u64)> {
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for endpoints in self.buckets.values() {
            for (endpoint, counts) in endpoints {
                let n = match declared.unit {
                    Unit::Request => counts.requests,
                    Unit::Connection => counts.connections,
                };
                *totals.entry(endpoint.as_str()).or_default() += n;
            }
        }
        let mut out: Vec<(String, u64)> = declared
            .endpoints
            .iter()
            .map(|e| (e.clone(), totals.remove(e.as_str()).unwrap_or(0)))
            .collect();
        out.extend(
            totals
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(e, n)| (e.to_owned(), n)),
        );
        out
    }

    /// `ROUND_ROBIN` and `RANDOM` spread evenly: the same goodness-of-fit
    /// test and practical tolerance as the split, against equal shares.
    pub fn judge_spread(&self, declared: &DeclaredTraffic, config: &TrafficConfig) -> PodVerdict {
        let per_endpoint = self.per_endpoint(declared);
        let n: u64 = per_endpoint.iter().map(|(_, c)| c).sum();
        let unit = unit_name(declared.unit);
        let observed = shares(&per_endpoint, n, unit);
        let untested = |reason: String| PodVerdict {
            outcome: PolicyOutcome::Untested,
            observed: observed.clone(),
            reason,
            samples: n,
        };
        match declared.load_balancer {
            Balance::RoundRobin | Balance::Random => {}
            Balance::LeastRequest { .. } | Balance::LeastConn => {
                return untested(format!(
                    "{} is meant to be uneven when endpoints answer at different speeds: shown, not judged",
                    declared.load_balancer.describe()
                ));
            }
            Balance::Passthrough => {
                return untested(
                    "PASSTHROUGH sends each connection where the client addressed it: nothing to balance"
                        .to_owned(),
                );
            }
            Balance::Unknown | Balance::HashSourceIp | Balance::HashL7 { .. } => {
                return untested("no even spread is declared".to_owned());
            }
        }
        let k = per_endpoint.len();
        if k < 2 {
            return untested("the subset has one endpoint: nothing to balance".to_owned());
        }
        if n < config.min_samples {
            return untested(format!(
                "{n} {unit} so far; the test needs {}",
                config.min_samples
            ));
        }
        let counts: Vec<u64> = per_endpoint.iter().map(|(_, c)| *c).collect();
        let Some(gof) = chi_square_gof(&counts, &vec![1.0; k]) else {
            return untested("nothing to test".to_owned());
        };
        let even = 1.0 / k as f64;
        let (worst, deviation) = per_endpoint
            .iter()
            .map(|(e, c)| (e, (*c as f64 / n as f64 - even).abs()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((&per_endpoint[0].0, 0.0));
        let tolerance = config.tolerance
            + if self.estimated {
                ESTIMATED_SHARE_ERROR
            } else {
                0.0
            };
        if gof.p_value < config.alpha && deviation > tolerance {
            PodVerdict {
                outcome: PolicyOutcome::Violation,
                observed,
                reason: format!(
                    "uneven: {worst} is {} points from an even {} (p = {:.1e} < {}; tolerance {} points)",
                    points(deviation),
                    percent(even),
                    gof.p_value,
                    config.alpha,
                    points(tolerance)
                ),
                samples: n,
            }
        } else {
            PodVerdict {
                outcome: PolicyOutcome::Ok,
                observed,
                reason: format!(
                    "even within {} points (largest gap {} points, p = {:.2})",
                    points(tolerance),
                    points(deviation),
                    gof.p_value
                ),
                samples: n,
            }
        }
    }

    /// `consistentHash.useSourceIp`: every connection from one client pod
    /// hashes to the same endpoint while the endpoints stay the same (the
    /// judge starts over when they change).
    pub fn judge_hash(&self, declared: &DeclaredTraffic) -> PodVerdict {
        let per_endpoint = self.per_endpoint(declared);
        let n: u64 = per_endpoint.iter().map(|(_, c)| c).sum();
        let unit = unit_name(declared.unit);
        let observed = shares(&per_endpoint, n, unit);
        let reached: Vec<&str> = per_endpoint
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(e, _)| e.as_str())
            .collect();
        let verdict = |outcome, reason: String| PodVerdict {
            outcome,
            observed: observed.clone(),
            reason,
            samples: n,
        };
        if let Balance::HashL7 { key } = declared.load_balancer {
            return verdict(
                PolicyOutcome::Untested,
                format!(
                    "hashing on {key} needs the HTTP request, which is encrypted between the proxies: not visible to the kernel"
                ),
            );
        }
        if per_endpoint.len() < 2 {
            return verdict(
                PolicyOutcome::Untested,
                "the subset has one endpoint: any hash picks it".to_owned(),
            );
        }
        if reached.len() > 1 {
            return verdict(
                PolicyOutcome::Violation,
                format!(
                    "one client address reached {} endpoints ({}) while the endpoints did not change",
                    reached.len(),
                    reached.join(", ")
                ),
            );
        }
        if n < MIN_HASH_SAMPLES {
            return verdict(
                PolicyOutcome::Untested,
                format!("{n} {unit} so far; the check needs {MIN_HASH_SAMPLES}"),
            );
        }
        verdict(
            PolicyOutcome::Ok,
            format!("all {n} {unit} reached one endpoint"),
        )
    }
}

fn points(fraction: f64) -> String {
    format!("{:.1}", fraction * 100.0)
}

fn shares(per_endpoint: &[(String, u64)], n: u64, unit: &str) -> String {
    if n == 0 {
        return format!("no {unit} yet");
    }
    let parts: Vec<String> = per_endpoint
        .iter()
        .map(|(e, c)| format!("{e} {}", percent(*c as f64 / n as f64)))
        .collect();
    format!("{} of {n} {unit}", parts.join(", "))
}

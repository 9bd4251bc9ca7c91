//! A client pod's connection pool toward one cluster: how many connections
//! were open at once and for how long above `maxConnections`, how many
//! requests one connection carried, and how long idle connections lived.
//! Kept in time buckets so evidence leaves the window.

use std::collections::BTreeMap;

use super::{PodVerdict, TrafficConfig};
use crate::{
    model::traffic_policy::format_duration,
    observation::{ESTIMATED_SHARE_ERROR, conduct::DeclaredTraffic},
    report::{PolicyOutcome, format::plural},
};

const BUCKET_SECONDS: f64 = 10.0;

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    connections: u64,
    max_open: i64,
    longest_above: f64,
    max_requests: u64,
    over_request_limit: u64,
    longest_idle: f64,
}

#[derive(Debug, Default)]
pub struct PoolState {
    buckets: BTreeMap<i64, Bucket>,
    /// Connections open at the last settled event.
    open: i64,
    /// Since when more than `maxConnections` are open.
    above_since: Option<f64>,
}

fn bucket(at: f64) -> i64 {
    (at / BUCKET_SECONDS).floor() as i64
}

impl PoolState {
    fn at(&mut self, at: f64) -> &mut Bucket {
        self.buckets.entry(bucket(at)).or_default()
    }

    pub fn expire(&mut self, oldest: f64) {
        let first_kept = bucket(oldest);
        self.buckets.retain(|&b, _| b >= first_kept);
    }

    /// A new connection, counted once when first seen.
    pub fn connection(&mut self, at: f64) {
        self.at(at).connections += 1;
    }

    /// Extends a running span above the limit up to `at`.
    fn advance(&mut self, at: f64) {
        if let Some(since) = self.above_since {
            let span = (at - since).max(0.0);
            let bucket = self.at(at);
            bucket.longest_above = bucket.longest_above.max(span);
        }
    }

    fn recount(&mut self, at: f64, declared: &DeclaredTraffic) {
        let open = self.open;
        let bucket = self.at(at);
        bucket.max_open = bucket.max_open.max(open);
        match declared.max_connections {
            Some(limit) if open > i64::try_from(limit).unwrap_or(i64::MAX) => {
                self.above_since.get_or_insert(at);
            }
            _ => self.above_since = None,
        }
    }

    pub fn opened(&mut self, at: f64, declared: &DeclaredTraffic) {
        self.advance(at);
        self.open += 1;
        self.recount(at, declared);
    }

    pub fn closed(&mut self, at: f64, declared: &DeclaredTraffic) {
        self.advance(at);
        // A close whose opening was forgotten (the policy changed meanwhile) is not counted.
        self.open = (self.open - 1).max(0);
        self.recount(at, declared);
    }

    /// The connections open at `now`, by the time each opened: at least
    /// `opened.len()` are open now, and more than the limit have been open
    /// together since the (limit + 1)-th oldest opened.
    pub fn open_now(&mut self, now: f64, opened: &mut [f64], declared: &DeclaredTraffic) {
        let count = i64::try_from(opened.len()).unwrap_or(i64::MAX);
        let limit = declared
            .max_connections
            .and_then(|limit| usize::try_from(limit).ok());
        let bucket = self.at(now);
        bucket.max_open = bucket.max_open.max(count);
        if let Some(limit) = limit
            && opened.len() > limit
        {
            opened.select_nth_unstable_by(limit, f64::total_cmp);
            let span = (now - opened[limit]).max(0.0);
            bucket.longest_above = bucket.longest_above.max(span);
        }
    }

    /// Every event up to `horizon` has been replayed.
    pub fn settled_until(&mut self, horizon: f64) {
        self.advance(horizon);
    }

    /// A connection's running total of requests grew from `before` to `after`.
    pub fn requests_on_connection(
        &mut self,
        at: f64,
        before: u64,
        after: u64,
        estimated: bool,
        declared: &DeclaredTraffic,
    ) {
        let bucket = self.at(at);
        bucket.max_requests = bucket.max_requests.max(after);
        if let Some(limit) = declared.max_requests_per_connection {
            let limit = request_limit(limit, estimated);
            if after > limit && before <= limit {
                bucket.over_request_limit += 1;
            }
        }
    }

    /// A connection was idle at least `seconds` (as of `at`).
    pub fn idle_for(&mut self, seconds: f64, at: f64) {
        if seconds > 0.0 {
            let bucket = self.at(at);
            bucket.longest_idle = bucket.longest_idle.max(seconds);
        }
    }

    fn merged(&self) -> Bucket {
        self.buckets
            .values()
            .fold(Bucket::default(), |a, b| Bucket {
                connections: a.connections + b.connections,
                max_open: a.max_open.max(b.max_open),
                longest_above: a.longest_above.max(b.longest_above),
                max_requests: a.max_requests.max(b.max_requests),
                over_request_limit: a.over_request_limit + b.over_request_limit,
                longest_idle: a.longest_idle.max(b.longest_idle),
            })
    }

    /// `maxConnections`: more connections open at once than the limit, for
    /// longer than the grace (a connection replaced by another overlaps
    /// them for an instant).
    pub fn judge_max_connections(
        &self,
        declared: &DeclaredTraffic,
        config: &TrafficConfig,
    ) -> PodVerdict {
        let merged = self.merged();
        let limit = declared.max_connections.unwrap_or(u64::MAX);
        let observed = format!(
            "at most {} open at once{}",
            merged.max_open,
            if merged.longest_above > 0.0 {
                format!(
                    ", above {limit} for {:.1} s at the longest",
                    merged.longest_above
                )
            } else {
                String::new()
            }
        );
        let grace = config.grace.as_secs_f64();
        let (outcome, reason) = if merged.longest_above > grace {
            (
                PolicyOutcome::Violation,
                format!(
                    "more than {limit} connections stayed open for {:.1} s (grace {})",
                    merged.longest_above,
                    format_duration(config.grace)
                ),
            )
        } else if merged.connections == 0 && merged.max_open == 0 {
            (PolicyOutcome::Untested, "no connections yet".to_owned())
        } else {
            (
                PolicyOutcome::Ok,
                format!(
                    "never above {limit} for longer than {}",
                    format_duration(config.grace)
                ),
            )
        };
        PodVerdict {
            outcome,
            observed,
            reason,
            samples: merged
                .connections
                .max(u64::try_from(merged.max_open).unwrap_or(0)),
        }
    }

    /// `maxRequestsPerConnection`: a connection that carried more.
    pub fn judge_requests(&self, declared: &DeclaredTraffic) -> PodVerdict {
        let merged = self.merged();
        let limit = declared.max_requests_per_connection.unwrap_or(u64::MAX);
        let observed = format!(
            "the busiest of {} connection{} carried {} requests",
            merged.connections,
            plural(merged.connections),
            merged.max_requests
        );
        let (outcome, reason) = if merged.over_request_limit > 0 {
            (
                PolicyOutcome::Violation,
                format!(
                    "{} connection{} carried more than {limit} requests (the most: {})",
                    merged.over_request_limit,
                    plural(merged.over_request_limit),
                    merged.max_requests
                ),
            )
        } else if merged.max_requests == 0 {
            (PolicyOutcome::Untested, "no requests yet".to_owned())
        } else {
            (
                PolicyOutcome::Ok,
                format!("no connection carried more than {limit} requests"),
            )
        };
        PodVerdict {
            outcome,
            observed,
            reason,
            samples: merged.connections,
        }
    }

    /// `idleTimeout`: a connection idle for longer than the timeout plus the
    /// grace. Idle times are lower bounds: the time since the last update of
    /// the flow map that saw the connection grow.
    pub fn judge_idle(&self, declared: &DeclaredTraffic, config: &TrafficConfig) -> PodVerdict {
        let merged = self.merged();
        let Some(timeout) = declared.idle_timeout else {
            return PodVerdict {
                outcome: PolicyOutcome::Untested,
                observed: String::new(),
                reason: "no idle timeout declared".to_owned(),
                samples: 0,
            };
        };
        let observed = format!(
            "longest idle connection: at least {:.1} s, of {} connections",
            merged.longest_idle, merged.connections
        );
        let limit = (timeout + config.grace).as_secs_f64();
        let (outcome, reason) = if merged.longest_idle > limit {
            (
                PolicyOutcome::Violation,
                format!(
                    "a connection stayed open idle for {:.1} s, past the {} idle timeout (grace {})",
                    merged.longest_idle,
                    format_duration(timeout),
                    format_duration(config.grace)
                ),
            )
        } else if merged.connections == 0 {
            (PolicyOutcome::Untested, "no connections yet".to_owned())
        } else {
            (
                PolicyOutcome::Ok,
                format!(
                    "no connection stayed idle past {} (grace {})",
                    format_duration(timeout),
                    format_duration(config.grace)
                ),
            )
        };
        PodVerdict {
            outcome,
            observed,
            reason,
            samples: merged.connections,
        }
    }
}

/// The request limit as judged: estimated counts (encrypted HTTP/2) get the
/// estimator's error on top.
fn request_limit(limit: u64, estimated: bool) -> u64 {
    if estimated {
        (limit as f64 * (1.0 + ESTIMATED_SHARE_ERROR)).ceil() as u64
    } else {
        limit
    }
}

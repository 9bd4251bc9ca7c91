//! Outlier detection as the kernel sees it: a client proxy whose
//! connections to an endpoint fail `N` times in a row must eject that
//! endpoint — no new connection attempts to it — for at least the base
//! ejection time. Envoy counts a failed connection as a 503, so both
//! `consecutive5xxErrors` and `consecutiveGatewayErrors` see it; 5xx
//! answers carried inside mTLS are invisible here.
//!
//! The judgement errs towards silence: a connection that established
//! resets the count (Envoy resets only on a good response, which the kernel
//! cannot see), an attempt that timed out counts as a failure but never as
//! an attempt during an ejection (its start is unknown), an ejection that
//! `maxEjectionPercent` or `minHealthPercent` could have prevented is not
//! judged, and attempts within a tenth of a second of an ejection's edges
//! may have been under way, or dispatched before the ejection reached every
//! worker thread of the proxy.

use std::collections::BTreeMap;

use super::PodVerdict;
use crate::{
    model::traffic_policy::format_duration,
    observation::conduct::DeclaredTraffic,
    report::{PolicyOutcome, format::plural},
};

const BUCKET_SECONDS: f64 = 10.0;
/// Attempts this close to an ejection's start or end are not judged: a
/// refused attempt's failure comes one round trip after it began, and Envoy
/// ejects on its main thread, then tells its workers.
const EDGE_SECONDS: f64 = 0.1;
/// What outlier detection cannot see, said with every verdict.
const BLIND_SPOT: &str =
    "only failed connection attempts count: 5xx answers inside mTLS are not visible to the kernel";

#[derive(Debug, Default)]
struct Health {
    consecutive: u32,
    /// The ejection running: since when, until when at least.
    ejected: Option<(f64, f64)>,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    attempts: u64,
    failures: u64,
    ejections: u64,
    attempts_while_ejected: u64,
    /// The latest violation, in words.
    violation: Option<String>,
}

#[derive(Debug, Default)]
pub struct OutlierState {
    endpoints: BTreeMap<String, Health>,
    buckets: BTreeMap<i64, Bucket>,
}

fn bucket(at: f64) -> i64 {
    (at / BUCKET_SECONDS).floor() as i64
}

impl OutlierState {
    fn at(&mut self, at: f64) -> &mut Bucket {
        self.buckets.entry(bucket(at)).or_default()
    }

    pub fn expire(&mut self, oldest: f64) {
        let first_kept = bucket(oldest);
        self.buckets.retain(|&b, _| b >= first_kept);
        self.endpoints.retain(|_, h| {
            h.consecutive > 0 || h.ejected.is_some_and(|(_, until)| until >= oldest)
        });
    }

    /// Ejections over by `at` end; the endpoint's count starts again.
    fn release(&mut self, at: f64) {
        for health in self.endpoints.values_mut() {
            if health.ejected.is_some_and(|(_, until)| until <= at) {
                health.ejected = None;
                health.consecutive = 0;
            }
        }
    }

    /// Whether an attempt at `at` falls inside `endpoint`'s ejection, away
    /// from its edges; counts it as a violation if so.
    fn during_ejection(&mut self, at: f64, endpoint: &str, what: &str) -> bool {
        let Some((since, until)) = self.endpoints.get(endpoint).and_then(|h| h.ejected) else {
            return false;
        };
        if at <= since + EDGE_SECONDS || at >= until - EDGE_SECONDS {
            return at > since;
        }
        let bucket = self.at(at);
        bucket.attempts_while_ejected += 1;
        bucket.violation = Some(format!(
            "{endpoint}: {what} {:.1} s into its ejection",
            at - since
        ));
        true
    }

    /// A connection to `endpoint` established at `at`.
    pub fn connected(&mut self, at: f64, endpoint: &str, declared: &DeclaredTraffic) {
        if declared.outlier_detection.is_none() {
            return;
        }
        self.release(at);
        self.at(at).attempts += 1;
        if !self.during_ejection(at, endpoint, "a new connection") {
            self.endpoints
                .entry(endpoint.to_owned())
                .or_default()
                .consecutive = 0;
        }
    }

    /// A connection attempt to `endpoint` failed at `at`.
    pub fn failed(&mut self, at: f64, endpoint: &str, timed_out: bool, declared: &DeclaredTraffic) {
        let Some(ejection) = &declared.outlier_detection else {
            return;
        };
        self.release(at);
        let bucket = self.at(at);
        bucket.attempts += 1;
        bucket.failures += 1;
        let ejected = self
            .endpoints
            .get(endpoint)
            .is_some_and(|h| h.ejected.is_some());
        if ejected {
            if !timed_out {
                self.during_ejection(at, endpoint, "a refused attempt");
            }
            return;
        }
        let Some(limit) = ejection.consecutive_errors else {
            return;
        };
        let may_eject = self.may_eject(endpoint, declared);
        let health = self.endpoints.entry(endpoint.to_owned()).or_default();
        health.consecutive += 1;
        if health.consecutive >= limit {
            health.consecutive = 0;
            if may_eject {
                health.ejected = Some((at, at + ejection.base_ejection_time.as_secs_f64()));
                self.at(at).ejections += 1;
            }
        }
    }

    /// Envoy ejects while fewer than `maxEjectionPercent` of the hosts are
    /// out (always at least one); with `minHealthPercent` set, a pool below
    /// it is in panic and sends to ejected hosts anyway.
    fn may_eject(&self, endpoint: &str, declared: &DeclaredTraffic) -> bool {
        let Some(ejection) = &declared.outlier_detection else {
            return false;
        };
        let hosts = declared.endpoints.len().max(self.endpoints.len()).max(1) as u64;
        let out = self
            .endpoints
            .iter()
            .filter(|(name, h)| name.as_str() != endpoint && h.ejected.is_some())
            .count() as u64;
        let within_max =
            out == 0 || (out + 1) * 100 <= u64::from(ejection.max_ejection_percent) * hosts;
        let healthy_percent = (hosts - out - 1) * 100 / hosts;
        let panic = ejection.min_health_percent > 0
            && healthy_percent < u64::from(ejection.min_health_percent);
        within_max && !panic
    }

    pub fn judge(&self, declared: &DeclaredTraffic) -> PodVerdict {
        let merged = self
            .buckets
            .values()
            .fold(Bucket::default(), |a, b| Bucket {
                attempts: a.attempts + b.attempts,
                failures: a.failures + b.failures,
                ejections: a.ejections + b.ejections,
                attempts_while_ejected: a.attempts_while_ejected + b.attempts_while_ejected,
                violation: b.violation.clone().or(a.violation),
            });
        let observed = format!(
            "{} attempts, {} failed; {} ejection{} due",
            merged.attempts,
            merged.failures,
            merged.ejections,
            plural(merged.ejections)
        );
        let verdict = |outcome, reason: String| PodVerdict {
            outcome,
            observed: observed.clone(),
            reason: format!("{reason}; {BLIND_SPOT}"),
            samples: merged.attempts,
        };
        let Some(ejection) = &declared.outlier_detection else {
            return verdict(
                PolicyOutcome::Untested,
                "no outlier detection declared".to_owned(),
            );
        };
        let Some(limit) = ejection.consecutive_errors else {
            return verdict(
                PolicyOutcome::Untested,
                format!(
                    "no consecutive-error limit applies to connection failures ({})",
                    ejection.limit_from
                ),
            );
        };
        if merged.attempts_while_ejected > 0 {
            return verdict(
                PolicyOutcome::Violation,
                format!(
                    "{} attempt{} reached an endpoint that {limit} consecutive failures should have ejected for {} (latest: {})",
                    merged.attempts_while_ejected,
                    plural(merged.attempts_while_ejected),
                    format_duration(ejection.base_ejection_time),
                    merged.violation.as_deref().unwrap_or("?")
                ),
            );
        }
        if merged.ejections > 0 {
            return verdict(
                PolicyOutcome::Ok,
                format!(
                    "no attempt reached an endpoint during its ejection ({limit} consecutive failures, {})",
                    format_duration(ejection.base_ejection_time)
                ),
            );
        }
        verdict(
            PolicyOutcome::Untested,
            format!("no endpoint failed {limit} consecutive connection attempts in the window"),
        )
    }
}
